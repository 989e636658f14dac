"""The state store's port and the typed values it returns (``adapters/state/store.py`` implements
it over sqlite; ``core/ports.py`` re-exports these names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twilight_agent.core.history import HistoryRow
from twilight_agent.core.models import Release


@dataclass(frozen=True)
class QuarantineEntry:
    digest: str
    tag: str | None
    reason: str
    at: str  # ISO 8601 UTC


@dataclass(frozen=True)
class Halt:
    """Why the agent is HALTED: the digest the failed rollback was about."""

    digest: str | None
    reason: str
    deploy_id: str


@dataclass(frozen=True)
class LastResult:
    """The last finished deploy, as ``status`` shows it."""

    deploy_id: str
    outcome: str
    reason: str
    finished: str


@dataclass(frozen=True)
class Meta:
    """What serves, what served before, whether halted, the last result: the store's
    ``meta`` table, typed. ``None`` in an update means "clear" only for ``halted``."""

    current: Release | None = None
    previous: Release | None = None
    halted: Halt | None = None
    last_result: LastResult | None = None


@dataclass(frozen=True)
class JournalEntry:
    """The last journal row of an unfinished deploy."""

    deploy_id: str
    phase: str
    step: str
    payload: Mapping[str, Any]
    at: str


class StorePort(Protocol):
    """sqlite3 (WAL) in TWILIGHT_STATE_DIR: phase journal, history, quarantine, meta."""

    def quarantined(self) -> list[QuarantineEntry]: ...

    def is_quarantined(self, digest: str) -> bool: ...

    def quarantine(self, digest: str, tag: str | None, reason: str) -> None: ...

    def unquarantine(self, digest_or_tag: str) -> list[QuarantineEntry]: ...

    def first_seen(self, digest: str, tag: str | None, now: float) -> float: ...

    def mark_verified(self, digest: str, tag: str | None, by: str) -> None:
        """Record that ``digest``'s signature verified on this host."""
        ...

    def is_verified(self, digest: str) -> bool: ...

    def journal(self, deploy_id: str, phase: str, step: str,
                payload: Mapping[str, Any]) -> None:
        """Write one step of the deploy in flight, before the step's side effect."""
        ...

    def open_journal(self) -> JournalEntry | None: ...

    def finish(self, row: HistoryRow, meta: Meta, clear_halt: bool) -> None:
        """History row + meta + journal closed, in one transaction."""
        ...

    def history(self, n: int = 20) -> list[HistoryRow]: ...

    def outcome_counts(self) -> dict[str, tuple[int, str]]: ...

    def meta(self) -> Meta: ...

    def set_current(self, release: Release) -> None: ...

    def set_meta(self, **values: Any) -> None:
        """Small JSON values beside the typed meta (``hold``: the track's build held)."""
        ...

    def get_meta(self, key: str, default: Any = None) -> Any: ...
