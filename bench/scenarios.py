"""The measurements. Each run builds a fresh site (v1 running from ``deploy/compose.yml``),
drives one deploy through one flow while the prober and the engine's event stream watch,
returns a dict of figures, and removes the site.

Agent runs use the daemon (``twilight-agent run``) with its defaults except
``TWILIGHT_HEALTH_TIMEOUT=60s`` (the shell's 30 x 2 s) and the poll interval given; a new
build is announced by moving ``main`` in the registry (the build's ``sha-`` tag is pushed
first), so "push" is one manifest PUT at a known instant.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker

from bench.probe import EngineEvents, Prober, Sample, first, longest_outage
from bench.site import Site
from testbed.images import AppImage
from testbed.rawclient import RawRegistry
from testbed.services import engine_answers

SOAK_S = 10.0  # the agent's default TWILIGHT_HEALTH_SOAK, left as it is
Figures = dict[str, float]


@dataclass
class Bench:
    client: docker.DockerClient
    raw: RawRegistry
    workdir: Path
    log: Callable[[str], None] = print

    def site(self) -> Site:
        return Site(self.client, self.raw, self.workdir)


def _with_site(bench: Bench, body: Callable[[Site, AppImage], Figures]) -> Figures:
    site = bench.site()
    try:
        v1 = site.push("v1")
        site.up(v1)
        return body(site, v1)
    finally:
        site.close()


def _boot_s(ev: EngineEvents, samples: list[Sample], site: Site, img: AppImage) -> float:
    """New container started -> first 2xx of the new version seen by the prober."""
    started = ev.first("start", site.refs(img))
    answered = first(samples, started or 0.0, body=f"ok {img.version}")
    if started is None or answered is None:
        raise RuntimeError("the new version never answered the prober")
    return answered.done - started


# -- healthy swap -----------------------------------------------------------------------
def agent_swap(bench: Bench, poll_interval: float = 5.0) -> Figures:
    """Detection, overhead and service gap of one healthy deploy by the daemon."""
    def body(site: Site, v1: AppImage) -> Figures:
        site.start_agent(poll_interval)
        v2 = site.push("v2", main=False)
        time.sleep(random.uniform(0, poll_interval))  # land anywhere in the poll cycle
        with Prober(site.port) as pr, EngineEvents(bench.client, site.uid) as ev:
            pushed = site.move_main(v2)
            done = site.wait_agent("deploy_finished", poll_interval * 1.2 + 120)
        if done.get("outcome") != "deployed":
            raise RuntimeError(f"healthy deploy ended {done.get('outcome')}: {done}")
        events = site.agent_events()
        started = next(e for e in events if e["event"] == "phase" and e.get("phase") == "PULL")
        spent = {e["previous_phase"]: float(e["duration_s"]) for e in events
                 if e["event"] == "phase" and e.get("deploy_id") == done.get("deploy_id")}
        total = done["t"] - started["t"]
        boot = _boot_s(ev, pr.samples, site, v2)
        n, gap = longest_outage(pr.samples, since=pushed)
        return {"detect_s": started["t"] - pushed, "total_s": total,
                "pull_s": spent["PULL"], "boot_s": boot,
                "overhead_s": total - spent["PULL"] - boot - SOAK_S,
                "prepare_s": spent["PREPARE"], "swap_s": spent["SWAP"],
                "verify_wait_s": spent["VERIFY"] - boot - SOAK_S, "commit_s": spent["COMMIT"],
                "gap_ms": gap, "gap_failed": n}
    return _with_site(bench, body)


def shell_swap(bench: Bench) -> Figures:
    """Overhead and service gap of one healthy deploy by the reference shell flow."""
    def body(site: Site, v1: AppImage) -> Figures:
        v2 = site.push("v2")
        with Prober(site.port) as pr, EngineEvents(bench.client, site.uid) as ev:
            t0 = time.time()
            code, steps = site.shell_deploy(v2.sha_tag)
        if code != 0:
            raise RuntimeError(f"shell deploy exited {code}: {steps}")
        total = steps["healthy"] - steps["start"]
        pull = steps["pulled"] - steps["start"]
        boot = _boot_s(ev, pr.samples, site, v2)
        n, gap = longest_outage(pr.samples, since=t0)
        return {"total_s": total, "pull_s": pull, "boot_s": boot,
                "overhead_s": total - pull - boot, "gap_ms": gap, "gap_failed": n}
    return _with_site(bench, body)


# -- healing ----------------------------------------------------------------------------
def _failure_seen(mode: str, ev: EngineEvents, samples: list[Sample], site: Site,
                  bad: AppImage, since: float) -> float:
    """When the failure became observable: the bad container's first exit (engine event,
    the same instant as State.FinishedAt), or the first 500 the prober got."""
    if mode == "exit":
        t = ev.first("die", site.refs(bad), after=since)
    else:
        s = first(samples, since, status=500)
        t = s.done if s else None
    if t is None:
        raise RuntimeError(f"the {mode} failure was never observed")
    return t


def _healed(samples: list[Sample], failed: float, v1: AppImage) -> float:
    back = first(samples, failed, body=f"ok {v1.version}")
    if back is None:
        raise RuntimeError("the previous version never answered again")
    return back.done


def agent_heal(bench: Bench, mode: str, poll_interval: float = 5.0) -> Figures:
    """A build that exits at boot (``exit``) or answers 500 (``500``), deployed by the daemon."""
    def body(site: Site, v1: AppImage) -> Figures:
        site.start_agent(poll_interval)
        bad = site.push("v2", mode=mode, main=False)
        with Prober(site.port) as pr, EngineEvents(bench.client, site.uid) as ev:
            pushed = site.move_main(bad)
            done = site.wait_agent("deploy_finished", poll_interval * 1.2 + 180)
        if done.get("outcome") != "rolled_back":
            raise RuntimeError(f"bad deploy ended {done.get('outcome')}: {done}")
        verdict = next(e["t"] for e in site.agent_events()
                       if e["event"] == "phase" and e.get("phase") == "ROLLBACK")
        failed = _failure_seen(mode, ev, pr.samples, site, bad, pushed)
        back = _healed(pr.samples, failed, v1)
        return {"heal_s": back - failed, "verdict_s": verdict - failed,
                "verdict_to_ok_s": back - verdict}
    return _with_site(bench, body)


def shell_heal(bench: Bench, mode: str) -> Figures:
    """The same bad build deployed by the reference shell flow."""
    def body(site: Site, v1: AppImage) -> Figures:
        bad = site.push("v2", mode=mode)
        with Prober(site.port) as pr, EngineEvents(bench.client, site.uid) as ev:
            t0 = time.time()
            code, steps = site.shell_deploy(bad.sha_tag)
            site.wait_serving(v1.version)
        if code != 1:
            raise RuntimeError(f"shell deploy of a bad build exited {code}: {steps}")
        failed = _failure_seen(mode, ev, pr.samples, site, bad, t0)
        back = _healed(pr.samples, failed, v1)
        verdict = steps["health_failed"]
        return {"heal_s": back - failed, "verdict_s": verdict - failed,
                "verdict_to_ok_s": back - verdict}
    return _with_site(bench, body)


def retry(bench: Bench, what: str, fn: Callable[[], Figures], attempts: int = 3) -> Figures:
    """Run ``fn``; an engine or registry hiccup (another engineer restarting dockerd) gets
    the run repeated, not counted."""
    for i in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if i == attempts:
                raise
            bench.log(f"  {what}: run failed ({type(exc).__name__}: {exc}); retrying")
            deadline = time.monotonic() + 180  # an engine restart takes a while
            while not engine_answers() and time.monotonic() < deadline:
                time.sleep(2)
            time.sleep(5)
    raise AssertionError("unreachable")


def summary(figs: Figures) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in figs.items())


__all__ = ["Bench", "agent_heal", "agent_swap", "retry", "shell_heal", "shell_swap",
           "summary"]
