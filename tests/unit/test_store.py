"""The sqlite state store: journal, history, quarantine, meta; file permissions."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from twilight_agent.adapters.state.store import Store
from twilight_agent.core.history import HistoryRow
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import Halt, Meta
from twilight_agent.errors import InvalidInput

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def hrow(**kw: Any) -> HistoryRow:
    """A history row for a test: what it does not name is empty."""
    base: dict[str, Any] = {"id": "d", "started": "s", "finished": "f", "phase": "COMMIT"}
    base.update(kw)
    base["outcome"] = Outcome(base["outcome"])
    return HistoryRow(**base)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_files_are_private_and_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    store.quarantine(D1, "sha-aaaaaaa", "exited")
    assert mode(tmp_path / "state") == 0o700
    for f in (tmp_path / "state").iterdir():
        assert mode(f) == 0o600, f
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_journal_is_open_until_the_history_row_closes_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.open_journal() is None
    store.journal("d1", "SWAP", "Park", {"snapshot": {"name": "app"}, "to": None})
    store.journal("d1", "VERIFY", "Verify", {"snapshot": {"name": "app"}, "new_cid": "c2"})
    open_ = store.open_journal()
    assert open_ is not None
    assert open_.phase == "VERIFY" and open_.payload["new_cid"] == "c2"
    store.finish(hrow(id="d1", started="t0", finished="t1", outcome="deployed",
                       phase="COMMIT", to_digest=D2, from_digest=D1,
                       timings={"VERIFY": 1.5}), Meta(current=Release("x", Digest(D2))))
    assert store.open_journal() is None
    (row,) = store.history()
    assert row.outcome == "deployed" and row.timings == {"VERIFY": 1.5}
    assert store.meta().current == Release("x", Digest(D2))


def test_meta_is_typed_and_a_halt_is_cleared_only_when_asked(tmp_path: Path) -> None:
    store = Store(tmp_path)
    row = {"started": "s", "finished": "f", "outcome": "halted", "phase": "HALTED"}
    store.finish(hrow(id="d1", **row), Meta(halted=Halt(D2, "previous exited", "d1")))
    assert store.meta().halted == Halt(D2, "previous exited", "d1")
    store.finish(hrow(**{**row, "id": "d2", "outcome": "failed"}), Meta())
    assert store.meta().halted is not None  # a failed pull does not end a halt
    store.finish(hrow(**{**row, "id": "d3", "outcome": "deployed"}), Meta(), clear_halt=True)
    assert store.meta().halted is None


def test_a_read_only_store_creates_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "state", readonly=True)
    assert store.quarantined() == [] and store.meta() == Meta()
    assert not (tmp_path / "state").exists()


def test_history_is_newest_first_and_limited(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for i in range(5):
        store.finish(hrow(id=f"d{i}", finished=f"2026-01-0{i + 1}", outcome="deployed"))
    assert [r.id for r in store.history(3)] == ["d4", "d3", "d2"]


def test_quarantine_by_digest_short_digest_or_tag(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.quarantine(D1, "sha-aaaaaaa", "http 500")
    store.quarantine(D2, "sha-bbbbbbb", "exited")
    assert store.is_quarantined(D1)
    assert [q.digest for q in store.unquarantine("sha-aaaaaaa")] == [D1]
    assert [q.digest for q in store.unquarantine("b" * 64)] == [D2]
    assert store.quarantined() == []
    with pytest.raises(InvalidInput, match="not quarantined"):
        store.unquarantine(D1)


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.journal(f"d{n}", "PULL", "Pull", {"i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
        rows = db.execute("SELECT deploy_id, payload FROM journal ORDER BY seq").fetchall()
    # every write landed once, none lost or doubled, each thread's in the order it wrote them
    assert len(rows) == 4 * 20
    written = {f"d{n}": [json.loads(p)["i"] for d, p in rows if d == f"d{n}"] for n in range(4)}
    assert written == {f"d{n}": list(range(20)) for n in range(4)}


def _open_and_read(path: str, start: Any, errors: Any) -> None:
    try:
        start.wait(5)
        Store(Path(path)).history(1)
    except BaseException as exc:  # pragma: no cover - reported by the parent
        errors.put(f"{type(exc).__name__}: {exc}")


def test_processes_that_open_a_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    """``deploy`` and ``status`` started together both create the file: neither fails.

    Before the fix about one round in twenty-five had one process answered "database is
    locked" at once (both held a shared lock and wanted the exclusive one for WAL).
    """
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for n in range(60):
        start = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_and_read, args=(str(tmp_path / str(n)), start, errors))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    found = []
    while not errors.empty():
        found.append(errors.get(timeout=1))
    assert found == []
    with contextlib.closing(sqlite3.connect(tmp_path / "0" / "state.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
