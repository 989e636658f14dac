"""The chaos soak's driver: ``Chaos(seed, seconds, workdir).run()`` (``bench/chaos.py`` has
the command line, the site and the builds; ``bench/chaos_observe.py`` the observers and the
invariants)."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos import COOLDOWN, MODES, SETTLE_S, WEIGHTS, Build, Builds, ChaosSite
from bench.chaos_observe import EngineEvents, Ledger, Prober
from bench.site import compose_flavour
from testbed import cosign, engines, services
from testbed.faultproxy import FaultProxy
from testbed.rawclient import RawRegistry
from testbed.services import REGISTRY_HOST

MAIN = {"ref": "refs/heads/main"}


@dataclass
class Report:
    seed: int
    seconds: float
    events: Counter[str]
    ledger: Ledger
    figures: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        f = self.figures
        lines = [f"chaos soak: seed {self.seed}, {self.seconds / 60:.1f} min, {f.get('lane')}",
                 f"events ({sum(self.events.values())}): " + ", ".join(
                     f"{k} {n}" for k, n in sorted(self.events.items(), key=lambda e: -e[1])),
                 f"availability: {f.get('availability', 0):.2%} of {f.get('probes')} probes; "
                 f"{f.get('unavailable_s', 0):.1f} s unavailable, longest outage "
                 f"{f.get('longest_outage_s', 0):.1f} s",
                 f"builds: {f.get('builds')}; quarantined by the agent: "
                 f"{f.get('quarantined')}; agent exit on SIGTERM at the end: {f.get('exit')}",
                 f"checks: {self.ledger.checks} at settled moments ({self.ledger.skipped} "
                 f"skipped: the agent was busy); engine events read: {f.get('engine_events')} "
                 f"({f.get('reconnects')} reconnects); registry requests through the proxy: "
                 f"{f.get('requests')} ({f.get('injected')} faulted)",
                 "invariants (each must be 0):"]
        lines += [f"  {n:>3}  {name}" for name, n in self.ledger.table()]
        lines += [f"  e.g. {k}: {v}" for k, v in self.ledger.examples.items()]
        return "\n".join(lines)


class Chaos:
    def __init__(self, seed: int, seconds: float, workdir: Path, *,
                 verbose: bool = False) -> None:
        self.seed, self.seconds, self.workdir, self.verbose = seed, seconds, workdir, verbose
        self.t0 = time.monotonic()
        self.rng = random.Random(seed)
        self.events: Counter[str] = Counter()
        self.ledger = Ledger()
        self.timers: list[tuple[float, str, Callable[[], None]]] = []
        self.last: dict[str, float] = {}
        self.pin: Build | None = None
        self.pins: set[str] = set()  # every digest an operator pinned, ever
        self.pin_at = self.calm_at = 0.0  # monotonic: last pin change, last fault's end
        self.back: list[tuple[Build, Build | None, float]] = []  # target, running, when
        self.killed = False

    # ---------------------------------------------------------------- the run
    def run(self) -> Report:
        cosign.fetch()
        self.client, self.raw = services.engine_client(), RawRegistry()
        self.proxy = FaultProxy().start()
        self.site = ChaosSite(self.client, self.raw, self.workdir, self.proxy)
        self.prober: Prober | None = None
        self.watch: EngineEvents | None = None
        try:
            self._setup()
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                kind = self._pick()
                self.events[kind] += 1
                if self.verbose:
                    print(f"{time.monotonic() - self.t0:7.1f}s {kind} "
                          f"(broken so far: {sum(self.ledger.broken.values())})", flush=True)
                self._do(kind)
                self._pause(self.rng.uniform(1.5, 6.0))
                self.check()
            return self._finish()
        finally:
            self._close()

    def _setup(self) -> None:
        keys = self.workdir / "keys"
        self.key, pub = cosign.generate_key_pair(keys, "ci")
        self.builds = Builds(self.client, self.raw, self.site.repo)
        first = self.push("good", signed=True)
        self.site.write_env(first.tag)
        self.site.compose_up()
        self.site.wait_serving(first.served, timeout=60)
        self.app().exec_run(["sh", "-c", "echo chaos > /data/marker"])
        self.site.write_agent_config(pub)
        self.site.spawn_agent()
        self.prober = Prober(f"http://127.0.0.1:{self.site.port}/healthz",
                             limit_s=self.seconds + 900)
        self.watch = EngineEvents(self.site.repo, limit_s=self.seconds + 900)
        self.prober.start()
        self.watch.start()

    def _close(self) -> None:
        """Everything the run made goes, whatever failed before (each step on its own)."""
        steps = [self.site.stop_agent, *(o.stop for o in (self.prober, self.watch) if o),
                 self.proxy.stop, self.site.close, self.raw.close, self.client.close]
        for step in steps:
            with contextlib.suppress(Exception):
                step()

    # ---------------------------------------------------------------- events
    def _pick(self) -> str:
        now = time.monotonic()
        kinds = [k for k in WEIGHTS if now - self.last.get(k, -1e9) >= COOLDOWN.get(k, 0)]
        kind = self.rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        self.last[kind] = now
        return kind

    def _do(self, kind: str) -> None:
        if kind in MODES:
            late = kind == "push late-signed"
            b = self.push(MODES[kind], signed=kind not in ("push unsigned", "push late-signed"))
            if late:
                self.later(self.rng.uniform(3, 12), "late signature", lambda: self.sign(b))
            return
        {"track moved back": self.track_back, "kill -9 agent": self.kill9,
         "dockerd restart": self.restart_engine, "registry down": self.registry_down,
         "registry slow": self.registry_slow, "pin or unpin": self.pin_or_unpin,
         "compose up -d": self.compose_up}[kind]()

    def push(self, mode: str, *, signed: bool) -> Build:
        """CI: a build, signed before its tags move (the reference workflow) or not yet."""
        b = self.builds.new(mode)
        if signed:
            self.sign(b)
        self.raw.tag(self.site.repo, b.tag, "main")
        return b

    def sign(self, b: Build) -> None:
        b.signed_at = time.time()
        # signed on the registry itself, for the name the host pulls by (the proxy's)
        argv = ["sign", "--key", str(self.key), "--tlog-upload=false", "--yes",
                "--allow-http-registry", "--allow-insecure-registry",
                f"--sign-container-identity={self.site.ref}"]
        for k, v in {**MAIN, "commit": b.revision}.items():
            argv += ["-a", f"{k}={v}"]
        cosign.run(self.workdir / "keys", *argv, f"{REGISTRY_HOST}/{self.site.repo}@{b.digest}")

    def later(self, after: float, what: str, fn: Callable[[], None]) -> None:
        self.timers.append((time.monotonic() + after, what, fn))

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._due()
            self._keep_agent()
            if time.monotonic() >= end:
                return
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))

    def _due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for item in sorted(self.timers, key=lambda t: t[0]):
            if everything or item[0] <= now:
                self.timers.remove(item)
                item[2]()

    def _keep_agent(self) -> None:
        """systemd's Restart=always: start the agent again; count an exit nobody caused."""
        d = self.site.daemon
        if d is not None and d.poll() is not None:
            self.ledger.count("agent exited by itself", self.killed,
                              f"exit {d.returncode}: {self.site.log_tail(3)}")
            self.killed = False
            time.sleep(1)  # RestartSec
            self.site.spawn_agent()

    def track_back(self) -> None:
        good = [b for b in self.builds.all[:-1] if not b.bad and b.signed_at]
        if good:
            target = self.rng.choice(good)
            self.back.append((target, self.builds.of(self.running_digest()), time.monotonic()))
            self.raw.tag(self.site.repo, target.tag, "main")

    def kill9(self) -> None:
        d = self.site.daemon
        if d is not None and d.poll() is None:
            d.kill()
            d.wait(timeout=30)
            self.killed = True
        self._keep_agent()

    def restart_engine(self) -> None:
        services.restart_engine()
        self.client.api.close()  # pooled connections to the engine that went away
        self.calm_at = time.monotonic() + 30

    def registry_down(self) -> None:
        self.proxy.set("down")
        self._fault_for(self.rng.uniform(5, 20))

    def registry_slow(self) -> None:
        self.proxy.set("slow", delay=self.rng.uniform(1, 4))
        self._fault_for(self.rng.uniform(5, 20))

    def _fault_for(self, seconds: float) -> None:
        self.calm_at = time.monotonic() + seconds + 30
        self.later(seconds, "registry back", self._registry_back)

    def _registry_back(self) -> None:
        self.proxy.clear()

    def pin_or_unpin(self) -> None:
        """An operator pins a good build (``pin`` reloads the daemon with SIGHUP) and
        unpins it again 10-40 s later."""
        if self.pin is not None:
            return self.unpin()
        st = self.site.status() or {}
        bad = {q["digest"] for q in st.get("quarantined") or []}
        good = [b for b in self.builds.all if not b.bad and b.signed_at and b.digest not in bad]
        if good:
            self.pin = self.rng.choice(good)
            self.pins.add(self.pin.digest)
            self._operator(self.site.cli("pin", self.pin.tag))
            self.later(self.rng.uniform(10, 40), "unpin", self.unpin)

    def unpin(self) -> None:
        if self.pin is not None:
            self.pin = None
            self._operator(self.site.cli("unpin"))

    def _operator(self, p: subprocess.CompletedProcess[str]) -> None:
        self.pin_at = time.monotonic()
        if p.returncode != 0:
            self.events[f"operator command failed ({p.returncode})"] += 1

    def compose_up(self) -> None:
        before = self.settled()
        if before is None:
            self.events["compose up -d (agent busy: not typed)"] += 1
            return
        ids = sorted(c.id for c in before["containers"])
        self.site.compose_up()
        time.sleep(1)
        after = self.settled()
        if after is None or after["status"].get("current") != before["status"].get("current"):
            return  # the agent moved meanwhile: not a fair look
        now = sorted(c.id for c in after["containers"] if c.status == "running")
        self.ledger.count("compose up -d changed something", now == ids, f"{ids} -> {now}")

    # ---------------------------------------------------------------- looking
    def app(self) -> Any:
        running = [c for c in self.site.app_containers() if c.status == "running"]
        return running[0]

    def digest_of(self, container: Any) -> str:
        with contextlib.suppress(Exception):
            image = self.client.images.get(container.attrs["Image"])
            for rd in image.attrs.get("RepoDigests") or []:
                if self.site.repo in rd:
                    return str(rd.split("@", 1)[1])
        return ""

    def running_digest(self) -> str:
        with contextlib.suppress(Exception):
            return self.digest_of(self.app())
        return ""

    def settled(self) -> dict[str, Any] | None:
        """The engine and the service at a moment the agent is idle before and after."""
        st1 = self.site.status()
        if not st1 or st1["phase"] != "IDLE" or st1.get("watch"):
            return None
        with contextlib.suppress(Exception):
            conts = self.site.app_containers()
            running = [c for c in conts if c.status == "running"]
            snap = {"containers": conts, "running": running, "env": self.site.env_digest(),
                    "digest": self.digest_of(running[0]) if len(running) == 1 else ""}
            st2 = self.site.status()
            if st2 and st2["phase"] == "IDLE" and not st2.get("watch") and \
                    (st2.get("current") or {}).get("digest") == \
                    (st1.get("current") or {}).get("digest"):
                return {**snap, "status": st2}
        return None

    def check(self) -> None:
        from bench.chaos_checks import check_settled
        snap = self.settled()
        if snap is None:
            self.ledger.skipped += 1
            return
        self.ledger.checks += 1
        check_settled(self, snap)

    # ---------------------------------------------------------------- the end
    def _finish(self) -> Report:
        from bench.chaos_checks import check_engine_events
        self.proxy.clear()
        self._due(everything=True)  # late signatures still owed
        self.unpin()
        final = self.push("good", signed=True)
        deadline = time.monotonic() + SETTLE_S
        snap = None
        while time.monotonic() < deadline:
            self._pause(1)
            snap = self.settled()
            if snap and snap["digest"] == final.digest:
                break
        ok = bool(snap and snap["digest"] == final.digest)
        self.ledger.count("final build not deployed", ok, f"running {self.running_digest()}")
        self.check()
        st = self.site.status() or {}
        d = self.site.daemon
        if d is not None:
            d.terminate()
            code = d.wait(timeout=120)
            self.site.daemon = None
        return self._report(st, code if d is not None else None, check_engine_events(self, st))

    def _report(self, st: dict[str, Any], code: int | None, n_events: int) -> Report:
        assert self.prober is not None and self.watch is not None
        self.prober.stop()
        self.watch.stop()
        modes = Counter(b.mode for b in self.builds.all)
        lane = engines.lane_line() if hasattr(engines, "lane_line") else engines.running_key()
        return Report(self.seed, self.seconds, self.events, self.ledger, {
            "lane": f"{lane}, compose {compose_flavour()}",
            "availability": self.prober.availability, "probes": self.prober.samples,
            "unavailable_s": self.prober.unavailable_s,
            "longest_outage_s": self.prober.longest,
            "builds": f"{len(self.builds.all)} pushed ({dict(modes)})",
            "quarantined": len(st.get("quarantined") or []), "exit": code,
            "engine_events": n_events, "reconnects": self.watch.reconnects,
            "requests": len(self.proxy.requests), "injected": self.proxy.injected})


def quarantine_time(entry: dict[str, Any]) -> float:
    at = entry.get("at")
    if isinstance(at, (int, float)):
        return float(at)
    with contextlib.suppress(Exception):
        return dt.datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()
    return 0.0
