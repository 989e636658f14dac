"""Recording a finished deploy: its history row, the meta it changes (current, previous,
halted, last result) and its ``DeployFinished`` event, in that order, once."""

from __future__ import annotations

from twilight_agent.core.clock import utcnow
from twilight_agent.core.events import DeployFinished, Event
from twilight_agent.core.history import HistoryRow
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import Halt, LastResult, Meta, StorePort
from twilight_agent.run.deploy_run import DeployRun, EventBus


class Recorder:
    """Writes what a run ended in; the run hands itself over, nothing else is read."""

    def __init__(self, store: StorePort, events: EventBus) -> None:
        self.store = store
        self.events = events

    def record(self, run: DeployRun, reason: str) -> None:
        """History row + meta + journal closed in one write, then the summary event."""
        outcome = run.outcome or Outcome.FAILED
        reason = _full_reason(run, reason)
        finished = utcnow()
        row = HistoryRow(id=run.deploy_id, started=run.started, finished=finished,
                         outcome=outcome, phase=run.phase, reason=reason, timings=run.timings,
                         log_tail=run.log_tail, trigger=run.trigger, verified=run.verified,
                         **_sides(run))
        last = LastResult(run.deploy_id, outcome.value, reason, finished)
        meta, clear_halt = _meta_after(run, outcome, reason, last)
        self.store.finish(row, meta, clear_halt)
        self.events.emit(finished_event(run, outcome, reason))


def finished_event(run: DeployRun, outcome: Outcome, reason: str) -> Event:
    duration = round(sum(v for k, v in run.timings.items() if k.isupper()), 3)
    return DeployFinished(run.ref(), outcome, run.phase, reason, duration, run.log_tail)


def _full_reason(run: DeployRun, reason: str) -> str:
    if run.note:
        reason = f"{run.note}: {reason}" if reason else run.note
    if run.warnings:
        reason = (reason + "; " if reason else "") + "warnings: " + "; ".join(run.warnings)
    return reason


def _sides(run: DeployRun) -> dict[str, str | None]:
    f, t = run.from_, run.to
    return {"from_tag": f.tag if f else None, "from_digest": str(f.digest) if f else None,
            "to_tag": t.tag if t else None, "to_digest": str(t.digest) if t else None}


def _meta_after(run: DeployRun, outcome: Outcome, reason: str,
                last: LastResult) -> tuple[Meta, bool]:
    """The meta a finished run writes, and whether it clears the halt."""
    if outcome is Outcome.DEPLOYED:
        return Meta(current=run.to, previous=run.from_, last_result=last), True
    if outcome is Outcome.ROLLED_BACK:
        return Meta(current=run.from_, last_result=last), True
    if outcome is Outcome.HALTED:
        halt = Halt(str(run.to.digest) if run.to else None, reason, run.deploy_id)
        return Meta(halted=halt, last_result=last), False
    return Meta(last_result=last), False
