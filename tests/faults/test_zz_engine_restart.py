"""dockerd stopped during a deploy: during the pull, the swap and verify, and for the
tag, remove and unpark steps of a commit and a rollback.

Pull, park, verify: ``twilight-agent deploy`` runs as a subprocess; when its journal
reaches the phase, the bed's engine is stopped (SIGTERM, every container stops with it)
and started again (``testbed.services.restart_engine``). Tag, remove, unpark: these steps
are over in milliseconds, so the agent runs in this process and the engine is stopped from
inside its journal write, after the step's row and before its engine call; it is started
again a moment later (the agent must wait for it), or only after the agent gave up (start-up
recovery must finish the rollback). The registry is a host process and stays up. What must
hold afterwards: the service healthy on the old or the new digest, no container or volume
data lost, nothing halted, the history saying what happened, no build blamed for the
outage, and a build that was bad not deployed again.

This file sorts last in the suite on purpose: the engine is shared by every test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testbed import services
from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, push
from twilight_agent import app
from twilight_agent.agent import Agent
from twilight_agent.core.tunables import Tunables

pytestmark = pytest.mark.faults

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "10"}


@pytest.mark.parametrize("step", ["Pull", "Park", "Verify"])
def test_engine_restarted_mid_deploy_ends_healthy_and_recorded(
        site: Site, figures: Figures, step: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", boot_delay=2 if step == "Verify" else 0)
    first = site.popen("deploy", **FAST)
    site.wait_journal(step, timeout=60, proc=first)
    t0 = time.monotonic()
    services.restart_engine()
    site.bed.docker.api.close()  # drop pooled connections to the engine that went away
    figures.fault()
    figures.deploys()
    figures.engine_outage(step)
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


class EngineAway:
    """Stop the bed's dockerd when ``agent`` journals ``step`` (the row is written, the
    step's engine call not made yet); start it again ``back_after`` seconds later from
    another thread, or only on ``back()`` when ``back_after`` is None."""

    def __init__(self, agent: Agent, step: str, back_after: float | None) -> None:
        self.step, self.back_after = step, back_after
        self.argv: list[str] = []
        self.starting: float | None = None  # when dockerd was being started again
        self.rows_after: list[tuple[str, float]] = []  # journal rows once it was stopped
        self._thread: threading.Thread | None = None
        self._real = agent.store.journal
        agent.store.journal = self.journal  # type: ignore[method-assign]

    def journal(self, deploy_id: str, phase: str, name: str, payload: dict[str, Any]) -> None:
        self._real(deploy_id, phase, name, payload)
        if self.argv:
            self.rows_after.append((name, time.monotonic()))
        elif name == self.step:
            self.argv = services.stop_engine()
            assert not services.engine_pings(), "dockerd still answers"
            if self.back_after is not None:
                self._thread = threading.Thread(target=self._back_later, daemon=True)
                self._thread.start()

    def _back_later(self) -> None:
        time.sleep(self.back_after or 0)
        self.back()

    def back(self) -> None:
        if self.argv and self.starting is None:
            self.starting = time.monotonic()
            services.start_engine_again(self.argv)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=120)
        self.back()  # whatever happened, the engine answers again for the next test


@pytest.fixture
def agents(site: Site) -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.close()
    site.bed.docker.api.close()  # pooled connections to the engine that went away


def quarantine_held(site: Site, figures: Figures, agents: list[Agent], digest: str) -> None:
    """The build the rollback quarantined is not deployed by the daemon's next poll."""
    mark = figures.quarantined(site, digest)
    agents.append(app.build_agent(site.settings(**FAST)))
    outcome = agents[-1].poll_once().outcome
    figures.quarantine_held(site, mark)
    assert outcome == "quarantined", outcome


@pytest.mark.parametrize(("step", "mode", "expect"), [
    ("TagImage", "good", "deployed"),      # commit: finished once the engine is back
    ("RemoveNew", "exit", "rolled_back"),  # rollback: finished, not halted
])
def test_engine_stopped_at_a_step_is_waited_for(
        site: Site, figures: Figures, agents: list[Agent], step: str, mode: str,
        expect: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", mode=mode)
    agents.append(app.build_agent(site.settings(**FAST)))
    away = EngineAway(agents[0], step, back_after=1.0)
    try:
        report = agents[0].poll_once()
    finally:
        away.join()
        site.bed.docker.api.close()
    figures.fault()
    figures.deploys()
    figures.engine_outage(step)
    assert away.argv, f"the deploy never reached {step}"
    # the step's engine call could not be made while dockerd was stopped: the agent waited,
    # and journaled its next step only once dockerd was being started again
    assert away.rows_after and away.starting is not None, away.rows_after
    assert away.rows_after[0][1] > away.starting, away.rows_after
    assert report.outcome == expect, report
    version = figures.service_ok(site, "v2" if expect == "deployed" else "v1", timeout=30)
    figures.nothing_lost(site)
    assert site.running_digest() == (v2 if version == "v2" else v1).digest
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == (expect, v2.digest), row
    quarantined = {q["digest"] for q in site.status()["quarantined"]}
    assert (v2.digest in quarantined) == (mode == "exit")  # the outage blames no build
    if expect == "deployed":  # the tag step was done, not skipped with a warning
        tags = site.bed.docker.images.get(site.inspect()["Image"]).tags
        assert f"{v2.ref}:{v2.sha_tag}" in tags, tags
    else:
        quarantine_held(site, figures, agents, v2.digest)


def test_engine_stopped_at_unpark_longer_than_the_wait_leaves_it_to_recovery(
        site: Site, figures: Figures, agents: list[Agent]) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", mode="exit")
    agents.append(app.build_agent(site.settings(**FAST), tunables=Tunables(engine_wait_s=1.0)))
    away = EngineAway(agents[0], "Unpark", back_after=None)
    try:
        report = agents[0].poll_once()
    finally:
        away.join()
        site.bed.docker.api.close()
    st = agents[0].status()
    figures.fault()
    figures.deploys()
    figures.engine_outage("Unpark")
    assert away.argv, "the rollback never reached Unpark"
    assert (report.outcome, report.exit_code) == ("docker_error", 5), report
    assert st["phase"] == "ROLLBACK" and not st["halted"], st
    agents.append(app.build_agent(site.settings(**FAST)))
    agents[-1].recover()  # the daemon's next start, the engine back
    figures.service_ok(site, "v1", timeout=30)
    figures.nothing_lost(site)
    assert site.running_digest() == v1.digest
    row = site.history()[0]
    assert row["outcome"] == "rolled_back" and row["reason"].startswith("recovered"), row
    quarantine_held(site, figures, agents, v2.digest)
