"""One finished deploy (or promotion) as the state store keeps it: ``HistoryRow``.

The row is built by ``recording.Recorder`` (a run) or ``promotion.Promoter`` (a
promotion), written by ``adapters/store.write_history`` alone, and read back by
``Store.history``. Its normalisation (empty texts, the ``timings`` JSON, ``verified`` as a
bool) lives here once; ``as_dict`` is the shape ``history --json`` prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twilight_agent.core.outcomes import Outcome

# The ``history`` table's columns, in the order ``history --json`` shows them.
HISTORY_COLUMNS = ("id", "started", "finished", "from_tag", "from_digest", "to_tag",
                   "to_digest", "outcome", "phase", "reason", "timings", "log_tail", "trigger",
                   "verified")
_TEXTS = ("reason", "log_tail", "trigger")


@dataclass(frozen=True)
class HistoryRow:
    """One finished deploy or promotion; ``phase`` is the furthest state it reached."""

    id: str
    started: str
    finished: str
    outcome: Outcome
    phase: str
    from_tag: str | None = None
    from_digest: str | None = None
    to_tag: str | None = None
    to_digest: str | None = None
    reason: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    log_tail: str = ""
    trigger: str = ""
    verified: bool | None = None  # None: verification is off

    @property
    def deployed(self) -> bool:
        """A deploy that passed its gate and was committed."""
        return self.outcome is Outcome.DEPLOYED

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape (``history --json``): every column, ``outcome`` as its value."""
        out = {k: getattr(self, k) for k in HISTORY_COLUMNS}
        out["outcome"], out["timings"] = self.outcome.value, dict(self.timings)
        return out

    def columns(self) -> list[Any]:
        """The values of ``HISTORY_COLUMNS`` as sqlite stores them."""
        out = self.as_dict()
        out["timings"] = json.dumps(out["timings"])
        return [out[k] for k in HISTORY_COLUMNS]

    @classmethod
    def from_columns(cls, values: Mapping[str, Any]) -> HistoryRow:
        """A stored row (a column an older store lacks reads as None)."""
        row: dict[str, Any] = {k: values.get(k) for k in HISTORY_COLUMNS}
        for key in _TEXTS:
            row[key] = row[key] or ""
        row["timings"] = json.loads(row["timings"] or "{}")
        row["outcome"] = Outcome(row["outcome"])
        if row["verified"] is not None:
            row["verified"] = bool(row["verified"])
        return cls(**row)
