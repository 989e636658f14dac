"""What the chaos soak (``bench/chaos.py``) sees from outside the agent: an HTTP prober on
the service, the engine's event stream, and the invariants checked against the engine's
container list whenever the agent is settled.

Nothing here asks the agent what it did, except ``status --json`` for the quarantine list
and the phase (to know when a check is fair): the evidence is the engine's, the service's
and the registry's.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import docker
import httpx

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
INVARIANTS = (
    "not exactly one app container",      # at a settled moment, the engine's list
    "something left parked",              # a container of the app beside the one
    "service not answering its build",    # /healthz of the running build, from the prober
    ".env does not name what runs",       # IMAGE_DIGEST=@... in the compose .env
    "status disagrees with the engine",   # status --json current vs the running container
    "a known-bad build serving",          # exit-at-boot, 500 or crash-later, once settled
    "quarantined build running",          # and no operator named it
    "track followed back to an older build",  # CI moved main back; nobody pinned it
    "pin not running",                    # pinned a while ago, no fault since
    "quarantined build created again",    # engine create events after its quarantine
    "unsigned build pulled",              # engine pull events before any signature
    "volume data lost",                   # the marker written at the start
    "compose up -d changed something",    # the operator's hand, after the agent
    "halted",                             # status --json halted
    "agent exited by itself",             # not by the soak's kill -9
    "final build not deployed",           # after the events stop, a good build must run
)


class Prober(threading.Thread):
    """GET ``url`` every ``interval`` seconds (1 s timeout) until stopped or ``limit_s``
    passes; a failed sample counts its interval as unavailable."""

    def __init__(self, url: str, interval: float = 0.25, limit_s: float = 7200) -> None:
        super().__init__(daemon=True, name="chaos-prober")
        self.url, self.interval, self.limit_s = url, interval, limit_s
        self.samples = self.failures = 0
        self.longest = self._run = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + self.limit_s
        with httpx.Client(timeout=1, trust_env=False) as http:
            while not self._halt.is_set() and time.monotonic() < end:
                try:
                    ok = http.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples += 1
                self.failures += not ok
                self._run = 0.0 if ok else self._run + self.interval
                self.longest = max(self.longest, self._run)
                self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    @property
    def unavailable_s(self) -> float:
        return self.failures * self.interval

    @property
    def availability(self) -> float:
        return 1 - self.failures / self.samples if self.samples else 0.0


@dataclass
class EngineEvent:
    t: float  # wall time the engine reported
    kind: str  # "pull" or "create"
    digest: str


class EngineEvents(threading.Thread):
    """The engine's pull and create events naming ``repo``; reconnects after an engine
    restart (from the last event's time, so nothing before the outage is lost)."""

    def __init__(self, repo: str, limit_s: float = 7200) -> None:
        super().__init__(daemon=True, name="chaos-engine-events")
        self.repo, self.limit_s = repo, limit_s
        self.events: list[EngineEvent] = []
        self.reconnects = 0
        self._halt = threading.Event()
        self._stream: Any = None

    def run(self) -> None:
        since, end = time.time(), time.monotonic() + self.limit_s
        while not self._halt.is_set() and time.monotonic() < end:
            client: Any = None
            try:  # the client asks the engine its version: inside, the engine may be away
                client = docker.APIClient(timeout=None)
                self._stream = client.events(since=int(since), decode=True,
                                             filters={"type": ["image", "container"]})
                for ev in self._stream:
                    since = ev.get("time", since)
                    self._take(ev)
            except Exception:  # the engine went away: reconnect when it is back
                self.reconnects += 1
                self._halt.wait(1)
            finally:
                for part in (self._stream, client):
                    with contextlib.suppress(Exception):
                        part.close()

    def _take(self, ev: dict[str, Any]) -> None:
        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
        ref = attrs.get("image") if ev.get("Type") == "container" else ev.get("id", "")
        m = DIGEST.search(ref or "")
        if ev.get("Action") in ("pull", "create") and m and self.repo in (ref or ""):
            self.events.append(EngineEvent(float(ev.get("timeNano", 0)) / 1e9 or time.time(),
                                           str(ev.get("Action")), m.group(0)))

    def stop(self) -> None:
        self._halt.set()
        with contextlib.suppress(Exception):
            self._stream.close()
        self.join(timeout=5)


@dataclass
class Ledger:
    """Counts per invariant (every one must end at 0), and the checks that were made."""

    broken: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    checks: int = 0
    skipped: int = 0  # the agent moved while a check looked: not a fair moment

    def count(self, name: str, ok: bool, detail: str = "") -> None:
        assert name in INVARIANTS, name
        if not ok:
            self.broken[name] += 1
            self.examples.setdefault(name, detail[:300])

    def table(self) -> list[tuple[str, int]]:
        return [(name, self.broken[name]) for name in INVARIANTS]

    @property
    def clean(self) -> bool:
        return not any(self.broken.values())
