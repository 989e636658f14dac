"""What the benchmark watches from outside: an HTTP prober and the engine's event stream.

Both stamp with the wall clock (``time.time()``), the clock the engine's events and the
agent's JSON log lines use, so every source lands on one time line.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker

PERIOD_S = 0.05
TIMEOUT_S = 1.0
WORKERS = 32


@dataclass(frozen=True)
class Sample:
    t: float  # when the request was sent (wall clock)
    done: float  # when its answer (or its failure) came
    status: int  # HTTP status; 0 when no answer (refused, reset, timeout)
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Prober:
    """GET ``/healthz`` every 50 ms on a fixed schedule, one fresh connection per request.

    Requests run concurrently, so one that hangs (the engine's port proxy accepting while
    the app is not up yet) does not hold back the next: the schedule stays 50 ms.
    """

    def __init__(self, port: int, path: str = "/healthz", period: float = PERIOD_S,
                 host: str = "127.0.0.1") -> None:
        self.port, self.path, self.period, self.host = port, path, period, host
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="probe")
        self._thread = threading.Thread(target=self._loop, daemon=True, name="prober")

    @property
    def samples(self) -> list[Sample]:
        """Every answer so far, in the order the answers came."""
        with self._lock:
            return sorted(self._samples, key=lambda s: s.done)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._pool.submit(self._one)
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _one(self) -> None:
        t = time.time()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        try:
            conn.request("GET", self.path)
            r = conn.getresponse()
            status, body = r.status, r.read(200).decode(errors="replace").strip()
        except (OSError, http.client.HTTPException):
            status, body = 0, ""
        finally:
            conn.close()
        with self._lock:
            self._samples.append(Sample(t, time.time(), status, body))


def longest_outage(samples: list[Sample], since: float = 0.0) -> tuple[int, float]:
    """The longest time without a 2xx answer after ``since``: (requests sent in it that
    failed, ms from the 2xx answer before it to the first 2xx answer after it)."""
    oks = [s for s in samples if s.ok]
    best: tuple[float, int] = (0.0, 0)
    for a, b in itertools.pairwise(oks):
        if b.done < since:
            continue
        failed = sum(1 for s in samples if not s.ok and a.done <= s.t < b.done)
        best = max(best, (1000 * (b.done - a.done), failed))
    return best[1], best[0]


def first(samples: list[Sample], after: float, *, ok: bool | None = None,
          status: int | None = None, body: str | None = None) -> Sample | None:
    """The first answer that came at or after ``after`` matching every criterion given."""
    for s in samples:
        if s.done < after:
            continue
        if ok is not None and s.ok != ok:
            continue
        if status is not None and s.status != status:
            continue
        if body is not None and s.body != body:
            continue
        return s
    return None


@dataclass
class EngineEvents:
    """Container events of one compose project, streamed while the context is open."""

    client: docker.DockerClient
    project: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def __enter__(self) -> EngineEvents:
        label = f"com.docker.compose.project={self.project}"
        self._stream = self.client.api.events(
            decode=True, filters={"type": "container", "label": label})
        self._thread = threading.Thread(target=self._read, daemon=True, name="events")
        self._thread.start()
        return self

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # closing the stream ends the iteration
            for ev in self._stream:
                self.events.append(ev)

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last events of the run are still on their way
        self._stream.close()
        self._thread.join(timeout=5)

    def first(self, action: str, images: set[str], after: float = 0.0) -> float | None:
        """Wall time of the first ``action`` (start, die) of a container of ``images``."""
        for ev in self.events:
            t = ev.get("timeNano", 0) / 1e9
            if ev.get("Action") == action and ev.get("from") in images and t >= after:
                return float(t)
        return None
