"""The deploy state machine: ``transition(state, event) -> (state, [commands])``. No I/O.

::

    IDLE -> PULL -> PREPARE [-> PRE_DEPLOY] -> SWAP -> VERIFY [-> CUTOVER] -> COMMIT -> WATCH
                                   |             ^     unit i+1     |                  -> IDLE
                                   |             +------------------+
                                   \\-> (task failed: quarantine) -> IDLE
            SWAP / VERIFY / WATCH -> ROLLBACK -> VERIFY_PREVIOUS -> IDLE
                                              \\-> HALTED (rollback failed)

A target is one unit (a container) or several (a compose service group, replicas): SWAP
and VERIFY repeat per unit in order, and a rollback undoes every swapped unit in reverse.
Stop-first: SWAP parks the old container (renamed, still running), creates the new one
under the name, stops the old one, starts the new one. Start-first: SWAP creates and starts
the new one beside the old one; after its gate, CUTOVER stops and parks the old one and
gives the new one the name.

A run starts only after ``policy.decide`` said DEPLOY (the decision is not a state: an idle
poll never enters the machine). The runner journals each command before running it, runs
the commands in order through the ports, and feeds the event the first failing (or the
last) command produced back into ``transition``. A state/event pair not in the table is a
bug and raises ``IllegalTransition`` naming the state. docs/architecture.md draws it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twilight_agent.core.commands import (  # re-exported: m.Park, m.COMMIT_STEPS, ...
    COMMIT_STEPS,
    WATCH_STEPS,
    Alert,
    Command,
    CreateNew,
    Expose,
    Park,
    Promote,
    Prune,
    Pull,
    Quarantine,
    Record,
    RemoveNew,
    RemoveParked,
    RemoveTask,
    RestoreEnv,
    RunPreDeploy,
    SaveLogs,
    StartNew,
    StopParked,
    TagImage,
    TakeSnapshot,
    Unpark,
    Verify,
    VerifyPrevious,
    Watch,
    WriteEnv,
    cutover_steps,
    swap_steps,
    undo_steps,
)
from twilight_agent.core.outcomes import Outcome

__all__ = [  # the machine and its vocabulary: events here, commands from commands.py
    "BEFORE_SWAP",
    "COMMIT_STEPS",
    "IN_FLIGHT",
    "WATCH_STEPS",
    "Alert",
    "Command",
    "CreateNew",
    "Event",
    "Expose",
    "IllegalTransition",
    "Park",
    "Promote",
    "Prune",
    "Pull",
    "Quarantine",
    "Record",
    "RemoveNew",
    "RemoveParked",
    "RemoveTask",
    "RestoreEnv",
    "RunPreDeploy",
    "SaveLogs",
    "StartNew",
    "State",
    "StopParked",
    "TagImage",
    "TakeSnapshot",
    "Unpark",
    "Verify",
    "VerifyPrevious",
    "Watch",
    "WriteEnv",
    "cutover_steps",
    "swap_steps",
    "transition",
    "undo_steps",
]


class State(enum.Enum):
    IDLE = "IDLE"  # nothing in flight; the service runs the recorded current version
    PULL = "PULL"  # pulling the new image by digest; the service is untouched
    PREPARE = "PREPARE"  # snapshotting the running container (config + image)
    PRE_DEPLOY = "PRE_DEPLOY"  # the one-off task (a migration) in the new image; nothing swapped
    SWAP = "SWAP"  # the new container created and started (stop-first: the old one parked)
    CUTOVER = "CUTOVER"  # start-first, new unit healthy: aliases to it, old one out, the name
    VERIFY = "VERIFY"  # health gate on the new container (probe, state, soak)
    COMMIT = "COMMIT"  # .env, local tag, prune (the parked container is kept)
    WATCH = "WATCH"  # the committed version watched for TWILIGHT_WATCH; then the parked goes
    ROLLBACK = "ROLLBACK"  # quarantine, keep logs, remove the new one, unpark the old one
    VERIFY_PREVIOUS = "VERIFY_PREVIOUS"  # health gate on the restored previous container
    HALTED = "HALTED"  # the rollback failed too; nothing deleted, an operator is needed


# States in which a container may be half-swapped: recovery must finish or undo them.
IN_FLIGHT = frozenset({State.SWAP, State.VERIFY, State.CUTOVER, State.COMMIT, State.WATCH,
                       State.ROLLBACK, State.VERIFY_PREVIOUS})
# States in which the service has not been touched yet.
BEFORE_SWAP = frozenset({State.PULL, State.PREPARE, State.PRE_DEPLOY})


class IllegalTransition(Exception):
    """An event arrived in a state that has no transition for it (a bug)."""


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Begin:
    """Policy said DEPLOY for a candidate: start the run."""


@dataclass(frozen=True)
class Pulled:
    """The image is on the host."""


@dataclass(frozen=True)
class Prepared:
    """The running target is snapshotted: ``units`` to swap, whether a task runs first, and
    whether each new unit starts beside the old one (start-first)."""

    units: int = 1
    pre_deploy: bool = False
    start_first: bool = False


@dataclass(frozen=True)
class PreDeployDone:
    """The one-off task exited 0: swap the units."""

    start_first: bool = False


@dataclass(frozen=True)
class PreDeployFailed:
    """The one-off task failed (exit code, timeout): nothing running was touched."""

    reason: str


@dataclass(frozen=True)
class Aborted:
    """A step before the swap failed or was stopped; the service was not touched."""

    reason: str
    outcome: Outcome = Outcome.FAILED


@dataclass(frozen=True)
class Started:
    """Unit ``unit``'s new container was created and started under the original name."""

    unit: int = 0


@dataclass(frozen=True)
class SwapFailed:
    """Parking, creating or starting failed half-way; undo it."""

    reason: str
    blame_image: bool = False
    unit: int = 0


@dataclass(frozen=True)
class Healthy:
    """Unit ``unit`` (of ``units``) passed the health gate and the soak window."""

    unit: int = 0
    units: int = 1
    start_first: bool = False  # the old unit still runs: cut over first


@dataclass(frozen=True)
class Unhealthy:
    """Unit ``unit``'s new container failed the health gate."""

    reason: str
    unit: int = 0


@dataclass(frozen=True)
class Interrupted:
    """A stop was requested during verify: undo without blaming the image."""

    reason: str
    unit: int = 0


@dataclass(frozen=True)
class CutOver:
    """Start-first: the old unit is parked and the new one has its name."""

    unit: int = 0
    units: int = 1


@dataclass(frozen=True)
class Committed:
    """Every commit step ran: watch the committed version."""


@dataclass(frozen=True)
class WatchFailed:
    """A unit's new container died, restarted, turned unhealthy or failed its health URL
    for the health timeout during the watch: roll every unit back."""

    reason: str
    unit: int = 0
    units: int = 1


@dataclass(frozen=True)
class WatchSuspended:
    """A stop was requested during the watch: leave it journaled; whoever takes the lock
    next (a poll, a CLI command, the next start) resumes it."""


@dataclass(frozen=True)
class WatchEnded:
    """The watch passed (or is off) and the parked containers are gone."""


@dataclass(frozen=True)
class Unparked:
    """The previous container is back under its name and started."""


@dataclass(frozen=True)
class PreviousHealthy:
    """The restored previous container passed its health gate."""


@dataclass(frozen=True)
class RollbackFailed:
    """Restoring or verifying the previous container failed."""

    reason: str


Event = (Begin | Pulled | Prepared | PreDeployDone | PreDeployFailed | Aborted | Started
         | SwapFailed | Healthy | Unhealthy | Interrupted | CutOver | Committed | WatchFailed
         | WatchSuspended | WatchEnded | Unparked | PreviousHealthy | RollbackFailed)


# --------------------------------------------------------------------------- table
def _rollback(reason: str, quarantine: bool, unit: int,
              last: int | None = None) -> tuple[State, list[Command]]:
    """Quarantine (when the image is to blame), keep the failed unit's logs, put the
    previous tag back in ``.env``, then undo units ``last`` (default ``unit``) .. 0."""
    first: list[Command] = [Quarantine(reason)] if quarantine else []
    undo = undo_steps(unit if last is None else last)
    return State.ROLLBACK, [*first, SaveLogs(unit), RestoreEnv(), *undo]


def _after_healthy(event: Healthy) -> tuple[State, list[Command]]:
    if event.start_first:
        return State.CUTOVER, cutover_steps(event.unit)
    return _next_unit(event.unit, event.units, False)


def _next_unit(unit: int, units: int, start_first: bool) -> tuple[State, list[Command]]:
    if unit + 1 < units:
        return State.SWAP, swap_steps(unit + 1, start_first)
    return State.COMMIT, list(COMMIT_STEPS)


def _after_prepared(event: Prepared) -> tuple[State, list[Command]]:
    if event.pre_deploy:
        return State.PRE_DEPLOY, [RunPreDeploy()]
    return State.SWAP, swap_steps(0, event.start_first)


def _halt(reason: str) -> tuple[State, list[Command]]:
    return State.HALTED, [Alert(reason), Record(Outcome.HALTED, reason)]


def transition(state: State, event: Event) -> tuple[State, list[Command]]:
    """The whole deploy policy as a table. Raises ``IllegalTransition`` on a bug."""
    result = _next(state, event)
    if result is None:
        raise IllegalTransition(
            f"no transition from state {state.value} on event {type(event).__name__}")
    return result


def _next(state: State, event: Event) -> tuple[State, list[Command]] | None:
    if isinstance(event, Begin) and state in (State.IDLE, State.HALTED):
        return State.PULL, [Pull()]
    if isinstance(event, Aborted) and state in BEFORE_SWAP:
        return State.IDLE, [Record(event.outcome, event.reason)]
    if isinstance(event, SwapFailed) and state in (State.SWAP, State.CUTOVER):
        return _rollback(event.reason, event.blame_image, event.unit)
    if isinstance(event, CutOver) and state is State.CUTOVER:
        return _next_unit(event.unit, event.units, True)
    if isinstance(event, PreDeployDone) and state is State.PRE_DEPLOY:
        return State.SWAP, swap_steps(0, event.start_first)
    if isinstance(event, RollbackFailed) and state in (State.ROLLBACK, State.VERIFY_PREVIOUS):
        return _halt(event.reason)
    if isinstance(event, Unhealthy) and state is State.VERIFY:
        return _rollback(event.reason, True, event.unit)
    if isinstance(event, Interrupted) and state is State.VERIFY:
        return _rollback(event.reason, False, event.unit)
    if isinstance(event, WatchFailed) and state is State.WATCH:
        return _rollback(event.reason, True, event.unit, max(event.units - 1, event.unit))
    if isinstance(event, Started) and state is State.SWAP:
        return State.VERIFY, [Verify(event.unit)]
    if isinstance(event, Healthy) and state is State.VERIFY:
        return _after_healthy(event)
    if isinstance(event, Prepared) and state is State.PREPARE:
        return _after_prepared(event)
    if isinstance(event, PreDeployFailed) and state is State.PRE_DEPLOY:
        return State.IDLE, [Quarantine(event.reason), Record(Outcome.ROLLED_BACK, event.reason)]
    simple: dict[tuple[State, type], tuple[State, list[Command]]] = {
        (State.PULL, Pulled): (State.PREPARE, [TakeSnapshot()]),
        (State.COMMIT, Committed): (State.WATCH, list(WATCH_STEPS)),
        (State.WATCH, WatchSuspended): (State.WATCH, []),
        (State.WATCH, WatchEnded): (State.IDLE, [Record(Outcome.DEPLOYED)]),
        (State.ROLLBACK, Unparked): (State.VERIFY_PREVIOUS, [VerifyPrevious()]),
        (State.VERIFY_PREVIOUS, PreviousHealthy): (State.IDLE, [Record(Outcome.ROLLED_BACK)]),
    }
    return simple.get((state, type(event)))
