"""Start-up recovery as a pure function: the journal's last row + what the engine shows
-> the state to resume in and what to feed the machine there. No I/O.

The journal's last row names the phase and step the agent was in when it stopped. The
adapter side (``twilight_agent/run/recovery.py``) reads it, observes the new container, calls
``plan`` and hands the result to a runner. Every plan ends in a healthy recorded state,
or HALTED:

- before the swap (PULL/PREPARE, or no snapshot yet): nothing was touched; record aborted.
- PRE_DEPLOY: remove the one-off task container, record aborted (nothing swapped).
- SWAP of unit i: undo units i..0 (remove each new container, unpark and verify the old;
  start-first, the old one of unit i still runs and is left as it is).
- CUTOVER of unit i (start-first, its new container passed the gate): park and stop the
  old one, rename the new one (each step idempotent), then go on.
- VERIFY of unit i: its new container still running -> verify it again, then go on with
  the next unit or commit; never started -> undo; exited -> roll back and quarantine it;
  gone -> undo.
- COMMIT: finish the commit steps (each is idempotent), then watch.
- WATCH: resume the watch until its journaled deadline (a unit found dead now fails it at
  once and rolls back; a deadline already past needs one look at the units), then remove
  the parked containers; stopped on that removal: finish it.
- ROLLBACK / VERIFY_PREVIOUS: finish the rollback of every unit (undo is idempotent, so
  all are undone again, last first, and ``.env`` is put back if it names the new tag),
  quarantining first when the agent stopped on that very step.
"""

from __future__ import annotations

from dataclasses import dataclass

from twilight_agent.core import machine as m
from twilight_agent.core.machine import State
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import ContainerState


@dataclass(frozen=True)
class JournalRow:
    """The last journal row of an interrupted deploy, as recovery needs it."""

    phase: str  # a State value (an unknown one, e.g. from an older version, counts as
    step: str  # before the swap); the command that was about to run
    reason: str = ""  # the run's reason so far (why it was rolling back)
    has_snapshot: bool = False  # the old container was snapshotted (PREPARE ran)
    unit: int = 0  # the unit the step was for (SWAP, VERIFY, undo steps)
    units: int = 1  # how many units the target has


@dataclass(frozen=True)
class Plan:
    """Resume in ``state``: feed ``event`` to the machine, or run ``commands`` there."""

    state: State
    event: m.Event | None = None
    commands: tuple[m.Command, ...] = ()


def plan(row: JournalRow, new: ContainerState | None) -> Plan:
    """What to do after the agent stopped at ``row``; ``new`` is the new container's state
    (None: there is no new container under the target's name)."""
    phase = _state(row.phase)
    if phase is State.PRE_DEPLOY and row.has_snapshot:
        return Plan(State.PRE_DEPLOY, commands=(m.RemoveTask(),))
    if not row.has_snapshot or phase is None or phase in m.BEFORE_SWAP:
        return Plan(State.PULL, m.Aborted("service untouched", Outcome.ABORTED))
    if phase is State.SWAP:
        return Plan(State.SWAP, m.SwapFailed("swap interrupted; undone", unit=row.unit))
    if phase is State.VERIFY:
        return _verify_again(new, row.unit)
    if phase is State.CUTOVER:  # the new unit passed its gate: finish handing over
        return Plan(State.CUTOVER, commands=tuple(m.cutover_steps(row.unit)))
    if phase is State.COMMIT:
        return Plan(State.COMMIT, commands=m.COMMIT_STEPS)
    if phase is State.WATCH:
        return Plan(State.WATCH, commands=m.WATCH_STEPS if row.step == "Watch"
                    else (m.RemoveParked(),))
    steps = (m.RestoreEnv(), *m.undo_steps(max(row.units - 1, 0)))
    if row.step == "Quarantine":  # stopped before the bad digest was written down
        steps = (m.Quarantine(row.reason or "failed before the agent stopped"), *steps)
    return Plan(State.ROLLBACK, commands=steps)


def _verify_again(new: ContainerState | None, unit: int) -> Plan:
    """The agent died while verifying: judge the new container again from what it is now."""
    if new is None or new.status == "missing":
        return Plan(State.VERIFY, m.Interrupted("the new container is gone; undone", unit))
    if new.running:
        return Plan(State.VERIFY, commands=(m.Verify(unit),))
    if new.status == "created":
        return Plan(State.VERIFY, m.Interrupted("the new container never started; undone",
                                                unit))
    return Plan(State.VERIFY, m.Unhealthy(
        f"new container {new.status} (exit code {new.exit_code}, oom={new.oom_killed})", unit))


def _state(value: str) -> State | None:
    try:
        return State(value)
    except ValueError:
        return None
