"""RSS and open file descriptors over many deploys in ONE agent process.

One agent, built by ``app.build_agent`` with ``app.build_sinks`` as the daemon builds it,
deploys a bench site (a compose project) by tag, alternately v2 and v1 (two pushed
builds, ``deploy(sha-...)``), ``TWILIGHT_WATCH=0``, ``TWILIGHT_HEALTH_SOAK=0``, health
interval 0.2 s. After every deploy: ``VmRSS`` of this process and the number of entries in
``/proc/self/fd``. The figures: both at deploy ``min(100, N/2)`` (clients, pools and caches
are warm by then) and at deploy N, and the growth between them. Goal: flat (<= 2 MiB RSS,
0 fds).

    .venv/bin/python -m bench --only leaks [--deploys 1000]     # writes results.md
    .venv/bin/python -m bench.leaks --deploys 300 --trace       # where it grows; no write

``--trace`` runs under ``tracemalloc`` and prints, for the same two points, the lines that
allocated the most surviving memory in between and the object types whose count grew.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from bench.scenarios import Bench, Figures
from bench.site import Site
from testbed import services
from testbed.images import AppImage
from testbed.rawclient import RawRegistry
from twilight_agent import app
from twilight_agent.settings import load_settings

OVERRIDES = {"HEALTH_INTERVAL": "0.2s", "HEALTH_SOAK": "0", "WATCH": "0"}
REVISION = "org.opencontainers.image.revision"


class NewBuilds:
    """A new build per deploy, made in the registry without building: v1's manifest with
    a new revision label in its config (new digest, new ``sha-`` tag), pushed as ``sha-<7>``
    then ``main``: what CI pushes when only the commit changed."""

    def __init__(self, site: Site, base: AppImage) -> None:
        self.raw, self.repo = site.raw, site.repo
        body, self.media_type, _ = self.raw.get_manifest(self.repo, base.sha_tag)
        self.manifest = json.loads(body)
        self.config = json.loads(self.raw.get_blob(self.repo, self.manifest["config"]["digest"]))
        self.pushed: list[str] = []

    def new(self) -> str:
        self.raw._tokens.clear()  # the bed's tokens live 5 minutes; a long run outlives them
        revision = secrets.token_hex(20)
        config = json.loads(json.dumps(self.config))
        config["config"]["Labels"][REVISION] = revision
        blob = json.dumps(config).encode()
        body = json.dumps(dict(self.manifest, config={
            **self.manifest["config"], "size": len(blob),
            "digest": self.raw.put_blob(self.repo, blob)})).encode()
        self.pushed.append(self.raw.put_manifest(self.repo, f"sha-{revision[:7]}", body,
                                                 self.media_type))
        self.raw.put_manifest(self.repo, "main", body, self.media_type)
        return f"sha-{revision[:7]}"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def object_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


class Tracer:
    """tracemalloc snapshots and gc type counts at the warm point and at the end."""

    def __init__(self, on: bool, say: Callable[[str], None]) -> None:
        self.on, self.say = on, say
        self.snap: Any = None
        self.counts: collections.Counter[str] = collections.Counter()
        if on:
            tracemalloc.start(12)

    def mark(self) -> None:
        if self.on:
            gc.collect()
            self.snap, self.counts = tracemalloc.take_snapshot(), object_counts()

    def report(self) -> None:
        if not self.on:
            return
        gc.collect()
        after, counts = tracemalloc.take_snapshot(), object_counts()
        self.say("grew most (tracemalloc, by traceback):")
        for stat in after.compare_to(self.snap, "traceback")[:8]:
            self.say(f"  {stat.size_diff / 1024:+8.1f} KiB {stat.count_diff:+6d} blocks")
            frames = [f for f in stat.traceback if "twilight_agent" in f.filename]
            for f in (frames or list(stat.traceback))[-4:] + list(stat.traceback)[-1:]:
                self.say(f"      {f.filename}:{f.lineno}")
        grown = sorted(((counts[k] - self.counts[k], k) for k in counts), reverse=True)[:12]
        self.say("object types that grew: " + ", ".join(f"{k} {n:+d}" for n, k in grown if n))
        tracemalloc.stop()


def leaks(bench: Bench, deploys: int, *, trace: bool = False, builds: bool = False,
          bad: bool = False, say: Callable[[str], None] = print) -> Figures:
    """``deploys`` deploys in one agent on a fresh site; RSS and fds at warm and at end.

    ``builds``: every deploy is a new build on the track, found by ``poll_once`` (the
    daemon's path: resolve, pull, swap, commit, prune); else ``deploy(tag)`` of v2 and v1
    in turn. ``bad`` (with ``builds``): every second build exits at boot and is rolled
    back (verdict, quarantine, log tail, restore)."""
    site = bench.site()
    agent, made, broken = None, None, None
    tracer = Tracer(trace, say)
    try:
        v1 = site.push("v1")
        site.up(v1)
        made = NewBuilds(site, v1) if builds else None
        broken = NewBuilds(site, site.push("bad", mode="exit")) if builds and bad else None
        step = _poll_new_build(made, broken) if made else _deploy_tag(site.push("v2"), v1)
        agent = app.build_agent(settings := load_settings(_config(site, builds)),
                                sinks=app.build_sinks(settings))
        warm = min(100, deploys // 2)
        t0, at = time.monotonic(), dict[str, float]()
        for i in range(1, deploys + 1):
            report, expected = step(agent, i)
            if report.outcome != expected:
                raise RuntimeError(f"deploy {i} ended {report.outcome}: {report.reason}")
            rss, fd = rss_kib() / 1024, fds()
            if i == warm:
                tracer.mark()
                at.update(rss_warm_mib=rss, fds_warm=fd, t_warm=time.monotonic())
            if i % 50 == 0 or i == deploys:
                say(f"  deploy {i}: RSS {rss:.1f} MiB, {fd} fds")
        tracer.report()
        per = (time.monotonic() - at["t_warm"]) / max(1, deploys - warm)
        return {"deploys": deploys, "warm": warm, "rss_warm_mib": at["rss_warm_mib"],
                "rss_end_mib": rss, "rss_growth_mib": rss - at["rss_warm_mib"],
                "fds_warm": at["fds_warm"], "fds_end": fd, "fds_growth": fd - at["fds_warm"],
                "s_per_deploy": per, "total_s": time.monotonic() - t0}
    finally:
        if agent is not None:
            agent.close()
        for digest in [*(made.pushed if made else []), *(broken.pushed if broken else [])]:
            with contextlib.suppress(Exception):
                site.raw.delete_manifest(site.repo, digest)
        site.close()


Step = Callable[[Any, int], Any]


def _deploy_tag(v2: AppImage, v1: AppImage) -> Step:
    return lambda agent, i: (agent.deploy((v2 if i % 2 else v1).sha_tag), "deployed")


def _poll_new_build(made: NewBuilds, broken: NewBuilds | None) -> Step:
    def step(agent: Any, i: int) -> Any:
        if broken is not None and i % 2 == 0:
            broken.new()
            return agent.poll_once(), "rolled_back"
        made.new()
        return agent.poll_once(), "deployed"
    return step


def _config(site: Site, builds: bool) -> Path:
    path = site.agent_config(30.0, state="leaks")
    over = {**OVERRIDES, **({"PRUNE_AFTER": "1s"} if builds else {})}
    path.write_text(path.read_text() + "".join(f"TWILIGHT_{k}={v}\n"
                                               for k, v in over.items()))
    return path


def summary(f: Figures) -> str:
    return (f"{int(f['deploys'])} deploys: RSS {f['rss_warm_mib']:.1f} MiB at deploy "
            f"{int(f['warm'])} -> {f['rss_end_mib']:.1f} MiB ({f['rss_growth_mib']:+.2f}); "
            f"fds {int(f['fds_warm'])} -> {int(f['fds_end'])} ({int(f['fds_growth']):+d}); "
            f"{f['s_per_deploy']:.2f} s per deploy")


def table(f: Figures) -> str:
    warm, n = int(f["warm"]), int(f["deploys"])
    rss_ok = "met" if f["rss_growth_mib"] <= 2.0 else "**missed**"
    fds_ok = "met" if f["fds_growth"] <= 0 else "**missed**"
    return "\n".join([
        f"| measure | at deploy {warm} | at deploy {n} | growth | target | |",
        "|---|---:|---:|---:|---|---|",
        f"| RSS (MiB) | {f['rss_warm_mib']:.1f} | {f['rss_end_mib']:.1f} | "
        f"{f['rss_growth_mib']:+.2f} | <= 2 MiB | {rss_ok} |",
        f"| open fds | {int(f['fds_warm'])} | {int(f['fds_end'])} | "
        f"{int(f['fds_growth']):+d} | 0 | {fds_ok} |",
        f"| time per deploy (s) | | {f['s_per_deploy']:.2f} | | | |"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.leaks", description=__doc__.splitlines()[0])
    p.add_argument("--deploys", type=int, default=300)
    p.add_argument("--trace", action="store_true", help="tracemalloc + gc counts (slower)")
    p.add_argument("--builds", action="store_true",
                   help="a new build per deploy, through poll_once (the daemon's path)")
    p.add_argument("--bad", action="store_true",
                   help="with --builds: every second build exits at boot (rolled back)")
    args = p.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    workdir = Path(tempfile.mkdtemp(prefix="twbench-"))
    client, raw = services.engine_client(), RawRegistry()
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        figs = leaks(Bench(client, raw, workdir, log=say), args.deploys, trace=args.trace,
                     builds=args.builds, bad=args.bad, say=say)
    finally:
        raw.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(summary(figs))
    print(table(figs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
