"""What a poll or a deploy ended in, and the exit code each outcome means for the CLI.

docs/architecture.md lists which code path produces which outcome.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from twilight_agent.core.models import Release


class Outcome(str, enum.Enum):
    """How one cycle ended; ``exit_code`` is what ``twilight-agent`` returns for it.

    A ``str`` enum: it compares equal to, and serialises as, its value (``"deployed"``).
    """

    DEPLOYED = "deployed"  # the new version passed its gate and was committed
    UP_TO_DATE = "up_to_date"  # the candidate is what runs now
    PINNED_CURRENT = "pinned_current"  # the pinned tag runs; the track is not followed
    QUARANTINED = "quarantined"  # the candidate failed before; it is not tried again
    WAITING = "waiting"  # a new build waits: younger than the minimum age, or no window
    NOTHING_TO_DO = "nothing_to_do"  # stopped before the swap, or nothing applies
    ROLLED_BACK = "rolled_back"  # the new version failed; the previous one serves again
    HALTED = "halted"  # the rollback failed too; an operator is needed
    BUSY = "busy"  # another deploy holds the lock
    REGISTRY_ERROR = "registry_error"  # the registry gave no usable answer
    DOCKER_ERROR = "docker_error"  # the engine gave no usable answer
    ABORTED = "aborted"  # history only: stopped before the swap, the service untouched
    FAILED = "failed"  # history only: a step before the swap failed, the service untouched
    UNTRUSTED = "untrusted"  # its signature did not verify: quarantined, nothing pulled
    PROMOTED = "promoted"  # history only: the promote tag now points at this build

    def __str__(self) -> str:
        return str(self.value)

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]

    @property
    def changed_service(self) -> bool:
        """True when this outcome changed what runs (worth a log line every time)."""
        return self in (Outcome.DEPLOYED, Outcome.ROLLED_BACK)


_EXIT_CODES = {
    Outcome.DEPLOYED: 0, Outcome.UP_TO_DATE: 0, Outcome.PINNED_CURRENT: 0,
    Outcome.QUARANTINED: 0, Outcome.WAITING: 0, Outcome.NOTHING_TO_DO: 0, Outcome.ROLLED_BACK: 1,
    Outcome.HALTED: 4, Outcome.BUSY: 3, Outcome.REGISTRY_ERROR: 5, Outcome.DOCKER_ERROR: 5,
    Outcome.ABORTED: 0, Outcome.FAILED: 1, Outcome.UNTRUSTED: 1, Outcome.PROMOTED: 0,
}


@dataclass(frozen=True)
class CycleReport:
    """What one poll or one deploy did; ``exit_code`` is what the CLI returns."""

    outcome: Outcome
    exit_code: int
    deploy_id: str | None = None
    from_: Release | None = None
    to: Release | None = None
    reason: str = ""
    status_line: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"outcome": self.outcome.value, "exit_code": self.exit_code,
                "deploy_id": self.deploy_id, "from": release_dict(self.from_),
                "to": release_dict(self.to), "reason": self.reason}


def release_dict(r: Release | None) -> dict[str, str] | None:
    """``{tag, digest}`` as the state store, ``status --json`` and webhooks show a release."""
    return None if r is None else {"tag": r.tag, "digest": str(r.digest)}
