"""Agent faults: SIGKILL and SIGTERM at every step boundary, a lost or corrupted state
database, a lock file left behind by a dead agent.

``tests/integration/test_recovery.py`` kills the agent right *after* an engine call returns
(pull, park, create, start, remove, unpark, tag) and a moment into verify. Here the kill
lands right *after the journal row* of each step is written and *before* its side effect,
for every journaled step of a good deploy and of a rollback, so both sides of every
boundary are covered. The agent runs in a child process built from the real adapters.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from testbed.images import AppImage
from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, push, python_child
from twilight_agent import app
from twilight_agent.adapters.state.store import Store

pytestmark = pytest.mark.faults

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "5"}
GOOD_STEPS = ["Pull", "TakeSnapshot", "Park", "CreateNew", "StopParked", "StartNew", "Verify",
              "WriteEnv", "TagImage", "Prune", "Watch", "RemoveParked"]
BAD_STEPS = ["Quarantine", "SaveLogs", "RestoreEnv", "RemoveNew", "Unpark", "VerifyPrevious"]
PHASE_FIRST_STEPS = ["Pull", "TakeSnapshot", "Park", "Verify", "WriteEnv", "Watch",
                     "Quarantine", "VerifyPrevious"]

CHILD = r"""
import os, signal, sys
from pathlib import Path
from twilight_agent import app
from twilight_agent.settings import load_settings

settings = load_settings(Path(sys.argv[1]))
step, tag, sig = sys.argv[2], sys.argv[3], getattr(signal, sys.argv[4])
agent = app.build_agent(settings)
signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())  # what the CLI does
real = agent.store.journal

def journal(deploy_id, phase, name, payload):
    real(deploy_id, phase, name, payload)
    if name == step:
        os.kill(os.getpid(), sig)

agent.store.journal = journal
report = agent.deploy(tag)
print(report.outcome, flush=True)
"""


def run_child(site: Site, step: str, tag: str, sig: str) -> tuple[int, str, str]:
    proc = python_child(CHILD, site.tmp, str(site.write_config(**FAST)), step, tag, sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def recover(site: Site) -> None:
    """What the daemon (or the next CLI command) does at start-up."""
    agent = app.build_agent(site.settings(**FAST))
    try:
        agent.recover()
    finally:
        agent.close()


def status(site: Site) -> dict[str, Any]:
    """``twilight-agent status --json``, read in-process (a CLI run per step costs ~1 s)."""
    agent = app.build_agent(site.settings(**FAST))
    try:
        return agent.status()
    finally:
        agent.close()


def poll(site: Site) -> str:
    """The daemon's next poll (``main`` still names the bad build); returns its outcome."""
    agent = app.build_agent(site.settings(**FAST))
    try:
        return agent.poll_once().outcome
    finally:
        agent.close()


def held(site: Site, figures: Figures, bad: AppImage) -> None:
    """The bad build is quarantined, and the next poll does not deploy it again (counted
    from the engine's events and the history, not from what the poll reports)."""
    mark = figures.quarantined(site, bad.digest)
    outcome = poll(site)
    figures.quarantine_held(site, mark)
    assert outcome == "quarantined", outcome


def history(site: Site) -> list[dict[str, Any]]:
    return [r.as_dict() for r in Store(site.state_dir).history()]


def settled(site: Site, figures: Figures, versions: dict[str, AppImage]) -> str:
    """Healthy on one of ``versions``, nothing lost, nothing in flight; returns the version."""
    version = figures.service_ok(site, *versions)
    figures.nothing_lost(site)
    assert site.running_digest() == versions[version].digest
    assert site.inspect()["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    st = status(site)
    assert st["phase"] == "IDLE" and st["current"]["digest"] == versions[version].digest
    return version


def runs_what_the_row_says(site: Site, row: dict[str, Any], step: str) -> None:
    """The engine runs, under the target's name, the digest the history row says the
    service is on: the one deployed, or the one it came from when the deploy was undone
    (the container's own image, not the agent's word)."""
    on = row["to_digest"] if row["outcome"] == "deployed" else row["from_digest"]
    running = site.running_digest()
    assert running == on, (step, running, row)


def test_sigkill_after_the_journal_row_of_every_step(site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    bad = push(site, "bad", mode="exit")
    good = {"v1": v1, "v2": v2}
    running = "v1"
    for step in GOOD_STEPS + BAD_STEPS:
        if step in BAD_STEPS:
            target = bad
            if status(site)["quarantined"]:
                Store(site.state_dir).unquarantine(bad.sha_tag)  # the operator allows it
        else:
            target = good["v2" if running == "v1" else "v1"]
        code, out, err = run_child(site, step, target.sha_tag, "SIGKILL")
        figures.fault()
        figures.deploys()
        assert code == -signal.SIGKILL, (step, out, err)
        recover(site)
        running = settled(site, figures, good)
        row = history(site)[0]
        assert row["reason"].startswith("recovered at start-up"), (step, row)
        assert row["to_digest"] == target.digest
        if step in BAD_STEPS:
            assert row["outcome"] == "rolled_back", (step, row)
            assert [q["digest"] for q in status(site)["quarantined"]] == [bad.digest], step
            runs_what_the_row_says(site, row, step)
            held(site, figures, bad)
        elif step in ("Verify", *GOOD_STEPS[GOOD_STEPS.index("WriteEnv"):]):
            assert row["outcome"] == "deployed", (step, row)
            runs_what_the_row_says(site, row, step)
            assert site.env_tag() == target.sha_tag
        else:  # before the health gate: undone, and the good build is not blamed
            assert row["outcome"] in ("aborted", "rolled_back"), (step, row)
            runs_what_the_row_says(site, row, step)
            assert target.digest not in {q["digest"] for q in status(site)["quarantined"]}
    # the next deploy after all that goes through normally
    final = good["v2" if running == "v1" else "v1"]
    p = site.cli("deploy", final.sha_tag, **FAST)
    figures.deploys()
    assert p.returncode == 0, p.stderr
    settled(site, figures, {final.version: final})


def test_sigterm_at_every_phase_boundary_finishes_or_undoes(
        site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    bad = push(site, "bad", mode="exit")
    good = {"v1": v1, "v2": v2}
    running = "v1"
    for step in PHASE_FIRST_STEPS:
        target = bad if step in BAD_STEPS else good["v2" if running == "v1" else "v1"]
        if step in BAD_STEPS and status(site)["quarantined"]:
            Store(site.state_dir).unquarantine(bad.sha_tag)
        code, out, err = run_child(site, step, target.sha_tag, "SIGTERM")
        figures.fault()
        figures.deploys()
        assert code == 0, (step, out, err)  # stopped cleanly, not killed mid-phase
        running = settled(site, figures, good)
        row = history(site)[0]
        assert row["to_digest"] == target.digest, (step, row)
        if step in BAD_STEPS:
            assert row["outcome"] == "rolled_back", (step, row)
            runs_what_the_row_says(site, row, step)
            held(site, figures, bad)
        elif step in ("Pull", "TakeSnapshot"):
            assert row["outcome"] == "aborted", (step, row)  # before the swap: untouched
        elif step in ("Park", "Verify"):
            assert row["outcome"] == "rolled_back", (step, row)  # undone, not blamed
            assert target.digest not in {q["digest"] for q in status(site)["quarantined"]}
        else:
            assert row["outcome"] == "deployed", (step, row)  # the commit is finished
            runs_what_the_row_says(site, row, step)


def test_state_database_corrupted_is_recreated_from_docker(site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    assert site.cli("deploy", **FAST).returncode == 0
    new_id = site.inspect()["Id"]
    db = site.state_dir / "state.db"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.write_bytes(os.urandom(4096))
    figures.fault()
    p = site.cli("status", "--json")
    assert p.returncode == 0, p.stderr
    assert "state" in p.stderr and "recreated" in p.stderr, p.stderr  # a warning, once
    st = json.loads(p.stdout)
    assert st["current"]["digest"] == v2.digest and st["phase"] == "IDLE"
    aside = [f.name for f in site.state_dir.iterdir() if ".corrupt" in f.name]
    assert aside, "the damaged file is kept for the operator"
    assert site.inspect()["Id"] == new_id  # the service was not touched
    figures.service_ok(site, "v2")
    v3 = push(site, "v3")
    d = site.cli("deploy", **FAST)
    figures.deploys()
    assert d.returncode == 0, d.stderr
    assert site.running_digest() == v3.digest
    figures.service_ok(site, "v3")
    figures.nothing_lost(site)
    (row,) = site.history()
    assert row["from_digest"] == v2.digest and row["to_digest"] == v3.digest


def test_state_database_deleted_under_a_running_agent(site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    push(site, "v2")
    agent = app.build_agent(site.settings(**FAST))
    try:
        assert agent.poll_once().outcome == "deployed"
        figures.deploys()
        for f in site.state_dir.iterdir():
            if f.name.startswith("state.db"):
                f.unlink()
        figures.fault()
        v3 = push(site, "v3")
        report = agent.poll_once()
        figures.deploys()
        assert report.outcome == "deployed", report
        assert site.running_digest() == v3.digest
        assert site.inspect()["Id"] != old_id
        figures.service_ok(site, "v3")
        figures.nothing_lost(site)
        assert [r.to_digest for r in agent.store.history()] == [v3.digest]
    finally:
        agent.close()


HOLD_AND_DIE = r"""
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"%d\n" % os.getpid())
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_lock_file_left_by_a_dead_agent_does_not_block(site: Site, figures: Figures) -> None:
    site.run_app(push(site, "v1"))
    v2 = push(site, "v2")
    site.state_dir.mkdir(mode=0o700)
    lock = site.state_dir / "deploy.lock"
    proc = python_child(HOLD_AND_DIE, site.tmp, str(lock))
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and lock.exists()
    figures.fault()
    p = site.cli("deploy", **FAST)
    figures.deploys()
    assert p.returncode == 0, p.stderr
    assert site.running_digest() == v2.digest
    figures.service_ok(site, "v2")
    lock.write_text("4194303\n")  # a pid that cannot exist: still just a file
    figures.fault()
    assert site.cli("deploy", **FAST).returncode == 0
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
