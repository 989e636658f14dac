"""How fast a ring of four hosts converges on a new build, and what its idle polls cost.

A ring on the fleet (``testbed.fleet``): a canary on n1 tracking ``main`` and promoting to
``stable`` after ``PROMOTE_AFTER``, three followers on n2..n4 tracking ``stable``; each a
``twilight-agent run`` daemon in its own node's network namespace, under that node's own
dockerd, with its own state. The site, ring and daemon helpers are the fleet tests' own
(``tests.fleet.fleetbed``, ``tests.integration.test_promotion``), imported, not copied.

Each run builds a good build and pushes only its ``sha-`` tag, then moves ``main`` with one
manifest PUT at a known instant (t0). From t0, every 0.2 s: which version each host's app
answers on ``/healthz`` (over the fleet bridge) and where ``stable`` points (a GET at the
registry). From the daemons' JSON logs: when each host entered ``PULL`` (detection), how
long the pull took, and when its ``deploy_finished`` line was written (after the soak).

The grid varies ``POLL_INTERVAL``, ``PROMOTE_AFTER`` or ``HEALTH_SOAK``, one at a time,
around a base. After the base cell an idle window counts each host's registry requests by
its source address (``127.0.1.<n>``) in the registry's access log (token fetches go to the
token server, ``:5001``, not in that log).

    .venv/bin/python bench/fleet_converge.py [--quick] [--no-write]

Needs the bed up on engine 26; brings up a 4-node fleet of its own (none may be running)
and takes it down at the end, checking that nothing of it is left.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import DASH, write_section
from bench.run import conditions
from testbed import fleet, services
from testbed.accesslog import AccessLog
from testbed.images import build_and_push
from testbed.rawclient import RawRegistry
from tests.fleet.fleetbed import NodeSite, node_site
from tests.integration.test_promotion import FAST, canary_config

RESULTS = Path(__file__).resolve().parent / "results.md"
SECTION = "fleet convergence"
NODES = 4
SAMPLE_S = 0.2


@dataclass(frozen=True)
class Cell:
    poll: float
    after: float
    soak: float

    @property
    def label(self) -> str:
        return f"poll {self.poll:g} s, PROMOTE_AFTER {self.after:g} s, soak {self.soak:g} s"


def grid(quick: bool) -> list[Cell]:  # the base first, then one parameter changed at a time
    if quick:
        return [Cell(2, 2, 0.5), Cell(5, 2, 0.5), Cell(2, 5, 0.5), Cell(2, 2, 3)]
    return [Cell(5, 5, 0.5), Cell(15, 5, 0.5), Cell(5, 30, 0.5), Cell(5, 5, 3)]


class Run(NamedTuple):
    cell: Cell
    figures: dict[str, float]


def ring(bed: Any, nodes: list[fleet.Node], uid: str, repo: str, tmp: Path) -> list[NodeSite]:
    """Every node runs v1 (tagged ``main`` and ``stable``) under the operator's container."""
    sites = [node_site(bed, n, f"{uid}-{n.name}", repo, tmp / n.name) for n in nodes]
    v1 = build_and_push(bed.docker, repo, version="v1", volume="/cache",
                        extra_tags=("stable",))
    for s in sites:
        s.run_app(v1)
    return sites


def start(sites: list[NodeSite], cell: Cell, tag: str) -> list[subprocess.Popen[str]]:
    """One daemon per host, its output to a log file of its own; the followers started at
    random offsets within a poll, so that their poll phases are not the canary's."""
    over = {"POLL_INTERVAL": f"{cell.poll:g}s", "HEALTH_SOAK": f"{cell.soak:g}"}
    procs, t = [], time.monotonic()
    at = [0.0, *sorted(random.uniform(0, cell.poll) for _ in sites[1:])]
    for i, s in enumerate(sites):
        time.sleep(max(0.0, t + at[i] - time.monotonic()))
        run = {**FAST, "TRACK": "stable", "RUNTIME_DIRECTORY": str(s.tmp / "run")}
        if i == 0:
            run = canary_config(s, f"{cell.after:g}s")
        cfg = s.write_config(**{**run, **over})
        with open(s.tmp / f"agent-{tag}.log", "w") as log:
            p = subprocess.Popen(s.argv(cfg, "run"), stdout=log, stderr=subprocess.STDOUT,
                                 text=True, cwd=s.tmp)
        s.procs.append(p)
        procs.append(p)
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)  # past it, the sites' teardown kills what is left


def move_main(bed: Any, repo: str, version: str) -> tuple[str, float]:
    """Build and push only the ``sha-`` tag, then move ``main`` to it: (digest, t0)."""
    img = build_and_push(bed.docker, repo, version=version, volume="/cache", branch="build")
    t0 = time.time()
    bed.raw.tag(repo, img.sha_tag, "main")
    return img.digest, t0


def watch(sites: list[NodeSite], raw: RawRegistry, version: str, digest: str, t0: float,
          timeout: float) -> dict[str, float]:
    """Seconds from t0 to each host's first ``ok <version>`` and to ``stable`` moving."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    want = [s.name for s in sites] + ["stable"]
    while time.monotonic() < deadline and len(seen) < len(want):
        for s in sites:
            if s.name not in seen and s.serving() == f"ok {version}":
                seen[s.name] = time.time() - t0
        if "stable" not in seen and raw.get_manifest(sites[0].repo, "stable")[2] == digest:
            seen["stable"] = time.time() - t0
        time.sleep(SAMPLE_S)
    missing = [w for w in want if w not in seen]
    if missing:
        raise TimeoutError(f"{version}: not there after {timeout:.0f} s: {missing}")
    return seen


def events(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(errors="replace")  # whole lines only: the daemon writes on
    lines = text[:text.rfind("\n") + 1].splitlines()
    return [json.loads(ln) for ln in lines if ln.startswith("{")]  # the JSON log lines


def stamp(ev: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(ev["timestamp"]).replace("Z", "+00:00")).timestamp()


def from_log(path: Path, digest: str, t0: float) -> dict[str, float]:
    """Detection (entered PULL), the pull's duration and deploy_finished, from t0."""
    got: dict[str, float] = {}
    for ev in events(path):
        if ev.get("digest") != digest and ev.get("to_digest") != digest:
            continue
        if ev.get("event") == "phase" and ev.get("phase") == "PULL":
            got.setdefault("detect", stamp(ev) - t0)
        elif ev.get("event") == "phase" and ev.get("previous_phase") == "PULL":
            got.setdefault("pull", float(ev.get("duration_s", 0)))
        elif ev.get("event") == "deploy_finished" and ev.get("outcome") == "deployed":
            got.setdefault("done", stamp(ev) - t0)
    return got


def finished(sites: list[NodeSite], tag: str, digest: str, t0: float,
             timeout: float) -> list[dict[str, float]]:
    """Each host's log figures, once every host has written its ``deploy_finished``."""
    deadline = time.monotonic() + timeout
    while True:
        logs = [from_log(s.tmp / f"agent-{tag}.log", digest, t0) for s in sites]
        if all("done" in lg for lg in logs) or time.monotonic() > deadline:
            return logs
        time.sleep(0.5)


def one_run(bed: Any, sites: list[NodeSite], cell: Cell, version: str, tag: str) -> Run:
    digest, t0 = move_main(bed, sites[0].repo, version)
    bound = 2 * (2 * cell.poll + 2 * cell.soak + cell.after) + 60
    seen = watch(sites, bed.raw, version, digest, t0, bound)
    logs = finished(sites, tag, digest, t0, timeout=cell.soak + 30)
    followers = [seen[s.name] for s in sites[1:]]
    figs = {"canary_serving": seen[sites[0].name], "stable_moved": seen["stable"],
            "last_serving": max(followers),
            "canary_detect": logs[0].get("detect", float("nan")),
            "pull": statistics.median([lg["pull"] for lg in logs if "pull" in lg] or [0.0]),
            "canary_done": logs[0].get("done", float("nan")),
            "last_done": max(lg.get("done", float("nan")) for lg in logs[1:])}
    figs["hop"] = figs["canary_done"] - figs["canary_detect"]
    figs["promote_wait"] = figs["stable_moved"] - figs["canary_done"] - cell.after
    figs["follower_detect_after_stable"] = max(
        lg.get("detect", float("nan")) for lg in logs[1:]) - seen["stable"]
    return Run(cell, figs)


def idle(sites: list[NodeSite], seconds: float) -> dict[str, Counter[str]]:
    """Each host's registry requests in an idle window, by its source address."""
    mark = AccessLog()
    time.sleep(seconds)
    names = {s.node.source: s.node.name for s in sites if s.node}
    by_host: dict[str, Counter[str]] = {n: Counter() for n in names.values()}
    for addr, method, uri, status in mark.served_from(sites[0].repo):
        if addr in names:
            path = uri.split("?")[0].split("/")
            kind = "/".join(path[-2:]) if path[-2] == "manifests" else path[-2]
            by_host[names[addr]][f"{method} {kind} {status}"] += 1
    return by_host


def alive(sites: list[NodeSite], procs: list[subprocess.Popen[str]], tag: str) -> None:
    for s, p in zip(sites, procs, strict=True):
        if p.poll() is not None:
            tail = (s.tmp / f"agent-{tag}.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"{s.name}'s daemon exited {p.returncode}: {tail}")


def measure(bed: Any, sites: list[NodeSite], cells: list[Cell], runs: int,
            idle_s: float) -> tuple[list[Run], dict[str, Counter[str]]]:
    out: list[Run] = []
    counts: dict[str, Counter[str]] = {}
    for ci, cell in enumerate(cells):
        tag = f"c{ci}"
        procs = start(sites, cell, tag)
        try:
            time.sleep(min(cell.poll, 5) + 1)  # every daemon past its first poll
            alive(sites, procs, tag)
            for _ in range(runs):
                out.append(one_run(bed, sites, cell, f"v{len(out) + 2}", tag))
                print(f"{cell.label}: {out[-1].figures}", flush=True)
            if ci == 0:
                counts = idle(sites, idle_s)
        finally:
            stop(procs)
    return out, counts


def model(cell: Cell, hop: float) -> tuple[float, float]:
    """poll/2 + hop + PROMOTE_AFTER + poll/2 + hop: (average, worst: whole polls)."""
    return (cell.poll + cell.after + 2 * hop, 2 * cell.poll + cell.after + 2 * hop)


def locked(cell: Cell, hop: float) -> tuple[int, float, float, float]:
    """The canary promotes at its k-th poll after the one that found the build, k = ceil((hop +
    PROMOTE_AFTER) / interval): push -> last done is (1/2 + k + 3/4) intervals + hop on
    average, k to k + 2 at the extremes: (k, avg, min, max); interval: poll x 1.05 (jitter)."""
    mean = cell.poll * 1.05
    k = math.ceil((hop + cell.after) / mean)
    last = (NODES - 1) / NODES  # the longest of NODES - 1 waits uniform in [0, 1) interval
    return k, (k + 0.5 + last) * mean + hop, k * cell.poll + hop, (k + 2) * cell.poll * 1.1 + hop


def med_max(xs: list[float]) -> str:
    xs = [x for x in xs if x == x]  # no NaN
    return f"{statistics.median(xs):.1f} / {max(xs):.1f}" if xs else "—"


def table(results: list[Run], cells: list[Cell]) -> str:
    lines = ["| poll s | PROMOTE_AFTER s | soak s | runs | canary serving | stable moved | "
             "last follower serving | last follower done | deploy (detect -> done) | "
             "model poll/2 + hop + after + poll/2 + hop: avg / worst | "
             f"model, poll-locked promotion: k, avg (min{DASH}max) |",
             "|---:|---:|---:|---:|---|---|---|---|---:|---|---|"]
    for cell in cells:
        rs = [r.figures for r in results if r.cell == cell]
        if not rs:
            continue
        hop = statistics.median([r["hop"] for r in rs])
        cols = [med_max([r[k] for r in rs]) for k in
                ("canary_serving", "stable_moved", "last_serving", "last_done")]
        k, avg, lo, hi = locked(cell, hop)
        models = ["{:.1f} / {:.1f}".format(*model(cell, hop)),
                  f"{k}, {avg:.1f} ({lo:.1f}{DASH}{hi:.1f})"]
        lines.append(f"| {cell.poll:g} | {cell.after:g} | {cell.soak:g} | {len(rs)} | "
                     + " | ".join([*cols, f"{hop:.1f}", *models]) + " |")
    return "\n".join(lines)


def idle_text(counts: dict[str, Counter[str]], cell: Cell, seconds: float) -> str:
    polls = seconds / (cell.poll * 1.05)  # the mean interval: 0-10 % jitter added to each
    lines = ["| host | role | requests | per poll | what |", "|---|---|---:|---:|---|"]
    for i, (host, c) in enumerate(sorted(counts.items())):
        total = sum(c.values())
        what = ", ".join(f"{k} x{v}" for k, v in sorted(c.items())) or "none"
        lines.append(f"| {host} | {'canary' if i == 0 else 'follower'} | {total} | "
                     f"{total / polls:.2f} | {what} |")
    return "\n".join(lines)


def breakdown(results: list[Run]) -> str:
    """What the time went to, over every run: medians of the model's terms."""
    def med(key: str) -> float:
        xs = [r.figures[key] for r in results if r.figures[key] == r.figures[key]]
        return statistics.median(xs) if xs else float("nan")
    return (f"Over all runs (medians): push -> canary entered `PULL` {med('canary_detect'):.1f} s, "
            f"pull {med('pull'):.2f} s, push -> canary's deploy done {med('canary_done'):.1f} s, "
            f"`stable` moved -> last follower entered `PULL` "
            f"{med('follower_detect_after_stable'):.1f} s; the canary's deploy done -> "
            f"`stable` moved, beyond PROMOTE_AFTER, {med('promote_wait'):.1f} s.")


def report(results: list[Run], cells: list[Cell], counts: dict[str, Counter[str]],
           before: dict[str, str], idle_s: float, quick: bool) -> str:
    base = cells[0]
    return f"""`python bench/fleet_converge.py{' --quick' if quick else ''}`, {before['utc']}; \
load average {before['load']} at the start; {before['cpu']}, kernel {before['kernel']}; the \
bed's engine {before['docker']} building and pushing, each of the {NODES} fleet nodes its own \
dockerd 26 in its own network namespace; the bed's registry (token auth) on loopback, reached \
from each node through `testbed.fleet_forward`. The ring: a canary on n1 (`TRACK=main`, \
`PROMOTE_TO=stable`), followers on n2..n4 (`TRACK=stable`), each a `twilight-agent run` \
daemon in its node's netns, the followers started at random offsets within a poll of the \
canary (their poll phases are their own); health interval 0.3 s. Each run \
pushes only a new good build's `sha-` tag, then moves `main` with one manifest PUT (t0). \
Serving: the host's app first answers `ok <version>` on `/healthz` (sampled every \
{SAMPLE_S:g} s over the fleet bridge); done: its `deploy_finished` log line (after the \
soak). Cells: median / max seconds from t0. Hop: the canary's `PULL` -> its \
`deploy_finished` (pull, swap, boot, soak), median. Two models of push -> last follower \
done. The first: poll/2 + hop + PROMOTE_AFTER + poll/2 + hop on average, a whole poll for \
each wait at worst. The second knows that a promotion is made by a poll of the canary's, \
the first at or after its due time, and that the canary's polls keep their rate through \
a deploy: it promotes at its k-th poll after the one that found the build, k = \
ceil((hop + PROMOTE_AFTER) / interval), so push -> last follower done is the canary's \
detection wait (1/2 an interval) + k intervals + the last follower's wait (3/4: the longest \
of 3 uniform waits) + hop on average (interval: poll x 1.05, the agent adding 0-10 % \
jitter to each), from k polls to k + 2 jittered ones + hop.

{table(results, cells)}

{breakdown(results)}

**Idle polls, 4 hosts.** A {idle_s:g} s window after the base cell ({base.label}) had \
converged, each host's requests for the repository in the registry's access log, by its \
source address (127.0.1.<n>); per poll = requests / ({idle_s:g} s / {base.poll * 1.05:g} s, \
the mean interval with the agent's 0-10 % jitter added to each poll). Token \
fetches go to the token server on :5001 and are not in this log (a cached token serves \
many polls).

{idle_text(counts, base, idle_s)}

**What dominates.** {dominates(results, cells)}"""


def dominates(results: list[Run], cells: list[Cell]) -> str:
    b = cells[0]
    base = [r.figures for r in results if r.cell == b]
    total = statistics.median([r["last_done"] for r in base])
    hop = statistics.median([r["hop"] for r in base])
    waits = total - b.after - 2 * hop
    return (f"At the base cell ({b.label}) the last follower was done {total:.1f} s after "
            f"the push (median): PROMOTE_AFTER {b.after:g} s, two deploys of {hop:.1f} s "
            f"each (pull, swap, boot, soak; the pull alone "
            f"{statistics.median([r['pull'] for r in base]):.2f} s), and {waits:.1f} s of "
            "waiting for polls. What the configuration sets, the promotion delay and the "
            "poll phase, dominates; the deploy itself is the small part. The due time counts "
            "from the history row's `finished`, kept in whole seconds: a promotion can come "
            "up to 1 s before PROMOTE_AFTER has passed, one poll earlier than k says.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 s / 5 s grid, 1 run, 20 s idle")
    ap.add_argument("--no-write", action="store_true", help="leave results.md untouched")
    a = ap.parse_args(argv)
    cells, runs, idle_s = grid(a.quick), 1 if a.quick else 2, 20.0 if a.quick else 60.0
    if fleet.FleetState.load() is not None:
        fleet.down()
    before = conditions()
    bed = SimpleNamespace(docker=services.engine_client(), raw=RawRegistry())
    uid = f"twconv{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="twconv"))  # kept: the daemons' logs
    print(f"daemon logs under {tmp}", flush=True)
    try:
        sites = ring(bed, fleet.up(NODES), uid, f"bench/{uid}/app", tmp)
        try:
            results, counts = measure(bed, sites, cells, runs, idle_s)
        finally:
            for s in sites:
                s.teardown()
    finally:
        left = fleet.down()
        bed.raw.close()
        bed.docker.close()
    assert left == [], f"the fleet left {left}"
    body = report(results, cells, counts, before, idle_s, a.quick)
    print(body)
    if not a.no_write:
        write_section(RESULTS, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
