"""dockerd restarted during a deploy: during the pull, during the swap, during verify.

``twilight-agent deploy`` runs as a subprocess; when its journal reaches the phase, the
bed's engine is stopped (SIGTERM, every container stops with it) and started again
(``testbed.services.restart_engine``). The registry is a host process and stays up. What
must hold afterwards, with a second ``deploy`` when the first one could not finish (exit
5: the engine was unreachable; recovery then finishes or undoes it): the service healthy
on the old or the new digest, no container or volume data lost, nothing halted, the
history saying what happened.

This file sorts last in the suite on purpose: the engine is shared by every test.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from testbed import services
from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, push

pytestmark = pytest.mark.faults

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "10"}


def journal_step(state_dir: Path) -> str | None:
    """The step the agent journaled last (None when nothing is in flight or no store yet)."""
    db = state_dir / "state.db"
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as c:
            row = c.execute("SELECT step FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


@pytest.mark.parametrize("step", ["Pull", "Park", "Verify"])
def test_engine_restarted_mid_deploy_ends_healthy_and_recorded(
        site: Site, figures: Figures, step: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", boot_delay=2 if step == "Verify" else 0)
    first = site.popen("deploy", **FAST)
    deadline = time.monotonic() + 60
    while journal_step(site.state_dir) != step:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, f"the deploy never reached {step}"
        time.sleep(0.01)
    t0 = time.monotonic()
    services.restart_engine()
    site.bed.docker.api.close()  # drop pooled connections to the engine that went away
    figures.fault()
    figures.deploys()
    _, err = first.communicate(timeout=300)
    codes = [first.returncode]
    if first.returncode == 5:  # the engine was away: the next deploy recovers first
        second = site.cli("deploy", **FAST, timeout=300)
        figures.deploys()
        codes.append(second.returncode)
        err += second.stderr
    rows = site.history()
    figures.note(f"dockerd restarted in {step}: deploy exit codes {codes}, back in "
                 f"{time.monotonic() - t0:.1f}s; {rows[0]['outcome'] if rows else '-'}: "
                 f"{(rows[0]['reason'] if rows else '')[:90]}")
    assert codes[-1] in (0, 1), (codes, err)
    version = figures.service_ok(site, "v1", "v2", timeout=30)
    figures.nothing_lost(site)
    assert site.running_digest() == (v2 if version == "v2" else v1).digest
    st = site.status()
    assert st["phase"] == "IDLE" and not st["halted"], st
    assert st["current"]["digest"] == site.running_digest()
    assert rows and rows[0]["outcome"] in ("deployed", "rolled_back", "aborted", "failed")
    # An engine restart is not the build's fault: it is never quarantined for it.
    assert v2.digest not in {q["digest"] for q in st["quarantined"]}, st["quarantined"]
