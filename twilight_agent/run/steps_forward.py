"""The steps that move a deploy forward: pull, prepare, swap, verify. Each handler takes
a ``Step`` and its command and returns the event that ends its phase, or None to go on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twilight_agent.core import machine as m
from twilight_agent.core.events import TaskFinished
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import RollsOutItself, RunsTasks, Snapshot, StartsBeside
from twilight_agent.errors import (
    DockerUnavailable,
    InvalidInput,
    NodeLost,
    RuntimeError_,
    TwilightError,
)
from twilight_agent.run.deploy_run import Step
from twilight_agent.run.observe import observe_target

# Start failures the host causes, not the build: quarantining a good build for them would
# keep it out until an operator runs `unquarantine`.
HOST_CAUSES = ("port is already allocated", "address already in use",
               "no space left on device")


def host_caused(exc: TwilightError) -> bool:
    """True when starting failed because of the host (engine down, port taken, disk full)."""
    text = str(exc).lower()
    return isinstance(exc, DockerUnavailable) or any(c in text for c in HOST_CAUSES)


def pull(s: Step, _: m.Pull) -> m.Event:
    if s.ctx.should_stop():
        return m.Aborted("stop requested before the pull", Outcome.ABORTED)
    assert s.run.to is not None
    try:
        s.run.image_id = s.ctx.images.pull(str(s.ctx.config.image_ref), s.run.to.digest,
                                           s.ctx.pull_auth(), progress=s.ctx.pull_progress,
                                           moved=s.ctx.progress)
    except TwilightError as exc:
        s.run.error = exc
        return m.Aborted(str(exc))
    return m.Pulled()


def take_snapshot(s: Step, _: m.TakeSnapshot) -> m.Event:
    """Read the target again: the pull may have taken minutes since the decision."""
    c = s.ctx
    try:
        s.run.snapshot = observe_target(c.target, c.store, c.config.env_file,
                                        c.config.tag_pattern)
    except TwilightError as exc:
        s.run.error = exc
        return m.Aborted(str(exc))
    if c.should_stop():
        return m.Aborted("stop requested before the swap", Outcome.ABORTED)
    try:
        s.run.start_first = start_first(s)
    except TwilightError as exc:
        s.run.error = exc
        return m.Aborted(str(exc))
    return m.Prepared(units=len(s.snap.units()), pre_deploy=bool(c.config.pre_deploy),
                      start_first=s.run.start_first)


def start_first(s: Step) -> bool:
    """``TWILIGHT_SWAP``: auto starts the new units beside the old ones when none publishes
    a host port (two would fight for it); start-first on one that does is refused."""
    mode, target = s.ctx.config.swap, s.ctx.target
    if mode == "stop-first" or not isinstance(target, StartsBeside):  # swarm: its own order
        return False
    ports = target.publishes_ports(s.snap)
    if mode == "start-first" and ports:
        raise InvalidInput(f"TWILIGHT_SWAP=start-first: {s.snap.name} publishes a host port, "
                           "so a second container could not start beside it (use auto or "
                           "stop-first, or reach it through a proxy)")
    return not ports


def run_pre_deploy(s: Step, _: m.RunPreDeploy) -> m.Event:
    """The one-off task (a migration) in the new image, before anything is swapped."""
    c, to = s.ctx, s.run.to
    assert to is not None
    image = c.config.image_ref.with_digest(to.digest)
    try:
        if not isinstance(c.target, RunsTasks):  # settings refuse it for such a target
            raise RuntimeError_("TWILIGHT_PRE_DEPLOY: this target runs no one-off task")
        c.progress("pre-deploy task", quiet_s=c.config.pre_deploy_timeout)  # its own bound
        result = c.target.run_task(s.unit(0), image, c.config.pre_deploy,
                                   c.config.pre_deploy_timeout)
    except TwilightError as exc:
        s.run.error = exc
        return m.Aborted(f"the pre-deploy task could not run: {exc}")
    s.run.timings["pre_deploy_s"] = round(result.after_s, 3)
    s.run.log_tail = result.output[-c.tunables.log_tail_chars:]
    c.events.emit(TaskFinished(s.run.ref(), result.exit_code, result.output))
    if result.ok:
        return m.PreDeployDone(s.run.start_first)
    why = (f"killed after the {c.config.pre_deploy_timeout:g}s timeout"
           if result.exit_code is None else f"exited with code {result.exit_code}")
    return m.PreDeployFailed(f"pre-deploy task {why}")


def remove_task(s: Step, _: m.RemoveTask) -> m.Event:
    target = s.ctx.target
    removed = isinstance(target, RunsTasks) and s.engine(
        "remove_task", lambda: target.remove_task(s.unit(0)))
    what = "its container removed" if removed else "no container left"
    return m.Aborted(f"pre-deploy task interrupted; {what}; nothing swapped",
                     Outcome.ABORTED)


def park(s: Step, cmd: m.Park) -> m.Event | None:
    try:
        s.ctx.target.park(s.unit(cmd.unit))
    except TwilightError as exc:
        return m.SwapFailed(f"parking {s.unit(cmd.unit).name} failed: {exc}", unit=cmd.unit)
    return None


def stop_parked(s: Step, cmd: m.StopParked) -> m.Event | None:
    unit = s.unit(cmd.unit)
    if s.run.start_first and s.ctx.config.drain > 0:
        s.ctx.progress("drain", quiet_s=s.ctx.config.drain)
        s.ctx.clock.sleep(s.ctx.config.drain)  # open connections finish on the old one
    try:
        s.ctx.target.stop_parked(unit)
    except TwilightError as exc:
        return m.SwapFailed(f"stopping the old {unit.name} failed: {exc}", unit=cmd.unit)
    return None


def expose(s: Step, cmd: m.Expose) -> m.Event | None:
    """The aliases, then a pause: proxies cache what an alias resolves to for a moment."""
    failed = _cutover(s, cmd.unit, "giving the new {} its network aliases",
                      lambda unit, cid: _beside(s).expose(unit, cid))
    if failed is None:
        s.ctx.clock.sleep(s.ctx.tunables.alias_settle_s)
    return failed


def promote(s: Step, cmd: m.Promote) -> m.Event:
    failed = _cutover(s, cmd.unit, "renaming the new {}",
                      lambda unit, cid: _beside(s).promote(unit, cid))
    return failed or m.CutOver(cmd.unit, len(s.snap.units()))


def _beside(s: Step) -> StartsBeside:
    """The target's start-first capability (a run is start-first only with it)."""
    if not isinstance(s.ctx.target, StartsBeside):
        raise InvalidInput("a start-first cutover on a target that cannot start beside")
    return s.ctx.target


def _cutover(s: Step, index: int, what: str,
             call: Callable[[Snapshot, str], None]) -> m.Event | None:
    unit = s.unit(index)
    try:
        cid = s.ctx.target.new_instance(unit, s.run.new_ids.get(index))
        if cid is None:
            return m.SwapFailed(f"the new {unit.name} is gone", unit=index)
        s.run.new_ids[index] = cid
        call(unit, cid)
    except TwilightError as exc:
        return m.SwapFailed(f"{what.format(unit.name)} failed: {exc}", unit=index)
    return None


def create_new(s: Step, cmd: m.CreateNew) -> m.Event | None:
    assert s.run.to is not None
    image = s.ctx.config.image_ref.with_digest(s.run.to.digest)
    unit = s.unit(cmd.unit)
    try:
        s.run.new_ids[cmd.unit] = s.ctx.target.create(unit, image, beside=s.run.start_first,
                                                      tag=s.run.to.tag)
    except TwilightError as exc:
        return m.SwapFailed(f"creating the new {unit.name} failed: {exc}", unit=cmd.unit)
    return None


def start_new(s: Step, cmd: m.StartNew) -> m.Event:
    cid = s.run.new_ids[cmd.unit]
    try:
        s.ctx.target.start(cid)
    except TwilightError as exc:
        return m.SwapFailed(f"starting the new {s.unit(cmd.unit).name} failed: {exc}",
                            blame_image=not host_caused(exc), unit=cmd.unit)
    return m.Started(cmd.unit)


def verify(s: Step, cmd: m.Verify) -> m.Event:
    c, u, unit = s.ctx, cmd.unit, s.unit(cmd.unit)
    cid = s.run.new_ids.get(u) or c.target.new_instance(unit, None)
    if cid is None:
        return m.Interrupted(f"the new {unit.name} is gone", u)
    watch = [s.run.new_ids[i] for i in range(u) if i in s.run.new_ids]
    cfg = c.config
    try:
        if isinstance(c.target, RollsOutItself):  # a swarm update runs its course
            c.target.settle(cid, c.should_stop, c.progress)
        url = s.engine("verify", lambda: c.target.health_url(unit, cid))  # dockerd away
        verdict = c.health.verify(cid, url, timeout=cfg.health_timeout,
                                  interval=cfg.health_interval, soak=cfg.health_soak,
                                  should_stop=s.ticking("health gate"), watch=watch,
                                  failures=cfg.health_failures)
    except NodeLost as exc:  # swarm waits for a node that went down: undo, blame no build
        return m.Interrupted(str(exc), u)
    except TwilightError as exc:
        return m.Interrupted(f"health check could not run: {exc}", u)
    s.run.timings["verify_s"] = round(s.run.timings.get("verify_s", 0) + verdict.after_s, 3)
    if verdict.ok:
        return m.Healthy(u, len(s.snap.units()), s.run.start_first)
    named = f"{unit.name}: " if len(s.snap.units()) > 1 else ""
    if c.should_stop():
        return m.Interrupted(f"stop requested during verify ({named}{verdict.reason})", u)
    return m.Unhealthy(f"health gate failed: {named}{verdict.reason}", u)


HANDLERS: dict[type, Callable[[Step, Any], m.Event | None]] = {
    m.Pull: pull, m.TakeSnapshot: take_snapshot, m.RunPreDeploy: run_pre_deploy,
    m.RemoveTask: remove_task, m.Park: park, m.StopParked: stop_parked,
    m.CreateNew: create_new, m.StartNew: start_new, m.Verify: verify, m.Expose: expose,
    m.Promote: promote,
}
