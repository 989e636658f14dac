"""The fault-injection layer: shared fixtures, and the figures the suite prints at the end.

Every test records what it did into ``FIGURES`` (faults injected, deploys attempted) and
what it found (a service left unhealthy, a container or volume lost, a quarantined build
deployed again, a secret in a log line, a state file, a webhook body or the metrics file).
The summary is printed after the run; the figures marked "must be 0" must read 0, and each
test asserts its own part so a non-zero figure is also a failure.

A quarantined build deployed again is counted from what the engine ran and what the
history holds, never from the agent's report: ``figures.quarantined(site, digest)`` marks
the moment the build was quarantined, ``figures.quarantine_held(site, mark)`` (after the
agent had every chance to deploy it again) counts the containers the engine created from
that image since (its ``create`` events) and the history rows deploying it written since.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from testbed.faultproxy import FaultProxy
from tests.integration.deploybed import Site

REPORT_ENV = "TWILIGHT_FAULTS_REPORT"  # optional: also write the figures there as JSON


@dataclass(frozen=True)
class QuarantineMark:
    """A build the agent quarantined, and where the engine and the history stood then."""

    digest: str
    refs: frozenset[str]  # what the engine may name the image by in a create event
    since: float  # unix time; the engine runs on this host's clock
    rows: int  # history rows deploying the digest (outcome aside) at that moment


def state_rows(site: Site, sql: str, *args: str) -> list[tuple[Any, ...]]:
    """Rows of the agent's state database, read as an operator would (sqlite3)."""
    with contextlib.closing(sqlite3.connect(site.state_dir / "state.db", timeout=5)) as db:
        return list(db.execute(sql, args))


def history_rows_to(site: Site, digest: str) -> int:
    """History rows of deploys to ``digest``, whatever their outcome."""
    return int(state_rows(site, "SELECT COUNT(*) FROM history WHERE to_digest = ?", digest)[0][0])


def containers_created_from(site: Site, mark: QuarantineMark) -> list[str]:
    """Names of the site's containers the engine created from the marked image since the
    mark (its event log: a container created and removed again still counts)."""
    api = site.bed.docker.api
    events = api.events(since=f"{mark.since:.9f}", until=f"{time.time() + 0.5:.9f}",
                        filters={"type": "container", "event": "create"}, decode=True)
    found = []
    for ev in events:
        attrs = ev.get("Actor", {}).get("Attributes", {})
        image, name = attrs.get("image", ""), attrs.get("name", "")
        after = int(ev.get("timeNano", 0)) > mark.since * 1e9
        if after and site.uid in name and (image in mark.refs or mark.digest in image):
            found.append(name)
    return found


@dataclass
class Figures:
    """The suite's collector. Tests add to it through the ``figures`` fixture."""

    faults_injected: int = 0
    deploys_attempted: int = 0
    services_left_unhealthy: int = 0
    containers_or_volumes_lost: int = 0
    bad_versions_redeployed_after_quarantine: int = 0
    secrets_seen: int = 0
    secret_places: list[str] = field(default_factory=list)  # where the scan looked
    quarantine_checks: int = 0
    engine_outage_steps: list[str] = field(default_factory=list)  # dockerd really stopped
    watch_kills: int = 0  # the agent SIGKILLed during the watch after commit
    watches_lost: int = 0  # ... and start-up did not resume or finish it
    tests: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def fault(self, n: int = 1) -> None:
        self.faults_injected += n

    def deploys(self, n: int = 1) -> None:
        self.deploys_attempted += n

    def engine_outage(self, step: str) -> None:
        """dockerd was really stopped while the agent was at ``step``."""
        self.engine_outage_steps.append(step)

    def watch_resumed(self, site: Site, ok: bool) -> None:
        """After a kill during the watch, start-up resumed or finished it (or did not)."""
        self.watch_kills += 1
        if not ok:
            self.watches_lost += 1
            raise AssertionError(f"the watch of {site.name} was lost: {site.history()[:1]}")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def service_ok(self, site: Site, *versions: str, timeout: float = 10) -> str:
        """The service answers one of ``versions`` within ``timeout``; recorded, then asserted."""
        deadline = time.monotonic() + timeout
        got = site.serving()
        while got not in {f"ok {v}" for v in versions} and time.monotonic() < deadline:
            time.sleep(0.2)
            got = site.serving()
        if got not in {f"ok {v}" for v in versions}:
            self.services_left_unhealthy += 1
            raise AssertionError(f"{site.url} answers {got!r}, expected one of {versions}")
        return got.split(" ", 1)[1]

    def nothing_lost(self, site: Site) -> None:
        """One container under the original name, nothing parked, both volumes' data there."""
        names = site.containers()
        ok = names == [site.name]
        try:
            ok = ok and site.data_intact()
        except Exception:
            ok = False
        if not ok:
            self.containers_or_volumes_lost += 1
            raise AssertionError(f"containers {names}: expected only {site.name} with its data")

    def quarantined(self, site: Site, digest: str) -> QuarantineMark:
        """Mark the moment ``digest`` is quarantined (asserted against the agent's store)."""
        assert state_rows(site, "SELECT digest FROM quarantine WHERE digest = ?", digest), digest
        refs = {digest, f"{site.bed.host}/{site.repo}@{digest}"}
        with contextlib.suppress(docker.errors.NotFound):  # its local id, if still there
            refs.add(site.bed.docker.api.inspect_image(
                f"{site.bed.host}/{site.repo}@{digest}")["Id"])
        return QuarantineMark(digest, frozenset(refs), time.time(), history_rows_to(site, digest))

    def quarantine_held(self, site: Site, mark: QuarantineMark) -> None:
        """Nothing deployed the marked build again: no container created from it since the
        mark, no history row deploying it since. Counted, then asserted."""
        created = containers_created_from(site, mark)
        rows = history_rows_to(site, mark.digest) - mark.rows
        n = max(len(created), rows)  # one redeploy shows up in both
        self.bad_versions_redeployed_after_quarantine += n
        self.quarantine_checks += 1
        assert n == 0, (f"quarantined {mark.digest[:19]} deployed again: containers "
                        f"{created}, {rows} new history rows")

    def secrets_in(self, where: str, text: str, secrets: list[str]) -> int:
        """Occurrences of ``secrets`` in ``text`` (what was found at ``where``): counted."""
        n = sum(text.count(s) for s in secrets if s)
        self.secrets_seen += n
        if where not in self.secret_places:
            self.secret_places.append(where)
        return n


FIGURES = Figures()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    t0 = time.monotonic()
    yield FIGURES
    FIGURES.tests += 1
    FIGURES.seconds += time.monotonic() - t0


@pytest.fixture
def site(bed: Any, repo: str, cleanup: str, tmp_path: Path) -> Iterator[Site]:
    s = Site(bed=bed, uid=cleanup, repo=repo, tmp=tmp_path)
    yield s
    s.teardown()


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy() as p:
        yield p


def pytest_terminal_summary(terminalreporter: Any) -> None:
    f = FIGURES
    if not f.tests:
        return
    tr = terminalreporter
    tr.section("fault-injection summary")
    rows = [("faults injected", f.faults_injected), ("deploys attempted", f.deploys_attempted),
            ("services left unhealthy (must be 0)", f.services_left_unhealthy),
            ("containers or volumes lost (must be 0)", f.containers_or_volumes_lost),
            ("bad versions redeployed after quarantine (must be 0)",
             f.bad_versions_redeployed_after_quarantine),
            ("  quarantines checked (engine events + history)", f.quarantine_checks),
            ("secrets seen (must be 0)", f.secrets_seen),
            ("  places scanned for secrets", ", ".join(f.secret_places) or "none"),
            ("agent killed during the watch after commit", f.watch_kills),
            ("  watches not resumed or finished at start-up (must be 0)", f.watches_lost),
            ("steps run with dockerd stopped",
             ", ".join(dict.fromkeys(f.engine_outage_steps)) or "none"),
            ("fault tests run", f.tests), ("their wall time (s)", round(f.seconds, 1))]
    for label, value in rows:
        tr.write_line(f"{label:<55} {value}")
    for note in f.notes:
        tr.write_line(f"  - {note}")
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(json.dumps(asdict(f), indent=2))
