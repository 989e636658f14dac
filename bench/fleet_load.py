"""Load model of a fleet's registry cost: many hosts' idle polls, each through its own session.

Each simulated host is the agent's own registry watcher, ``HttpRegistry`` with its own
``RegistrySession`` (own connection pool, own token cache, a PAT for the token server, as
an agent with ``TWILIGHT_REGISTRY_USERNAME`` has), doing the idle poll of the daemon:
``resolve_track("main", known)`` with ``main`` unchanged. No engine is involved.

For each level N (default 100, 1,000 and 5,000 hosts polling once a minute) the bench
first starts the hosts it has not started yet (a cold ``resolve_track``: challenge,
token, manifest, config, ``sha-`` tag; its figures are the "cold start" rows), then runs
a window of W seconds (default 60; ``--quick`` 20) at the fleet's real rate of N/60 polls
a second, spread evenly, each poll on its own host, through a bounded thread pool.

Token renewals as at a one-minute poll interval: the session renews its token 10 s before
the token server's expiry (``auth.py``), so a host polling every 60 s renews on
60 / (lifetime - 10) of its polls. Before each window every host's injected ``Clock`` is
shifted so that that share of the window's polls, spread evenly, find the cached token
just expired and fetch a new one (only the monotonic clock moves; JWT expiry is read from
the wall clock, as the agent does).

Measured per level: latency (to response headers) and error rate of registry and token
requests, separately; polls done and polls a minute achieved; requests per poll; the
lag of a poll's start behind its schedule (the pollers' own saturation) and the CPU of
this process, the registry and the token server (``/proc``, pids from the bed's
``state.json``).

    .venv/bin/python -m bench.fleet_load [--quick] [--levels 100,1000,5000] [--no-write]

Writes the "fleet load model" section of bench/results.md and bench/fleet_load.png
(matplotlib, the ``bench`` extra; without it the plot is skipped). Pushes a fresh
repository ``bench/fleet<random>/app`` into the bed's registry (needs the bed's engine to
build it, only for that).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog
from pydantic import SecretStr

from testbed import services
from testbed.tokenserver import TOKEN_LIFETIME_S
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.registry.credentials import Credentials
from twilight_agent.core.models import Release

INTERVAL_S = 60.0  # each host polls once a minute
RENEW_S = TOKEN_LIFETIME_S - 10.0  # auth.py renews a token 10 s before it expires
LEVELS = (100, 1000, 5000)
DRAIN_S = 60.0  # after a window: how long polls still running may take
KINDS = ("registry", "token")


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no samples."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


@dataclass
class Tally:
    """What one phase (a window, a cold start) measured; shared by the hosts' transports."""

    latency: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    polls: list[float] = field(default_factory=list)  # seconds per successful poll
    lag: list[float] = field(default_factory=list)  # poll start behind schedule, seconds
    failed: dict[str, int] = field(default_factory=dict)  # poll exceptions by class
    finished: list[float] = field(default_factory=list)  # monotonic end of each poll
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, kind: str, seconds: float, status: int | None) -> None:
        bad = status is None or status >= 500 or status == 429 or (
            kind == "token" and status != 200)
        with self.lock:
            self.latency[kind].append(seconds)
            self.errors[kind] += bad

    def poll(self, seconds: float, lag: float, error: str | None) -> None:
        with self.lock:
            self.lag.append(lag)
            self.finished.append(time.monotonic())
            if error is None:
                self.polls.append(seconds)
            else:
                self.failed[error] = self.failed.get(error, 0) + 1


class Meter:
    """The tally the transports write to; the driver swaps it between phases."""

    def __init__(self) -> None:
        self.tally = Tally()


class SkewClock:
    """The agent's ``Clock`` with a monotonic offset the bench sets between windows."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class TimedTransport(httpx.BaseTransport):
    """Times each request to its response headers, by kind (the token server or the
    registry), and notes when the host last got a token (on the host's clock, when the
    answer arrived: the token's expiry counts from no earlier than that)."""

    def __init__(self, inner: httpx.BaseTransport, meter: Meter, host: Host) -> None:
        self._inner, self._meter, self._host = inner, meter, host

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kind = "token" if request.url.port == services.TOKEN_PORT else "registry"
        t0 = time.perf_counter()
        try:
            response = self._inner.handle_request(request)
        except Exception:
            self._meter.tally.request(kind, time.perf_counter() - t0, None)
            raise
        self._meter.tally.request(kind, time.perf_counter() - t0, response.status_code)
        if kind == "token":
            self._host.token_at = self._host.clock.now()
        return response

    def close(self) -> None:
        self._inner.close()


class Host:
    """One agent's registry watcher. The transport is httpx's own with a shared TLS
    context (the agent builds one per process: 20 ms each would only slow the start of
    5,000 hosts), wrapped for timing, in place of the agent's deadline transport; the
    per-operation deadline is still checked between requests."""

    def __init__(self, repo: str, meter: Meter, tls: ssl.SSLContext,
                 credentials: Credentials) -> None:
        self.clock = SkewClock()
        self.token_at: float | None = None
        self.known: Release | None = None
        inner = httpx.HTTPTransport(verify=tls, trust_env=False)
        self.registry = HttpRegistry(services.REGISTRY_URL, repo, credentials=credentials,
                                     transport=TimedTransport(inner, meter, self),
                                     clock=self.clock)

    def poll(self, meter: Meter, due: float) -> None:
        start = time.monotonic()
        error = None
        try:
            self.known = self.registry.resolve_track("main", self.known)
        except Exception as exc:  # a failed poll is a figure, not the end of the bench
            error = type(exc).__name__
        meter.tally.poll(time.monotonic() - start, max(0.0, start - due), error)

    def expire_token_at(self, when: float | None) -> None:
        """Shift this host's clock so its cached token expires at monotonic ``when``
        (None: not before the window is long over)."""
        if self.token_at is None:
            return
        target = when if when is not None else time.monotonic() + 10 * INTERVAL_S
        self.clock.offset = self.token_at + RENEW_S - target


@dataclass
class Phase:
    """One measured phase: its tally and the CPU seconds it cost each process."""

    name: str
    hosts: int
    planned: int
    seconds: float
    tally: Tally
    cpu: dict[str, float]  # process -> % of one core over the phase
    overflows: int | None  # TCP listen queue overflows on the machine during the phase


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because a listen queue was full."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/netstat").read_text().splitlines()
                 if ln.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1], strict=True))["ListenOverflows"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds, from /proc (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuWatch:
    """CPU seconds of this process and of the bed's registry and token server."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {"pollers": os.getpid(), **pids}

    def sample(self) -> dict[str, float | None]:
        return {name: proc_cpu_s(pid) for name, pid in self.pids.items()}

    @staticmethod
    def percent(before: dict[str, float | None], after: dict[str, float | None],
                seconds: float) -> dict[str, float]:
        out = {}
        for name, b in before.items():
            a = after.get(name)
            if a is not None and b is not None:
                out[name] = 100 * (a - b) / seconds
        return out


def bed_pids(bed_dir: Path) -> dict[str, int]:
    """The registry's and token server's pids from the bed's state file (read only),
    kept only if the process is what the name says."""
    state = services.BedState.load(bed_dir)
    found = {}
    for name, marker in (("registry", "registry"), ("token server", "tokenserver")):
        pid = state.pids.get(marker, 0) if state else 0
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except OSError:
            cmd = b""
        if marker.encode() in cmd:
            found[name] = pid
    return found


class Fleet:
    """The hosts, the pool that runs their polls and the phases measured so far."""

    def __init__(self, repo: str, workers: int, cpu: CpuWatch) -> None:
        self.repo, self.cpu, self.meter = repo, cpu, Meter()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="host")
        self.tls = ssl.create_default_context()
        self.creds = Credentials(services.USERNAME, SecretStr(services.PASSWORD), "bench")
        self.hosts: list[Host] = []
        self.phases: list[Phase] = []

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for host in self.hosts:
            host.registry.close()

    def measured(self, name: str, hosts: int, planned: int,
                 run: Callable[[], None]) -> Phase:
        self.meter.tally = tally = Tally()
        before, dropped, t0 = self.cpu.sample(), listen_overflows(), time.monotonic()
        run()
        seconds = time.monotonic() - t0
        now_dropped = listen_overflows()
        phase = Phase(name, hosts, planned, seconds, tally,
                      CpuWatch.percent(before, self.cpu.sample(), seconds),
                      None if dropped is None or now_dropped is None else now_dropped - dropped)
        self.phases.append(phase)
        return phase

    def start_hosts(self, n: int) -> Phase | None:
        """Cold-start hosts until there are ``n`` (all at once, through the pool)."""
        new = [Host(self.repo, self.meter, self.tls, self.creds)
               for _ in range(n - len(self.hosts))]
        if not new:
            return None
        self.hosts += new

        def run() -> None:
            now = time.monotonic()
            jobs = [self.pool.submit(h.poll, self.meter, now) for h in new]
            wait(jobs, timeout=DRAIN_S + len(new) / 10)
        return self.measured("cold start", len(new), len(new), run)

    def window(self, fleet: int, window_s: float) -> Phase:
        """``fleet`` hosts' polls a minute for ``window_s``: one poll per host."""
        planned = max(1, round(fleet * window_s / INTERVAL_S))
        active, period = self.hosts[:planned], window_s / planned
        t0 = time.monotonic() + 1.0
        renew = INTERVAL_S / RENEW_S  # the share of one-minute polls that renew the token
        for k, host in enumerate(active):
            due = t0 + k * period
            host.expire_token_at(due - 0.001 if int((k + 1) * renew) > int(k * renew)
                                 else None)
        return self.measured(f"{fleet:,} hosts", fleet, planned,
                             lambda: self._paced(active, t0, period, window_s))

    def _paced(self, active: list[Host], t0: float, period: float, window_s: float) -> None:
        jobs = []
        for k, host in enumerate(active):
            due = t0 + k * period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() - t0 > window_s + DRAIN_S:
                break  # the pool cannot keep up at all: the rest are not sent
            jobs.append(self.pool.submit(host.poll, self.meter, due))
        wait(jobs, timeout=DRAIN_S)


def prepare_repo() -> str:
    """A fresh repository in the bed's registry with ``main`` pushed like CI does."""
    from testbed.images import build_and_push

    repo = f"bench/fleet{secrets.token_hex(3)}/app"
    client = services.engine_client()
    try:
        build_and_push(client, repo, version="v1")
    finally:
        client.close()
    return repo


def run(levels: list[int], window_s: float, workers: int, bed_dir: Path,
        say: Callable[[str], None] = print) -> list[Phase]:
    """Cold-start and measure each level in turn; every phase measured, in order."""
    repo = prepare_repo()
    fleet = Fleet(repo, workers, CpuWatch(bed_pids(bed_dir)))
    try:
        for n in levels:
            planned = max(1, round(n * window_s / INTERVAL_S))
            cold = fleet.start_hosts(planned)
            if cold is not None:
                say(f"cold start of {cold.hosts:,} hosts: {cold.seconds:.1f}s")
            phase = fleet.window(n, window_s)
            say(f"{n:,} hosts/min: {len(phase.tally.polls):,}/{phase.planned:,} polls "
                f"in {phase.seconds:.1f}s")
    finally:
        fleet.close()
    return fleet.phases


def main(argv: list[str] | None = None) -> int:
    from bench import fleet_report

    p = argparse.ArgumentParser(prog="python -m bench.fleet_load",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 s windows (about 1.5 min)")
    p.add_argument("--levels", default=",".join(map(str, LEVELS)),
                   help="hosts polling once a minute, ascending (default 100,1000,5000)")
    p.add_argument("--window", type=float, help="seconds per level (default 60; quick 20)")
    p.add_argument("--workers", type=int, default=64, help="poller threads (default 64)")
    p.add_argument("--bed-dir", type=Path, default=services.DEFAULT_WORKDIR,
                   help="the bed's directory, for the pids in state.json (read only)")
    p.add_argument("--no-write", action="store_true",
                   help="do not touch bench/results.md nor bench/fleet_load.png")
    args = p.parse_args(argv)
    levels = sorted(int(x) for x in args.levels.split(",") if x.strip())
    window_s = args.window or (20.0 if args.quick else 60.0)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not (services.engine_answers() and services.registry_answers()):
        print("the test bed is not running: .venv/bin/python -m testbed up", file=sys.stderr)
        return 2
    before = fleet_report.conditions()
    phases = run(levels, window_s, max(1, args.workers), args.bed_dir,
                 lambda s: print(s, file=sys.stderr, flush=True))
    return fleet_report.report(phases, before, window_s, args)


if __name__ == "__main__":
    raise SystemExit(main())
