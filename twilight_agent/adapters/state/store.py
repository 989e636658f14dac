"""State store: sqlite3 (WAL) in ``TWILIGHT_STATE_DIR``: journal, history, quarantine, meta.

- ``journal``: one row per step of the deploy in flight, written *before* its side effect
  (phase, step, payload JSON holding the snapshot of the old container). Rows of a deploy
  are deleted in the same transaction that writes its history row, so an open journal at
  start-up means a deploy was interrupted.
- ``history``: one row per finished deploy.
- ``quarantine``: digests that failed and are never deployed automatically.
- ``meta``: small JSON values (current/previous release, halted flag, last result).
- ``seen``: when the agent first saw a digest (``TWILIGHT_MIN_AGE``,
  ``TWILIGHT_VERIFY_GRACE``).
- ``verified``: digests whose signature this host verified, and by what (a rollback or a
  promotion takes only these, or verifies first).
- ``promotion``: one row per digest on its way to ``TWILIGHT_PROMOTE_TO``
  (``adapters/state/promotion_store.py``, steps in ``core/promotion.py``).

Each call opens its own connection, so threads can share one ``Store``. The directory is
created 0700 and the database files are 0600. A file that is not a database (damaged,
overwritten) is moved aside as ``state.db.corrupt-<time>`` and a deleted one is created
again, each with a ``state_store_recreated`` warning: the agent then reads the running
version from Docker, as on a first start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twilight_agent.adapters.state.lock import ensure_state_dir
from twilight_agent.core.clock import SYSTEM, stamp, utcnow
from twilight_agent.core.history import HISTORY_COLUMNS, HistoryRow
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import release_dict
from twilight_agent.core.ports import Halt, JournalEntry, LastResult, Meta, QuarantineEntry
from twilight_agent.errors import InvalidInput
from twilight_agent.logs import get_logger

log = get_logger("twilight.store")

DB_NAME = "state.db"
RECREATED = ("a new empty store: history and quarantine start over; the running version "
             "is read again from Docker")

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    deploy_id TEXT NOT NULL, phase TEXT NOT NULL, step TEXT NOT NULL,
    payload TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    id TEXT PRIMARY KEY, started TEXT NOT NULL, finished TEXT NOT NULL,
    from_tag TEXT, from_digest TEXT, to_tag TEXT, to_digest TEXT,
    outcome TEXT NOT NULL, phase TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    timings TEXT NOT NULL DEFAULT '{}', log_tail TEXT NOT NULL DEFAULT '',
    trigger TEXT NOT NULL DEFAULT '', verified INTEGER);
CREATE TABLE IF NOT EXISTS verified (
    digest TEXT PRIMARY KEY, tag TEXT, by TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    digest TEXT PRIMARY KEY, tag TEXT, reason TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (
    digest TEXT PRIMARY KEY, tag TEXT, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS promotion (
    id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, tag TEXT NOT NULL,
    to_tag TEXT NOT NULL, due REAL NOT NULL, step TEXT NOT NULL,
    forced INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '', at TEXT NOT NULL);
"""

_NO_META = Meta()


def _meta_values(meta: Meta, clear_halt: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if meta.current is not None:
        values["current"] = release_dict(meta.current)
    if meta.previous is not None:
        values["previous"] = release_dict(meta.previous)
    if meta.last_result is not None:
        values["last_result"] = dataclasses.asdict(meta.last_result)
    if meta.halted is not None:
        values["halted"] = dataclasses.asdict(meta.halted)
    elif clear_halt:
        values["halted"] = None
    return values


# Columns added after the first release, added to an older store when it is opened.
ADDED_COLUMNS = {"history": (("verified", "INTEGER"),)}


def write_history(db: sqlite3.Connection, row: HistoryRow) -> None:
    """The one writer of a history row (a deploy's or a promotion's), inside ``db``'s
    transaction."""
    db.execute(f"INSERT OR REPLACE INTO history ({', '.join(HISTORY_COLUMNS)}) "  # noqa: S608
               f"VALUES ({', '.join('?' * len(HISTORY_COLUMNS))})", row.columns())


def release_from(d: Any) -> Release | None:
    """A release from its stored ``{tag, digest}`` form; None when absent or unreadable."""
    if not isinstance(d, dict) or not d.get("digest"):
        return None
    try:
        return Release(tag=str(d.get("tag") or ""), digest=Digest(str(d["digest"])))
    except ValueError:
        return None


CREATE_TRIES = 40  # x CREATE_PAUSE_S: a creation race lasts milliseconds
CREATE_PAUSE_S = 0.05


class Store:
    """The StorePort implementation plus what the agent journals and records."""

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        self.path = Path(state_dir) / DB_NAME
        self.readonly = readonly  # ``check``: read what is there, create nothing
        self._ready = False
        self._init_lock = threading.Lock()  # threads share a Store: create it once

    # -- plumbing -------------------------------------------------------------------
    def _init(self) -> None:
        ensure_state_dir(self.path.parent)
        if self.path.is_symlink():
            raise InvalidInput(f"{self.path} is a symlink: refusing to open the state store "
                               "through it")
        if not self.path.exists():
            if self._ready:  # deleted under a running agent
                log.warning("state_store_recreated", path=str(self.path),
                            reason="the database file was deleted", effect=RECREATED)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._create_when_free()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # locked, I/O: not damage
                raise
            aside = self._set_aside()
            log.warning("state_store_recreated", path=str(self.path), reason=str(exc),
                        damaged_copy=str(aside), effect=RECREATED)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._create()
        for suffix in ("", "-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        self._ready = True

    def _create_when_free(self) -> None:
        """``_create``, tried again while another process is creating the same file.

        Two processes that open a new database at once (``deploy`` and ``status``) both
        hold a shared lock and want the exclusive one to switch it to WAL; sqlite answers
        one of them "database is locked" at once, without waiting its busy timeout.
        """
        for _ in range(CREATE_TRIES - 1):
            try:
                self._create()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                SYSTEM.sleep(CREATE_PAUSE_S)
        self._create()

    def _create(self) -> None:
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            db.commit()

    def _set_aside(self) -> Path:
        """Move a damaged database (and its WAL files) out of the way, for the operator."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp()}")
        for suffix in ("", "-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                os.replace(side, Path(str(aside) + suffix))
        return aside

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            if not self.path.exists():  # nothing recorded yet: an empty store in memory
                db = sqlite3.connect(":memory:")
                db.executescript(SCHEMA)
                return db
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        if not self._ready or not self.path.exists():
            with self._init_lock:
                if not self._ready or not self.path.exists():
                    self._init()
        return sqlite3.connect(self.path, timeout=10)

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One sqlite transaction, for the tables other modules keep (``promotion``)."""
        return self._db()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        db.row_factory = sqlite3.Row
        try:
            with db:  # one transaction: commit on success, roll back on error
                db.execute("PRAGMA synchronous=FULL")
                yield db
        finally:
            db.close()

    # -- quarantine (StorePort) -------------------------------------------------------
    def quarantined(self) -> list[QuarantineEntry]:
        with self._db() as db:
            rows = db.execute("SELECT digest, tag, reason, at FROM quarantine ORDER BY at")
            return [QuarantineEntry(r["digest"], r["tag"], r["reason"], r["at"]) for r in rows]

    def is_quarantined(self, digest: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM quarantine WHERE digest = ?",
                              (digest,)).fetchone() is not None

    def quarantine(self, digest: str, tag: str | None, reason: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO quarantine (digest, tag, reason, at) "
                       "VALUES (?, ?, ?, ?)", (digest, tag, reason, utcnow()))

    def first_seen(self, digest: str, tag: str | None, now: float) -> float:
        """When the track was first seen pointing at ``digest`` (epoch seconds): ``now``
        the first time, the recorded time after that (TWILIGHT_MIN_AGE)."""
        if self.readonly:  # ``check``: what is recorded, or "now" without writing it
            try:
                with self._db() as db:
                    row = db.execute("SELECT first_seen FROM seen WHERE digest = ?",
                                     (digest,)).fetchone()
            except sqlite3.OperationalError:  # a store from before the table existed
                return now
            return float(row["first_seen"]) if row else now
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO seen (digest, tag, first_seen) VALUES (?, ?, ?)",
                       (digest, tag, now))
            return float(db.execute("SELECT first_seen FROM seen WHERE digest = ?",
                                    (digest,)).fetchone()["first_seen"])

    # -- verified digests -------------------------------------------------------------
    def mark_verified(self, digest: str, tag: str | None, by: str) -> None:
        """Record that ``digest``'s signature verified (by a key or an identity)."""
        if self.readonly:  # ``check`` verifies too, and records nothing
            return
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO verified (digest, tag, by, at) "
                       "VALUES (?, ?, ?, ?)", (digest, tag, by, utcnow()))

    def is_verified(self, digest: str) -> bool:
        try:
            with self._db() as db:
                return db.execute("SELECT 1 FROM verified WHERE digest = ?",
                                  (digest,)).fetchone() is not None
        except sqlite3.OperationalError:  # a read-only store from before the table
            return False

    def unquarantine(self, digest_or_tag: str) -> list[QuarantineEntry]:
        """Remove entries whose digest (full, or without ``sha256:``) or tag matches."""
        key = digest_or_tag.strip()
        full = key if key.startswith("sha256:") else f"sha256:{key}"
        removed = [q for q in self.quarantined() if key in (q.digest, q.tag) or q.digest == full]
        if not removed:
            raise InvalidInput(f"{key[:80]!r} is not quarantined")
        with self._db() as db:
            db.executemany("DELETE FROM quarantine WHERE digest = ?",
                           [(q.digest,) for q in removed])
        return removed

    # -- journal ----------------------------------------------------------------------
    def journal(self, deploy_id: str, phase: str, step: str, payload: dict[str, Any]) -> None:
        """Write one step of the deploy in flight; call it before the step's side effect."""
        with self._db() as db:
            db.execute("INSERT INTO journal (deploy_id, phase, step, payload, at) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (deploy_id, phase, step, json.dumps(payload), utcnow()))

    def open_journal(self) -> JournalEntry | None:
        """The last journal row of an unfinished deploy, or None."""
        with self._db() as db:
            row = db.execute("SELECT deploy_id, phase, step, payload, at FROM journal "
                             "ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return JournalEntry(row["deploy_id"], row["phase"], row["step"],
                            json.loads(row["payload"]), row["at"])

    # -- history ----------------------------------------------------------------------
    def finish(self, row: HistoryRow, meta: Meta = _NO_META,
               clear_halt: bool = False) -> None:
        """Write the deploy's history row, update meta, close its journal: one transaction.
        Fields of ``meta`` that are None are left as they are; ``clear_halt`` clears it."""
        with self._db() as db:
            write_history(db, row)
            for key, value in _meta_values(meta, clear_halt).items():
                self._set(db, key, value)
            db.execute("DELETE FROM journal WHERE deploy_id = ?", (row.id,))

    def outcome_counts(self) -> dict[str, tuple[int, str]]:
        """``{outcome: (finished deploys, when the last one finished)}`` over all history
        (promotions, phase ``PROMOTE``, are not deploys)."""
        with self._db() as db:
            rows = db.execute("SELECT outcome, COUNT(*), MAX(finished) FROM history "
                              "WHERE phase != 'PROMOTE' GROUP BY outcome").fetchall()
        return {str(r[0]): (int(r[1]), str(r[2] or "")) for r in rows}

    def history(self, n: int = 20) -> list[HistoryRow]:
        """Finished deploys, newest first."""
        with self._db() as db:  # `*`: a read-only store may predate a column
            rows = db.execute("SELECT * FROM history ORDER BY finished DESC, rowid DESC "
                              "LIMIT ?", (max(n, 0),))
            return [HistoryRow.from_columns(dict(r)) for r in rows]

    # -- meta -------------------------------------------------------------------------
    @staticmethod
    def _set(db: sqlite3.Connection, key: str, value: Any) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   (key, json.dumps(value)))

    def set_meta(self, **values: Any) -> None:
        with self._db() as db:
            for key, value in values.items():
                self._set(db, key, value)

    def meta(self) -> Meta:
        """The ``meta`` table, typed."""
        with self._db() as db:  # one read: an idle poll asks for it more than once
            rows = db.execute("SELECT key, value FROM meta WHERE key IN "
                              "('current', 'previous', 'halted', 'last_result')").fetchall()
        values = {r["key"]: json.loads(r["value"]) for r in rows}
        halted, last = values.get("halted"), values.get("last_result")
        return Meta(current=release_from(values.get("current")),
                    previous=release_from(values.get("previous")),
                    halted=Halt(halted.get("digest"), str(halted.get("reason") or ""),
                                str(halted.get("deploy_id") or ""))
                    if isinstance(halted, dict) else None,
                    last_result=LastResult(**{k: str(last.get(k) or "") for k in (
                        "deploy_id", "outcome", "reason", "finished")})
                    if isinstance(last, dict) else None)

    def set_current(self, release: Release) -> None:
        self.set_meta(current=release_dict(release))

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._db() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])
