"""Two idle daemons side by side, one with a feature configured and one without, and the
peak RSS of each per slice: what ``bench.idle_notify`` and ``bench.idle_keyless`` share.

Each daemon (``twilight-agent run``, 30 s polls) follows its own fresh site of the test bed
(engine + registry), already running its current build, so no poll finds anything to do.
``VmRSS`` is sampled once a second; the peak of each of ``SLICES`` slices is printed for
both, side by side, with the difference of the peaks. Goal: within ``GOAL_MB``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.idle import SLICES, rss_mb
from bench.report import write_section
from bench.requests_per_poll import RESULTS
from bench.scenarios import Bench
from bench.site import Site
from testbed import engines, services
from testbed.rawclient import RawRegistry

GOAL_MB = 1.0


@dataclasses.dataclass(frozen=True)
class Pair:
    """What one comparison names and how it sets its two sites up."""

    module: str  # bench.idle_<x>
    doc: str  # the module's docstring: its first line is ``--help``'s description
    section: str  # of bench/results.md
    feature: str  # "with notifications": the verdict line
    without: str  # the table's column headings
    with_: str
    compared: str  # "one with ..., one without": the results paragraph
    note: str  # why the two should not differ
    # (plain, featured) -> the featured daemon's extra environment; brings both sites up
    prepare: Callable[[Site, Site], dict[str, str]]
    check: Callable[[Site], None] = lambda site: None  # after the window, on the featured


def side_by_side(bench: Bench, window_s: float, pair: Pair) -> list[tuple[float, float]]:
    """``[(without, with)]`` peak RSS in MB per slice."""
    plain, featured = bench.site(), bench.site()
    try:
        env = pair.prepare(plain, featured)
        procs = (plain.start_agent(30.0), featured.start_agent(30.0, **env))
        time.sleep(2)  # the first poll's connections settle
        rows: list[tuple[float, float]] = []
        step = window_s / SLICES
        for _ in range(SLICES):
            t0 = time.monotonic()
            peak = [rss_mb(p.pid) for p in procs]
            while time.monotonic() - t0 < step:
                time.sleep(min(1.0, step))
                peak = [max(m, rss_mb(p.pid)) for m, p in zip(peak, procs, strict=True)]
            rows.append((peak[0], peak[1]))
            print(f"  slice {len(rows)}: without {peak[0]:.2f} MB, with {peak[1]:.2f} MB, "
                  f"difference {peak[1] - peak[0]:+.2f} MB", flush=True)
        for site, proc in ((plain, procs[0]), (featured, procs[1])):
            if proc.poll() is not None:
                raise RuntimeError(f"a daemon died while idle: {site.log_tail()}")
        pair.check(featured)
        return rows
    finally:
        plain.close()
        featured.close()


def table(rows: list[tuple[float, float]], pair: Pair) -> str:
    lines = [f"| slice | {pair.without}, MB | {pair.with_}, MB | difference, MB |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {i} | {a:.2f} | {b:.2f} | {b - a:+.2f} |" for i, (a, b) in
              enumerate(rows, 1)]
    a, b = max(r[0] for r in rows), max(r[1] for r in rows)
    lines.append(f"| peak | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    return "\n".join(lines)


def main(pair: Pair, argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {pair.module}",
                                description=pair.doc.splitlines()[0])
    p.add_argument("--window", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--no-write", action="store_true", help="do not touch bench/results.md")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=f"twbench-{pair.module.rsplit('_', 1)[-1]}-"))
    client, raw = services.engine_client(), RawRegistry()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        rows = side_by_side(Bench(client, raw, workdir), args.window, pair)
    finally:
        raw.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = table(rows, pair)
    print(text)
    diff = max(r[1] for r in rows) - max(r[0] for r in rows)
    print(f"idle RSS {pair.feature}: {diff:+.2f} MB against without "
          f"(goal: within {GOAL_MB:g} MB): {'met' if abs(diff) <= GOAL_MB else 'NOT met'}")
    if not args.no_write:
        write_section(RESULTS, pair.section, (
            f"`.venv/bin/python -m {pair.module} --window {args.window:g}`, {stamp}, "
            f"engine {engines.running_key()}. Two idle daemons side by side (30 s polls, "
            f"each on its own site), {pair.compared}; peak `VmRSS` per slice. {pair.note} "
            f"Goal: within {GOAL_MB:g} MB.\n\n" + text), first=False)
    return 0 if abs(diff) <= GOAL_MB else 1
