"""The metrics textfile: what node_exporter's textfile collector would read after events."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.fakes import StepClock
from twilight_agent.adapters.notify.metrics import MetricsFile
from twilight_agent.core.events import (
    DeployFinished,
    DeployRef,
    HaltedAlert,
    Held,
    PhaseChanged,
    Polled,
    Promoted,
    Recovering,
    RegistryFailed,
    Totals,
)
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome

OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64
BAD = "sha256:" + "3" * 64
FIRST = Release("sha-1111111", Digest(OLD))


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` as the official parser reads the file."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(path: Path, name: str, **labels: str) -> float:
    return samples(path)[(name, tuple(sorted(labels.items())))]


def ref(deploy_id: str, from_: Release | None, to: Release | None) -> DeployRef:
    return DeployRef(deploy_id, from_, to, "poll")


def deployed(sink: MetricsFile, deploy_id: str, tag: str, digest: str, rev: str) -> None:
    r = ref(deploy_id, FIRST, Release(tag, Digest(digest), revision=rev))
    sink.emit(PhaseChanged(r, "VERIFY", "SWAP", "started", 1.0))
    sink.emit(DeployFinished(r, Outcome.DEPLOYED, "COMMIT", "", 20.0))


def polled(duration_s: float | None, totals: Totals | None = None) -> Polled:
    return Polled(Outcome.UP_TO_DATE, totals or Totals(), duration_s)


@pytest.fixture
def prom(tmp_path: Path) -> Path:
    return tmp_path / "textfile" / "twilight.prom"


def test_write_at_start_shows_zeros(prom: Path) -> None:
    prom.parent.mkdir()
    MetricsFile(prom).write()
    assert value(prom, "twilight_rollbacks_total") == 0
    assert value(prom, "twilight_registry_errors_total") == 0
    assert value(prom, "twilight_halted") == 0
    assert value(prom, "twilight_poll_duration_seconds_count") == 0


def test_a_deploy_a_rollback_and_polls(prom: Path) -> None:
    prom.parent.mkdir()
    sink = MetricsFile(prom, clock=StepClock(wall=1_700_000_000.0))
    deployed(sink, "d1", "sha-2222222", NEW, "2" * 40)

    assert value(prom, "twilight_deploys_total", outcome="deployed") == 1
    assert value(prom, "twilight_last_success_timestamp_seconds") == 1_700_000_000.0
    assert value(prom, "twilight_current_revision_info", tag="sha-2222222", digest=NEW,
                 revision="2" * 40) == 1

    # A bad build: the agent enters ROLLBACK (counted once even if it enters ROLLBACK
    # again for the same deploy, e.g. recovery after a restart) and finishes rolled back
    # to what was serving.
    bad = ref("d2", Release("sha-2222222", Digest(NEW)), Release("sha-3333333", Digest(BAD)))
    sink.emit(PhaseChanged(bad, "ROLLBACK", "VERIFY", "health gate failed", 5.0))
    sink.emit(PhaseChanged(bad, "ROLLBACK", "RECOVER", "resumed after restart", 0.0))
    sink.emit(DeployFinished(bad, Outcome.ROLLED_BACK, "VERIFY_PREVIOUS",
                             "health gate failed: http 500", 12.5))
    # The store agrees with what was counted: polls carrying its totals add nothing.
    totals = Totals({"deployed": 1, "rolled_back": 1}, "2023-11-14T22:13:20Z",
                    Release("sha-2222222", Digest(NEW)))
    for d in (0.2, 0.4, 3.0):
        sink.emit(polled(d, totals))
    sink.emit(polled(None, totals))  # the registry was not reached: no duration observed
    sink.emit(RegistryFailed("timeout"))

    got = samples(prom)
    assert got[("twilight_deploys_total", (("outcome", "deployed"),))] == 1
    assert got[("twilight_deploys_total", (("outcome", "rolled_back"),))] == 1
    assert got[("twilight_rollbacks_total", ())] == 1
    assert got[("twilight_registry_errors_total", ())] == 1
    assert got[("twilight_poll_duration_seconds_count", ())] == 3
    assert got[("twilight_poll_duration_seconds_sum", ())] == pytest.approx(3.6)
    assert got[("twilight_poll_duration_seconds_bucket", (("le", "0.25"),))] == 1
    assert got[("twilight_poll_duration_seconds_bucket", (("le", "5.0"),))] == 3
    # The previous version serves again: exactly one revision series, the old one.
    info = {k: v for k, v in got.items() if k[0] == "twilight_current_revision_info"}
    assert info == {("twilight_current_revision_info",
                     (("digest", NEW), ("revision", ""), ("tag", "sha-2222222"))): 1}
    # The failed deploy did not move the last success.
    assert got[("twilight_last_success_timestamp_seconds", ())] == 1_700_000_000.0


def test_halted_is_set_and_cleared_by_the_next_good_deploy(prom: Path) -> None:
    prom.parent.mkdir()
    sink = MetricsFile(prom)
    r = ref("d1", FIRST, Release("sha-3333333", Digest(BAD)))
    sink.emit(HaltedAlert(r, "previous version unhealthy too"))
    sink.emit(DeployFinished(r, Outcome.HALTED, "VERIFY_PREVIOUS",
                             "previous version unhealthy too", 40.0))
    assert value(prom, "twilight_halted") == 1
    assert value(prom, "twilight_deploys_total", outcome="halted") == 1
    deployed(sink, "d2", "sha-4444444", NEW, "4" * 40)
    assert value(prom, "twilight_halted") == 0


def test_file_is_replaced_atomically_and_readable_by_the_collector(prom: Path) -> None:
    prom.parent.mkdir()
    sink = MetricsFile(prom)
    sink.write()
    inode = prom.stat().st_ino
    sink.emit(RegistryFailed("timeout"))
    assert prom.stat().st_ino != inode  # a new file renamed over the old one
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644  # node_exporter can read it
    assert [p.name for p in prom.parent.iterdir()] == ["twilight.prom"]  # no temp files left


def test_readable_by_node_exporter_under_the_units_umask(prom: Path) -> None:
    prom.parent.mkdir()
    old = os.umask(0o077)  # the unit's UMask=
    try:
        MetricsFile(prom).write()
    finally:
        os.umask(old)
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644


def test_unwritable_path_never_raises_and_recovers(prom: Path) -> None:
    sink = MetricsFile(prom)  # the directory does not exist yet
    sink.emit(RegistryFailed("timeout"))
    deployed(sink, "d1", "sha-2222222", NEW, "")
    assert not prom.exists()
    prom.parent.mkdir()
    sink.emit(polled(0.1, Totals({"deployed": 1}, None, Release("sha-2222222", Digest(NEW)))))
    # Nothing was lost while the file could not be written.
    assert value(prom, "twilight_registry_errors_total") == 1
    assert value(prom, "twilight_deploys_total", outcome="deployed") == 1


def test_odd_events_are_ignored_without_a_write(prom: Path) -> None:
    prom.parent.mkdir()
    sink = MetricsFile(prom)
    build = Release("sha-3333333", Digest(BAD))
    sink.emit(Recovering("d1", "SWAP", "unpark"))
    # A hold reaches the file through the store's totals (restart-safe), not this event.
    sink.emit(Held(build, FIRST, "signature", "no signature yet"))
    sink.emit(Promoted("p1", "stable", build, "waiting", None, "poll"))
    assert not prom.exists()
    # A malformed event is logged, not raised into the agent, and writes nothing.
    sink.emit(polled("not a number"))  # type: ignore[arg-type]
    assert not prom.exists()
    assert os.listdir(prom.parent) == []


def test_build_sinks_wires_what_is_configured(prom: Path) -> None:
    from twilight_agent.adapters.notify.webhook import Webhook
    from twilight_agent.app import build_sinks
    from twilight_agent.settings import Settings

    image = "ghcr.io/lacatfly/twilight-drive"
    assert build_sinks(Settings(image=image)) == []
    sinks = build_sinks(Settings(image=image, metrics_file=prom,
                                 webhook_url="http://127.0.0.1:9/hook"))
    assert [type(s).__name__ for s in sinks] == ["MetricsFile", "Webhook"]
    assert isinstance(sinks[0], MetricsFile) and sinks[0].path == prom
    assert isinstance(sinks[1], Webhook) and sinks[1].image == image
    sinks[1].close()
