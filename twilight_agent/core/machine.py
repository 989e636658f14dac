"""The deploy state machine: ``transition(state, event) -> (state, [commands])``. No I/O.

::

    IDLE -> PULL -> PREPARE [-> PRE_DEPLOY] -> SWAP -> VERIFY -> COMMIT -> WATCH -> IDLE
                                   |             ^  unit i+1  |
                                   |             +------------+
                                   \\-> (task failed: quarantine) -> IDLE
            SWAP / VERIFY / WATCH -> ROLLBACK -> VERIFY_PREVIOUS -> IDLE
                                              \\-> HALTED (rollback failed)

A target is one unit (a container) or several (a compose service group, replicas): SWAP
and VERIFY repeat per unit in order, and a rollback undoes every swapped unit in reverse.

A run starts only after ``policy.decide`` said DEPLOY (the decision is not a state: an idle
poll never enters the machine). The runner journals each command before running it, runs
the commands in order through the ports, and feeds the event the first failing (or the
last) command produced back into ``transition``. A state/event pair not in the table is a
bug and raises ``IllegalTransition`` naming the state. docs/architecture.md draws it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twilight_agent.core.outcomes import Outcome


class State(enum.Enum):
    IDLE = "IDLE"  # nothing in flight; the service runs the recorded current version
    PULL = "PULL"  # pulling the new image by digest; the service is untouched
    PREPARE = "PREPARE"  # snapshotting the running container (config + image)
    PRE_DEPLOY = "PRE_DEPLOY"  # the one-off task (a migration) in the new image; nothing swapped
    SWAP = "SWAP"  # parking the old container, creating + starting the new one
    VERIFY = "VERIFY"  # health gate on the new container (probe, state, soak)
    COMMIT = "COMMIT"  # .env, local tag, prune (the parked container is kept)
    WATCH = "WATCH"  # the committed version watched for TWILIGHT_WATCH; then the parked goes
    ROLLBACK = "ROLLBACK"  # quarantine, keep logs, remove the new one, unpark the old one
    VERIFY_PREVIOUS = "VERIFY_PREVIOUS"  # health gate on the restored previous container
    HALTED = "HALTED"  # the rollback failed too; nothing deleted, an operator is needed


# States in which a container may be half-swapped: recovery must finish or undo them.
IN_FLIGHT = frozenset({State.SWAP, State.VERIFY, State.COMMIT, State.WATCH, State.ROLLBACK,
                       State.VERIFY_PREVIOUS})
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
    """The running target is snapshotted: ``units`` to swap, and whether a task runs first."""

    units: int = 1
    pre_deploy: bool = False


@dataclass(frozen=True)
class PreDeployDone:
    """The one-off task exited 0: swap the units."""


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
         | SwapFailed | Healthy | Unhealthy | Interrupted | Committed | WatchFailed
         | WatchSuspended | WatchEnded | Unparked | PreviousHealthy | RollbackFailed)


# --------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Pull:
    """Pull ``repo@digest``; outside the service's life."""


@dataclass(frozen=True)
class TakeSnapshot:
    """Inspect the running container and its image."""


@dataclass(frozen=True)
class Park:
    """Restart policy ``no``, stop, rename to ``<name>.twilight-prev``."""

    unit: int = 0


@dataclass(frozen=True)
class CreateNew:
    """Create the new container under the original name from the snapshot's config."""

    unit: int = 0


@dataclass(frozen=True)
class StartNew:
    """Start the new container."""

    unit: int = 0


@dataclass(frozen=True)
class Verify:
    """Run the health gate on the new container."""

    unit: int = 0


@dataclass(frozen=True)
class RunPreDeploy:
    """Run the one-off task in the new image with the first unit's env, networks and
    volumes (no ports, no aliases, no restart), wait for it, always remove it."""


@dataclass(frozen=True)
class RemoveTask:
    """Recovery: remove a one-off task container an interrupted run left behind."""


@dataclass(frozen=True)
class WriteEnv:
    """Rewrite ``IMAGE_TAG=`` in the compose ``.env`` (when configured)."""


@dataclass(frozen=True)
class TagImage:
    """Tag the pulled image locally as ``repo:sha-xxxxxxx``."""


@dataclass(frozen=True)
class Watch:
    """Watch the committed units for ``TWILIGHT_WATCH`` (deadline journaled; 0: no watch)."""


@dataclass(frozen=True)
class RemoveParked:
    """Remove the parked previous containers (their images are kept)."""


@dataclass(frozen=True)
class Prune:
    """Remove old images of the repository, never the current or previous one."""


@dataclass(frozen=True)
class Quarantine:
    """Quarantine the new digest (first thing a rollback does)."""

    reason: str


@dataclass(frozen=True)
class SaveLogs:
    """Keep the failed container's last log lines for the history row."""

    unit: int = 0


@dataclass(frozen=True)
class RestoreEnv:
    """Put the previous tag back in the compose ``.env`` if the commit wrote the new one."""


@dataclass(frozen=True)
class RemoveNew:
    """Force-remove the new container, keeping its volumes."""

    unit: int = 0


@dataclass(frozen=True)
class Unpark:
    """Rename the parked container back, restore its restart policy, start it."""

    unit: int = 0


@dataclass(frozen=True)
class VerifyPrevious:
    """Run the health gate on the restored previous container."""


@dataclass(frozen=True)
class Alert:
    """Tell every sink the service needs an operator."""

    reason: str


@dataclass(frozen=True)
class Record:
    """Write the history row, update current/previous, close the journal."""

    outcome: Outcome
    reason: str = ""


Command = (Pull | TakeSnapshot | RunPreDeploy | RemoveTask | Park | CreateNew | StartNew
           | Verify | WriteEnv | TagImage | Prune | Watch | RemoveParked | Quarantine
           | SaveLogs | RestoreEnv | RemoveNew | Unpark | VerifyPrevious | Alert | Record)

COMMIT_STEPS: tuple[Command, ...] = (WriteEnv(), TagImage(), Prune())
WATCH_STEPS: tuple[Command, ...] = (Watch(), RemoveParked())


def swap_steps(unit: int) -> list[Command]:
    return [Park(unit), CreateNew(unit), StartNew(unit)]


def undo_steps(unit: int) -> list[Command]:
    """Every unit from ``unit`` down to the first: remove the new, unpark the old."""
    steps: list[Command] = []
    for u in range(unit, -1, -1):
        steps += [RemoveNew(u), Unpark(u)]
    return steps


# --------------------------------------------------------------------------- table
def _rollback(reason: str, quarantine: bool, unit: int,
              last: int | None = None) -> tuple[State, list[Command]]:
    """Quarantine (when the image is to blame), keep the failed unit's logs, put the
    previous tag back in ``.env``, then undo units ``last`` (default ``unit``) .. 0."""
    first: list[Command] = [Quarantine(reason)] if quarantine else []
    undo = undo_steps(unit if last is None else last)
    return State.ROLLBACK, [*first, SaveLogs(unit), RestoreEnv(), *undo]


def _after_healthy(event: Healthy) -> tuple[State, list[Command]]:
    if event.unit + 1 < event.units:
        return State.SWAP, swap_steps(event.unit + 1)
    return State.COMMIT, list(COMMIT_STEPS)


def _after_prepared(event: Prepared) -> tuple[State, list[Command]]:
    if event.pre_deploy:
        return State.PRE_DEPLOY, [RunPreDeploy()]
    return State.SWAP, swap_steps(0)


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
    if isinstance(event, SwapFailed) and state is State.SWAP:
        return _rollback(event.reason, event.blame_image, event.unit)
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
        (State.PRE_DEPLOY, PreDeployDone): (State.SWAP, swap_steps(0)),
        (State.COMMIT, Committed): (State.WATCH, list(WATCH_STEPS)),
        (State.WATCH, WatchSuspended): (State.WATCH, []),
        (State.WATCH, WatchEnded): (State.IDLE, [Record(Outcome.DEPLOYED)]),
        (State.ROLLBACK, Unparked): (State.VERIFY_PREVIOUS, [VerifyPrevious()]),
        (State.VERIFY_PREVIOUS, PreviousHealthy): (State.IDLE, [Record(Outcome.ROLLED_BACK)]),
    }
    return simple.get((state, type(event)))
