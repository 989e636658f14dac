"""The deploy state machine: ``transition(state, event) -> (state, [commands])``. No I/O.

::

    IDLE -> PULL -> PREPARE -> SWAP -> VERIFY -> COMMIT -> IDLE
                                \\-> ROLLBACK -> VERIFY_PREVIOUS -> IDLE
                                             \\-> HALTED (rollback failed)

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
    SWAP = "SWAP"  # parking the old container, creating + starting the new one
    VERIFY = "VERIFY"  # health gate on the new container (probe, state, soak)
    COMMIT = "COMMIT"  # .env, local tag, remove the parked container, prune
    ROLLBACK = "ROLLBACK"  # quarantine, keep logs, remove the new one, unpark the old one
    VERIFY_PREVIOUS = "VERIFY_PREVIOUS"  # health gate on the restored previous container
    HALTED = "HALTED"  # the rollback failed too; nothing deleted, an operator is needed


# States in which a container may be half-swapped: recovery must finish or undo them.
IN_FLIGHT = frozenset({State.SWAP, State.VERIFY, State.COMMIT, State.ROLLBACK,
                       State.VERIFY_PREVIOUS})
# States in which the service has not been touched yet.
BEFORE_SWAP = frozenset({State.PULL, State.PREPARE})


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
    """The running container is snapshotted."""


@dataclass(frozen=True)
class Aborted:
    """A step before the swap failed or was stopped; the service was not touched."""

    reason: str
    outcome: Outcome = Outcome.FAILED


@dataclass(frozen=True)
class Started:
    """The new container was created and started under the original name."""


@dataclass(frozen=True)
class SwapFailed:
    """Parking, creating or starting failed half-way; undo it."""

    reason: str
    blame_image: bool = False


@dataclass(frozen=True)
class Healthy:
    """The new container passed the health gate and the soak window."""


@dataclass(frozen=True)
class Unhealthy:
    """The new container failed the health gate."""

    reason: str


@dataclass(frozen=True)
class Interrupted:
    """A stop was requested during verify: undo without blaming the image."""

    reason: str


@dataclass(frozen=True)
class Committed:
    """Every commit step ran."""


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


Event = (Begin | Pulled | Prepared | Aborted | Started | SwapFailed
         | Healthy | Unhealthy | Interrupted | Committed | Unparked | PreviousHealthy
         | RollbackFailed)


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


@dataclass(frozen=True)
class CreateNew:
    """Create the new container under the original name from the snapshot's config."""


@dataclass(frozen=True)
class StartNew:
    """Start the new container."""


@dataclass(frozen=True)
class Verify:
    """Run the health gate on the new container."""


@dataclass(frozen=True)
class WriteEnv:
    """Rewrite ``IMAGE_TAG=`` in the compose ``.env`` (when configured)."""


@dataclass(frozen=True)
class TagImage:
    """Tag the pulled image locally as ``repo:sha-xxxxxxx``."""


@dataclass(frozen=True)
class RemoveParked:
    """Remove the parked previous container (its image is kept)."""


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


@dataclass(frozen=True)
class RemoveNew:
    """Force-remove the new container, keeping its volumes."""


@dataclass(frozen=True)
class Unpark:
    """Rename the parked container back, restore its restart policy, start it."""


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


Command = (Pull | TakeSnapshot | Park | CreateNew | StartNew | Verify | WriteEnv
           | TagImage | RemoveParked | Prune | Quarantine | SaveLogs | RemoveNew | Unpark
           | VerifyPrevious | Alert | Record)

COMMIT_STEPS: tuple[Command, ...] = (WriteEnv(), TagImage(), RemoveParked(), Prune())
UNDO_STEPS: tuple[Command, ...] = (SaveLogs(), RemoveNew(), Unpark())


# --------------------------------------------------------------------------- table
def _rollback(reason: str, quarantine: bool) -> tuple[State, list[Command]]:
    first: list[Command] = [Quarantine(reason)] if quarantine else []
    return State.ROLLBACK, [*first, *UNDO_STEPS]


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
        return _rollback(event.reason, event.blame_image)
    if isinstance(event, RollbackFailed) and state in (State.ROLLBACK, State.VERIFY_PREVIOUS):
        return _halt(event.reason)
    if isinstance(event, Unhealthy) and state is State.VERIFY:
        return _rollback(event.reason, quarantine=True)
    if isinstance(event, Interrupted) and state is State.VERIFY:
        return _rollback(event.reason, quarantine=False)
    simple: dict[tuple[State, type], tuple[State, list[Command]]] = {
        (State.PULL, Pulled): (State.PREPARE, [TakeSnapshot()]),
        (State.PREPARE, Prepared): (State.SWAP, [Park(), CreateNew(), StartNew()]),
        (State.SWAP, Started): (State.VERIFY, [Verify()]),
        (State.VERIFY, Healthy): (State.COMMIT, list(COMMIT_STEPS)),
        (State.COMMIT, Committed): (State.IDLE, [Record(Outcome.DEPLOYED)]),
        (State.ROLLBACK, Unparked): (State.VERIFY_PREVIOUS, [VerifyPrevious()]),
        (State.VERIFY_PREVIOUS, PreviousHealthy): (State.IDLE, [Record(Outcome.ROLLED_BACK)]),
    }
    return simple.get((state, type(event)))
