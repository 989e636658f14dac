"""The ``promotion`` table of the state store: one row per digest on its way to the
promote tag, its step (``core/promotion.py``) written before what it stands for."""

from __future__ import annotations

import sqlite3
from typing import Any

from twilight_agent.adapters.state.store import Store, write_history
from twilight_agent.core.clock import utcnow
from twilight_agent.core.history import HistoryRow
from twilight_agent.core.promotion import DROPPED, PROMOTED, PROMOTING, WAITING, Promotion

_COLUMNS = "id, digest, tag, to_tag, due, step, forced, reason"


def _row(r: sqlite3.Row | None) -> Promotion | None:
    if r is None:
        return None
    return Promotion(id=r["id"], digest=r["digest"], tag=r["tag"], to_tag=r["to_tag"],
                     due=float(r["due"]), step=r["step"], forced=bool(r["forced"]),
                     reason=r["reason"])


class PromotionStore:
    """Reads and writes promotions in the agent's ``Store`` (same file, same rules)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _one(self, where: str, *args: Any) -> Promotion | None:
        try:
            with self.store.transaction() as db:
                db.row_factory = sqlite3.Row
                return _row(db.execute(f"SELECT {_COLUMNS} FROM promotion WHERE {where} "  # noqa: S608
                                       "ORDER BY at DESC, rowid DESC LIMIT 1", args).fetchone())
        except sqlite3.OperationalError:  # a read-only store from before the table existed
            return None

    def for_digest(self, digest: str) -> Promotion | None:
        return self._one("digest = ?", digest)

    def in_flight(self) -> Promotion | None:
        """A promotion an agent began and did not finish (it stopped or died)."""
        return self._one("step = ?", PROMOTING)

    def latest(self) -> Promotion | None:
        return self._one("1 = 1")

    def put(self, p: Promotion) -> Promotion:
        """Record ``p`` unless its digest has a row already; return the stored one, so a
        restart keeps the deadline it had (a forced one replaces what was there)."""
        verb = "INSERT OR REPLACE" if p.forced else "INSERT OR IGNORE"
        with self.store.transaction() as db:
            db.execute(f"{verb} INTO promotion ({_COLUMNS}, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (p.id, p.digest, p.tag, p.to_tag, p.due, p.step, int(p.forced),
                        p.reason, utcnow()))
        stored = self.for_digest(p.digest)
        assert stored is not None
        return stored

    def mark(self, p: Promotion, step: str, reason: str = "") -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE promotion SET step = ?, reason = ?, at = ? WHERE id = ?",
                       (step, reason[:300], utcnow(), p.id))

    def drop_waiting(self, reason: str, keep: str | None = None,
                     in_flight: bool = False) -> None:
        """Every waiting promotion except ``keep``'s is dropped (another build runs now);
        ``in_flight``: unfinished ones too (an operator chose the tag's build)."""
        steps = (WAITING, PROMOTING if in_flight else WAITING)
        with self.store.transaction() as db:
            db.execute("UPDATE promotion SET step = ?, reason = ?, at = ? "
                       "WHERE step IN (?, ?) AND digest != ?",
                       (DROPPED, reason[:300], utcnow(), *steps, keep or ""))

    def finish(self, p: Promotion, row: HistoryRow) -> None:
        """The history row and the ``promoted`` step, in one transaction."""
        with self.store.transaction() as db:
            write_history(db, row)
            db.execute("UPDATE promotion SET step = ?, reason = ?, at = ? WHERE id = ?",
                       (PROMOTED, row.reason[:300], utcnow(), p.id))


__all__ = ["PROMOTING", "PromotionStore"]
