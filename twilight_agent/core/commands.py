"""The commands of the deploy state machine (``machine.py``): what the runner does, one
step handler each (docs/architecture.md lists them), and the step lists transitions use.
No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from twilight_agent.core.outcomes import Outcome


@dataclass(frozen=True)
class Pull:
    """Pull ``repo@digest``; outside the service's life."""


@dataclass(frozen=True)
class TakeSnapshot:
    """Inspect the running container and its image."""


@dataclass(frozen=True)
class Park:
    """Restart policy ``no``, rename to ``<name>.twilight-prev`` (it keeps running)."""

    unit: int = 0


@dataclass(frozen=True)
class StopParked:
    """Stop the parked old container (start-first: after ``TWILIGHT_DRAIN``)."""

    unit: int = 0


@dataclass(frozen=True)
class CreateNew:
    """Create the new container from the snapshot's config: under the original name
    (stop-first), or as ``<name>.twilight-next`` beside the old one (start-first)."""

    unit: int = 0


@dataclass(frozen=True)
class Expose:
    """Start-first, gate passed: give the new container the old one's network aliases, so
    a proxy resolving them sends it requests (both serve until the old one stops)."""

    unit: int = 0


@dataclass(frozen=True)
class Promote:
    """Start-first: rename the new container to the original name."""

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


Command = (Pull | TakeSnapshot | RunPreDeploy | RemoveTask | Park | StopParked | CreateNew
           | StartNew | Verify | Expose | Promote | WriteEnv | TagImage | Prune | Watch
           | RemoveParked | Quarantine | SaveLogs | RestoreEnv | RemoveNew | Unpark
           | VerifyPrevious | Alert | Record)

COMMIT_STEPS: tuple[Command, ...] = (WriteEnv(), TagImage(), Prune())
WATCH_STEPS: tuple[Command, ...] = (Watch(), RemoveParked())


def swap_steps(unit: int, start_first: bool = False) -> list[Command]:
    """Stop-first: the old one is stopped only once the new one exists (the gap is stop +
    start + boot). Start-first: the old one keeps serving until CUTOVER."""
    if start_first:
        return [CreateNew(unit), StartNew(unit)]
    return [Park(unit), CreateNew(unit), StopParked(unit), StartNew(unit)]


def cutover_steps(unit: int) -> list[Command]:
    """Aliases to the new one first, then the old one out, then the name."""
    return [Expose(unit), Park(unit), StopParked(unit), Promote(unit)]


def undo_steps(unit: int) -> list[Command]:
    """Every unit from ``unit`` down to the first: remove the new, unpark the old."""
    steps: list[Command] = []
    for u in range(unit, -1, -1):
        steps += [RemoveNew(u), Unpark(u)]
    return steps
