"""Start-up recovery, the adapter side: read the open journal, observe the engine, let the
pure ``core.recovery.plan`` decide, and run its plan. docs/architecture.md lists what each
journal step leads to.
"""

from __future__ import annotations

from twilight_agent.core.events import Recovering
from twilight_agent.core.ports import ContainerState
from twilight_agent.core.recovery import JournalRow, plan
from twilight_agent.errors import TwilightError
from twilight_agent.logs import get_logger
from twilight_agent.run.deploy_run import DeployContext, DeployRun
from twilight_agent.run.runner import Runner

log = get_logger("twilight.recovery")


def recover(ctx: DeployContext) -> DeployRun | None:
    """Finish or undo an interrupted deploy; None when there was nothing to recover.

    Docker must answer before anything is judged: an engine that is down now would make
    every undo step fail and turn a recoverable stop into HALTED. Its error propagates
    and keeps the journal open for the next attempt.
    """
    entry = ctx.store.open_journal()
    if entry is None:
        warn_orphan(ctx)
        return None
    run = DeployRun.from_journal(entry.deploy_id, entry.phase, entry.payload)
    unit = int(entry.payload.get("unit") or 0)
    new = _observe_new(ctx, run, unit)
    p = plan(JournalRow(entry.phase, entry.step, run.reason, run.snapshot is not None,
                        unit=unit, units=len(run.units()) or 1), new)
    run.note = f"recovered at start-up (agent stopped in {entry.phase}/{entry.step})"
    ctx.events.emit(Recovering(run.deploy_id, entry.phase, entry.step))
    runner = Runner(ctx, run)
    if p.event is not None:
        runner.feed(p.state, p.event)
    else:
        runner.resume(p.state, p.commands)
    return run


def _observe_new(ctx: DeployContext, run: DeployRun, unit: int) -> ContainerState | None:
    """The state of the unit's new container (None: there is none); remembers its id."""
    units = run.units()
    if not units or unit >= len(units):
        return None
    cid = ctx.target.new_instance(units[unit], run.new_ids.get(unit))
    if cid is None:
        return None
    run.new_ids[unit] = cid
    return ctx.target.state(cid)


def warn_orphan(ctx: DeployContext) -> None:
    """A parked container with no journal (state dir lost?): keep it, tell the operator."""
    try:
        parked = ctx.target.orphan()
    except TwilightError:
        return
    if parked is not None:
        log.warning("parked_container_without_journal", container=parked,
                    hint="nothing is deleted; remove it by hand once the service is healthy")

