"""The fault-injection layer: shared fixtures, and the figures the suite prints at the end.

Every test records what it did into ``FIGURES`` (faults injected, deploys attempted) and
what it found (a service left unhealthy, a container or volume lost, a quarantined build
deployed again, a secret in a log line). The summary is printed after the run; the last
four must read 0, and each test asserts its own part so a non-zero figure is also a failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testbed.faultproxy import FaultProxy
from tests.integration.deploybed import Site

REPORT_ENV = "TWILIGHT_FAULTS_REPORT"  # optional: also write the figures there as JSON


@dataclass
class Figures:
    """The suite's collector. Tests add to it through the ``figures`` fixture."""

    faults_injected: int = 0
    deploys_attempted: int = 0
    services_left_unhealthy: int = 0
    containers_or_volumes_lost: int = 0
    bad_versions_redeployed_after_quarantine: int = 0
    secrets_seen_in_logs: int = 0
    tests: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def fault(self, n: int = 1) -> None:
        self.faults_injected += n

    def deploys(self, n: int = 1) -> None:
        self.deploys_attempted += n

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

    def secrets_in(self, text: str, secrets: list[str]) -> int:
        n = sum(text.count(s) for s in secrets if s)
        self.secrets_seen_in_logs += n
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
    s.remove_anonymous_volumes()


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
            ("secrets seen in logs (must be 0)", f.secrets_seen_in_logs),
            ("fault tests run", f.tests), ("their wall time (s)", round(f.seconds, 1))]
    for label, value in rows:
        tr.write_line(f"{label:<55} {value}")
    for note in f.notes:
        tr.write_line(f"  - {note}")
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(json.dumps(asdict(f), indent=2))
