"""The metrics the alert rules read (deploy/prometheus/twilight.rules.yml): the phase and
since when, the held build, the last successful poll, quarantines and dropped promotions,
and the settings the rules compare against."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.fakes import StepClock
from tests.unit.test_metrics import FIRST, NEW, ref, samples, value
from twilight_agent.adapters.notify.metrics import MetricsFile, Schedule
from twilight_agent.adapters.state.store import Store
from twilight_agent.core.events import (
    DeployFinished,
    HaltedAlert,
    PhaseChanged,
    Polled,
    Promoted,
    Quarantined,
    Started,
    Totals,
)
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome
from twilight_agent.status import totals

BUILD = Release("sha-2222222", Digest(NEW))


@pytest.fixture
def prom(tmp_path: Path) -> Path:
    return tmp_path / "twilight.prom"


def test_the_phase_and_since_when(prom: Path) -> None:
    clock = StepClock(wall=1000.0)
    sink = MetricsFile(prom, clock=clock)
    sink.write()
    assert value(prom, "twilight_phase", phase="IDLE") == 1
    r = ref("d1", FIRST, BUILD)
    for phase in ("PULL", "SWAP", "VERIFY", "COMMIT", "WATCH"):
        clock.epoch += 10
        sink.emit(PhaseChanged(r, phase, "", "", 1.0))
    got = samples(prom)
    assert [k for k in got if k[0] == "twilight_phase"] == [
        ("twilight_phase", (("phase", "WATCH"),))]  # one series: the phase now
    assert got[("twilight_phase_since_timestamp_seconds", ())] == 1050.0
    clock.epoch = 1400.0
    sink.emit(DeployFinished(r, Outcome.DEPLOYED, "WATCH", "", 400.0))
    assert value(prom, "twilight_phase", phase="IDLE") == 1
    assert value(prom, "twilight_phase_since_timestamp_seconds") == 1400.0


def test_halted_is_a_phase_that_a_refused_build_does_not_end(prom: Path) -> None:
    sink = MetricsFile(prom)
    r = ref("d1", FIRST, BUILD)
    sink.emit(HaltedAlert(r, "previous version unhealthy too"))
    sink.emit(DeployFinished(r, Outcome.HALTED, "VERIFY_PREVIOUS", "unhealthy", 1.0))
    assert value(prom, "twilight_phase", phase="HALTED") == 1
    sink.emit(DeployFinished(ref("d2", None, BUILD), Outcome.UNTRUSTED, "IDLE", "sig", 0.1))
    assert value(prom, "twilight_phase", phase="HALTED") == 1
    assert value(prom, "twilight_halted") == 1


def test_the_held_build_comes_and_goes_with_the_stores_hold(prom: Path) -> None:
    sink = MetricsFile(prom)
    held = Totals(hold="signature", hold_since="2026-12-06T10:00:00Z")
    sink.emit(Polled(Outcome.WAITING, held, 0.1))
    got = samples(prom)
    assert got[("twilight_held", (("kind", "signature"),))] == 1
    assert got[("twilight_held", (("kind", "downgrade"),))] == 0
    assert got[("twilight_held_since_timestamp_seconds", (("kind", "signature"),))] == \
        1_796_551_200.0
    # A poll that decides anything else: the store's hold is cleared, so is the gauge.
    sink.emit(Polled(Outcome.UP_TO_DATE, Totals(), 0.1))
    got = samples(prom)
    assert got[("twilight_held", (("kind", "signature"),))] == 0
    assert not [k for k in got if k[0] == "twilight_held_since_timestamp_seconds"]


def test_the_last_successful_poll_survives_a_restart_and_a_cli_write(prom: Path) -> None:
    clock = StepClock(wall=5000.0)
    sink = MetricsFile(prom, clock=clock)
    sink.emit(Started(Totals()))
    assert value(prom, "twilight_last_poll_success_timestamp_seconds") == 5000.0  # start
    clock.epoch = 5060.0
    sink.emit(Polled(Outcome.UP_TO_DATE, Totals(), 0.1))
    clock.epoch = 5120.0
    sink.emit(Polled(Outcome.REGISTRY_ERROR, Totals(), None))
    sink.emit(Polled(Outcome.DOCKER_ERROR, Totals(), 0.1))
    assert value(prom, "twilight_last_poll_success_timestamp_seconds") == 5060.0
    clock.epoch = 5180.0
    sink.emit(Polled(Outcome.BUSY, Totals(), None))  # a CLI deploy holds the lock: alive
    assert value(prom, "twilight_last_poll_success_timestamp_seconds") == 5180.0
    # Another process (a restart, or a CLI deploy) writes the same file.
    MetricsFile(prom, clock=StepClock(wall=9999.0)).emit(Started(Totals()))
    assert value(prom, "twilight_last_poll_success_timestamp_seconds") == 5180.0


def test_quarantines_and_promotions_are_counted(prom: Path) -> None:
    sink = MetricsFile(prom)
    sink.write()
    assert value(prom, "twilight_quarantines_total") == 0
    assert value(prom, "twilight_promotions_total", step="dropped") == 0  # there before
    sink.emit(Quarantined(ref("d1", FIRST, BUILD), "health gate failed"))
    sink.emit(Promoted("p1", "stable", BUILD, "dropped", None, "poll", "not verified"))
    sink.emit(Promoted("p2", "stable", BUILD, "promoted", None, "poll"))
    assert value(prom, "twilight_quarantines_total") == 1
    assert value(prom, "twilight_promotions_total", step="dropped") == 1
    assert value(prom, "twilight_promotions_total", step="promoted") == 1


def test_the_settings_the_rules_compare_against(prom: Path) -> None:
    MetricsFile(prom, schedule=Schedule(30.0, 120.0, 600.0)).write()
    assert value(prom, "twilight_poll_interval_seconds") == 30.0
    assert value(prom, "twilight_watch_seconds") == 120.0
    assert value(prom, "twilight_verify_grace_seconds") == 600.0


def test_totals_read_the_unfinished_deploy_and_the_hold(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    assert (totals(store).phase, totals(store).hold) == ("IDLE", None)
    store.set_meta(hold={"kind": "signature", "tag": BUILD.tag, "digest": NEW,
                         "reason": "no signature yet", "since": "2026-12-06T10:00:00Z"})
    store.journal("d1", "WATCH", "watching", {})
    t = totals(store)
    assert (t.phase, t.hold, t.hold_since) == ("WATCH", "signature", "2026-12-06T10:00:00Z")
    assert t.phase_since is not None
    # A restart mid-watch: the new process' file says WATCH from the journal's time.
    sink = MetricsFile(tmp_path / "twilight.prom")
    sink.emit(Started(t))
    assert value(tmp_path / "twilight.prom", "twilight_phase", phase="WATCH") == 1
