"""Run the benchmarks: ``.venv/bin/python -m bench [--quick] [--only swap,heal,...]``.

Order, so that what is timing-sensitive runs alone:
1. healthy swaps, agent and shell flow alternating (detection at 5 s, overhead, gap);
2. start-up to READY;
3. side by side: the heal runs (agent and shell flow of each run at the same time), the
   idle window then the requests-per-poll flood, and the 30 s detection runs;
4. alone, and only when asked (``--only leaks``): RSS and fds over many deploys in one
   agent in this process (``bench/leaks.py``);
5. alone, and only when asked (``--only fleet``): the fleet load model, many hosts' idle
   polls at 100, 1,000 and 5,000 hosts a minute (``bench/fleet_load.py``, its own section).
Prints the table and writes bench/results.md (its own section; requests per idle poll
regenerated in theirs). Exit 0 when every measurement produced figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from bench import fleet_load, idle, leaks, scenarios
from bench import requests_per_poll as rpp
from bench.report import Runs, engine_table, table, write_section
from bench.scenarios import Bench, Figures, retry
from bench.site import CREATED, compose_flavour, sweep_images
from testbed import engines, services
from testbed.rawclient import RawRegistry

RESULTS = Path(__file__).resolve().parent / "results.md"
SECTION = "deploy, heal and idle: agent vs shell flow"
ENGINE_SECTION = "headline figures by engine"
LEAKS_SECTION = "RSS and file descriptors over deploys"
PARTS = ("swap", "ready", "heal", "idle", "rpp", "detect30", "leaks", "fleet")
# leaks: ~10 min of deploys; fleet: ~5 min of load on the registry; run them by name
DEFAULT_PARTS = PARTS[:-2]
_print_lock = threading.Lock()
T0 = time.monotonic()


def say(text: str) -> None:
    with _print_lock:
        print(f"[{time.monotonic() - T0:6.0f}s] {text}", file=sys.stderr, flush=True)


def conditions() -> dict[str, str]:
    def out(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=20
                                  ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), "?")
    return {"utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "cpu": f"{os.cpu_count()} x {cpu}", "kernel": platform.release(),
            "docker": out("docker", "version", "--format", "{{.Server.Version}}"),
            "engine": str(engines.running_key()),
            "api": str(engines.describe().get("api")),
            "compose": f"{compose_flavour()} {engines.compose_version(compose_flavour())}"}


class Runner:
    def __init__(self, bench: Bench, runs: int) -> None:
        self.bench, self.runs = bench, runs
        self.results: Runs = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def add(self, group: str, figs: Figures) -> None:
        with self._lock:
            self.results.setdefault(group, []).append(figs)

    def guarded(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # one broken measurement must not lose the others
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
            say(f"{what} FAILED: {exc}")

    def one(self, group: str, what: str, fn: Callable[[], Figures]) -> None:
        figs = retry(self.bench, what, fn)
        self.add(group, figs)
        say(f"{what}: {scenarios.summary(figs)}")

    # -- parts ----------------------------------------------------------------------------
    def swap(self) -> None:
        for i in range(1, self.runs + 1):
            self.one("swap_agent", f"swap agent {i}", lambda: scenarios.agent_swap(self.bench))
            self.one("swap_shell", f"swap shell {i}", lambda: scenarios.shell_swap(self.bench))

    def detect30(self, runs: int) -> None:
        for i in range(1, runs + 1):
            self.one("detect30", f"detect 30s {i}",
                     lambda: scenarios.agent_swap(self.bench, poll_interval=30.0))

    def heal(self, mode: str) -> None:
        b = self.bench
        for i in range(1, self.runs + 1):
            with ThreadPoolExecutor(2) as pool:
                jobs = [pool.submit(self.one, f"heal_{mode}_agent", f"heal {mode} agent {i}",
                                    lambda: scenarios.agent_heal(b, mode)),
                        pool.submit(self.one, f"heal_{mode}_shell", f"heal {mode} shell {i}",
                                    lambda: scenarios.shell_heal(b, mode))]
                for job in jobs:
                    job.result()

    def ready(self) -> None:
        for figs in idle.ready_times(self.bench, self.runs):
            self.add("ready", figs)

    def idle(self, window_s: float) -> None:
        say(f"idle: {window_s:.0f}s window at 30 s polls")
        for figs in idle.idle(self.bench, window_s,
                              lambda f: say(f"idle slice: {scenarios.summary(f)}")):
            self.add("idle", figs)

    def leaks(self, deploys: int) -> None:
        say(f"leaks: {deploys} deploys in one agent (v2/v1 by tag)")
        figs = leaks.leaks(self.bench, deploys, say=say)
        self.add("leaks", figs)
        say(f"leaks: {leaks.summary(figs)}")

    def rpp(self, counts: list[int], polls: int) -> None:
        for n, row in zip(counts, idle.requests_per_poll(self.bench, counts, polls), strict=True):
            self.add(f"rpp_{n}", row)
            self.add("rpp", row)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="2 runs each (1 at 30 s polls), 30 s idle window, 100/1,000 tags")
    p.add_argument("--runs", type=int, help="runs per measurement (default 5; quick 2)")
    p.add_argument("--only", default=",".join(DEFAULT_PARTS),
                   help=f"subset of {','.join(PARTS)} (default: all but leaks and fleet)")
    p.add_argument("--deploys", type=int,
                   help="deploys for the leaks part (default 1000; quick 200)")
    p.add_argument("--no-write", action="store_true", help="do not touch bench/results.md")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--engines", metavar="26,20.10",
                   help="run the parts on each of these engines in turn (the bed switches; "
                        "hold the engine to yourself) and write the by-engine table")
    p.add_argument("--merge", type=Path, metavar="JSON", action="append",
                   help="start from the figures of earlier --json runs (repeatable; later "
                        "ones and the parts run now replace earlier figures): to redo a "
                        "part an engine restart broke. --only '' just merges")
    args = p.parse_args(argv)
    parts = {x.strip() for x in args.only.split(",") if x.strip()}
    if parts - set(PARTS):
        p.error(f"unknown part(s): {', '.join(sorted(parts - set(PARTS)))}")
    runs = args.runs or (2 if args.quick else 5)
    detect30_runs = 1 if args.quick else runs
    idle_s = 30.0 if args.quick else 300.0
    counts, polls = ([100, 1000], 50) if args.quick else ([100, 10000], 200)
    deploys = args.deploys or (200 if args.quick else 1000)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not (services.engine_answers() and services.registry_answers()):
        print("the test bed is not running: .venv/bin/python -m testbed up", file=sys.stderr)
        return 2
    if args.engines:
        return by_engine(args.engines.split(","), parts, runs, detect30_runs, idle_s,
                         counts, polls, args, deploys)
    merged = [json.loads(path.read_text()) for path in args.merge or []]
    fleet_rc = fleet(parts, args)
    if fleet_rc is not None and not parts and not merged:
        return fleet_rc
    r, before = measure(parts, runs, detect30_runs, idle_s, counts, polls, deploys)
    after = conditions()
    if merged:
        redone = [f"{', '.join(m['parts'])} at {m['before']['utc'][11:]} (load "
                  f"{m['before']['load']})" for m in merged[1:]]
        if parts:
            redone.append(f"{', '.join(sorted(parts))} at {before['utc'][11:]} "
                          f"(load {before['load']})")
        results: Runs = {}
        for m in merged:
            results.update(m["results"])
        r.results = {**results, **r.results}
        before = {**merged[0]["before"], "redo": "; ".join(redone)}
        after = after if parts else max((m["after"] for m in merged), key=lambda a: a["utc"])
    out = table(r.results)
    print(out)
    for err in r.errors:
        print(f"FAILED: {err}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"results": r.results, "errors": r.errors,
                                         "parts": sorted(parts),
                                         "before": before, "after": after}, indent=1))
    if not args.no_write and parts - {"leaks"}:
        write(r, out, before, after, runs, detect30_runs, idle_s, args.quick)
    if not args.no_write and r.results.get("leaks"):
        write_leaks(r.results["leaks"][0], before, after)
    return 1 if r.errors or fleet_rc else 0


def fleet(parts: set[str], args: argparse.Namespace) -> int | None:
    """The fleet part, alone and first (it measures this process's CPU); taken out of
    ``parts``. Its exit status, or None when it was not asked for."""
    if "fleet" not in parts:
        return None
    parts.discard("fleet")
    return fleet_load.main([*(["--quick"] if args.quick else []),
                            *(["--no-write"] if args.no_write else [])])


def measure(parts: set[str], runs: int, detect30_runs: int, idle_s: float,
            counts: list[int], polls: int, deploys: int = 1000
            ) -> tuple[Runner, dict[str, str]]:
    """Run ``parts`` on the engine that answers; the runner and the conditions at start."""
    before = conditions()
    say(f"bench: {', '.join(x for x in PARTS if x in parts)}; {runs} runs; load {before['load']}; "
        f"engine {before['engine']} (API {before['api']}), compose {before['compose']}")
    workdir = Path(tempfile.mkdtemp(prefix="twbench-"))
    client, raw = services.engine_client(), RawRegistry()
    r = Runner(Bench(client, raw, workdir, log=say), runs)
    try:
        if "swap" in parts:
            r.guarded("swap", r.swap)
        if "ready" in parts:
            r.guarded("ready", r.ready)
        lanes: list[Callable[[], None]] = []
        if "heal" in parts:
            lanes.append(lambda: (r.guarded("heal exit", lambda: r.heal("exit")),
                                  r.guarded("heal 500", lambda: r.heal("500"))))
        if "idle" in parts or "rpp" in parts:
            lanes.append(lambda: (
                "idle" in parts and r.guarded("idle", lambda: r.idle(idle_s)),
                "rpp" in parts and r.guarded("rpp", lambda: r.rpp(counts, polls))))
        if "detect30" in parts:
            lanes.append(lambda: r.guarded("detect30", lambda: r.detect30(detect30_runs)))
        with ThreadPoolExecutor(max(1, len(lanes))) as pool:
            for job in [pool.submit(lane) for lane in lanes]:
                job.result()
        if "leaks" in parts:  # alone: it measures this process
            r.guarded("leaks", lambda: r.leaks(deploys))
    finally:
        sweep_images(client, CREATED)
        raw.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return r, before


def by_engine(keys: list[str], parts: set[str], runs: int, detect30_runs: int, idle_s: float,
              counts: list[int], polls: int, args: argparse.Namespace,
              deploys: int = 1000) -> int:
    """The same parts on each engine in turn (the bed switches engines between them); one
    table with an engine column, in its own section of results.md."""
    results: dict[str, Runs] = {}
    notes, errors = [], []
    start = engines.running_key()
    try:
        for key in keys:
            services.up(services.DEFAULT_WORKDIR, key)
            r, before = measure(parts, runs, detect30_runs, idle_s, counts, polls, deploys)
            results[key] = r.results
            errors += [f"engine {key}: {e}" for e in r.errors]
            notes.append(f"engine {key}: dockerd {before['docker']} (API {before['api']}), "
                         f"compose {before['compose']}, {before['utc']}, load {before['load']}")
    finally:
        if start and engines.running_key() != start:
            services.up(services.DEFAULT_WORKDIR, start)
    out = engine_table(results)
    print(out)
    for err in errors:
        print(f"FAILED: {err}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"by_engine": results, "errors": errors,
                                         "notes": notes}, indent=1))
    if not args.no_write:
        cmd = " ".join(["python -m bench", *(["--quick"] if args.quick else []),
                        f"--engines {','.join(keys)}", f"--only {','.join(sorted(parts))}"])
        note = (f"`{cmd}`: {runs} runs per measurement on each engine, one engine at a time "
                "on the same machine, registry and images; "
                + ("a `--quick` run (fewer runs than the full run of the next section, which "
                   "ran on 20.10 only). " if args.quick
                   else "") + "Compose: v2 on 26, v1 on 20.10 (what each engine's users "
                "run; the shell flow uses it too).\n\n" + "\n".join(f"- {n}" for n in notes))
        write_section(RESULTS, ENGINE_SECTION, note + "\n\n" + out)
    return 1 if errors else 0


def write(r: Runner, out: str, before: dict[str, str], after: dict[str, str], runs: int,
          detect30_runs: int, idle_s: float, quick: bool) -> None:
    note = (f"`.venv/bin/python -m bench{' --quick' if quick else ''}`, {before['utc']} to "
            f"{after['utc'][11:]}; load average (1/5/15 min) {before['load']} at the start, "
            f"{after['load']} at the end; {before['cpu']}, kernel {before['kernel']}, engine "
            f"{before.get('engine', '20.10')}: dockerd {before['docker']} (API "
            f"{before.get('api', '1.41')}), compose {before['compose']}; the bed's registry on "
            "loopback. Machine shared with other work while it ran."
            + (f" Redone after a failure (an engine restart under the run), and not "
               f"necessarily alone: {before['redo']}." if before.get("redo") else "") + "\n\n"
            f"{runs} runs per measurement ({detect30_runs} at 30 s polls; idle: one daemon, "
            f"{idle_s:.0f} s cut in 5 slices). Healthy swaps (detection at 5 s, overhead, "
            "gap) and READY ran alone; the heal runs (agent and shell flow of a run side by "
            "side), the idle window, the requests-per-poll flood and the 30 s detection runs "
            "ran at the same time. Agent: the daemon with its defaults (health interval 2 s, "
            "soak 10 s) and `TWILIGHT_HEALTH_TIMEOUT=60s`; shell flow: "
            "`bench/shell_deploy.sh` (30 x 2 s). Same images and compose project layout "
            "(`deploy/compose.yml`) for both.")
    write_section(RESULTS, SECTION, note + "\n\n" + out)
    if r.results.get("rpp"):
        rows = [{k: (int(v) if k != "per_poll" and k != "ms_per_poll" else v)
                 for k, v in row.items()} for row in r.results["rpp"]]
        rpp.write_results(
            f"`bench/requests_per_poll.py` (run by `python -m bench`), {before['utc']}, bed "
            "registry on loopback. An idle poll is `resolve_track(\"main\", known)` with main "
            "unchanged and the token cached. Tag counts include the flood plus the builds' own "
            "tags; the first resolve includes the token round trip.\n\n" + rpp.table(rows))


def write_leaks(figs: dict[str, float], before: dict[str, str], after: dict[str, str]) -> None:
    note = (f"`.venv/bin/python -m bench --only leaks --deploys {int(figs['deploys'])}`, "
            f"{before['utc']} to {after['utc'][11:]}; load {before['load']} at the start, "
            f"{after['load']} at the end; {before['cpu']}, kernel {before['kernel']}, engine "
            f"{before.get('engine', '?')}: dockerd {before['docker']} (API {before['api']}); "
            "the bed's registry on loopback. One agent (`app.build_agent` with "
            "`app.build_sinks`, as the daemon builds it) in the bench process deploys a "
            "compose site by tag, v2 and v1 in turn (`deploy(sha-...)`), "
            "`TWILIGHT_WATCH=0`, `TWILIGHT_HEALTH_SOAK=0`, health interval 0.2 s; "
            "`VmRSS` and `/proc/self/fd` of the process after every deploy. RSS is the "
            "whole bench process (the agent plus the bench's own engine and registry "
            "clients), so its level is above the daemon's; the growth is the agent's.")
    write_section(RESULTS, LEAKS_SECTION, note + "\n\n" + leaks.table(figs))
