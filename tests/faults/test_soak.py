"""Soak: many deploys alternating good and bad builds in ONE agent process, the daemon's path
(``poll_once`` after CI moved ``main``), then: no leaked container, no image beyond the
retention rule, no leaked volume or file descriptor; RSS growth reported.

Every deploy is a new build: the registry gets a new image config (a new revision label,
so a new digest and a new ``sha-`` tag) on top of the same layers, which is what CI pushes
when only the commit changes. ``TWILIGHT_SOAK_DEPLOYS`` (read by this test only) sets how
many; the default fits the suite's time budget.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from testbed.images import AppImage
from tests.faults.conftest import Figures
from tests.integration.deploybed import Site, push
from twilight_agent import app

pytestmark = pytest.mark.faults

DEPLOYS = int(os.environ.get("TWILIGHT_SOAK_DEPLOYS", "12"))
REVISION = "org.opencontainers.image.revision"


class Builds:
    """New builds of a pushed image, made in the registry without building anything."""

    def __init__(self, site: Site, base: AppImage) -> None:
        self.raw, self.repo = site.bed.raw, site.repo
        body, self.media_type, _ = self.raw.get_manifest(self.repo, base.sha_tag)
        self.manifest = json.loads(body)
        self.config = json.loads(self.raw.get_blob(self.repo, self.manifest["config"]["digest"]))

    def new(self) -> tuple[str, str]:
        """Push a new build as ``sha-<7>`` and ``main``; return (tag, digest)."""
        self.raw._tokens.clear()  # the bed's tokens live 5 minutes; a long soak outlives them
        revision = secrets.token_hex(20)
        config = json.loads(json.dumps(self.config))
        config["config"]["Labels"][REVISION] = revision
        blob = json.dumps(config).encode()
        manifest = dict(self.manifest, config={**self.manifest["config"], "size": len(blob),
                                               "digest": self.raw.put_blob(self.repo, blob)})
        body = json.dumps(manifest).encode()
        tag = "sha-" + revision[:7]
        digest = self.raw.put_manifest(self.repo, tag, body, self.media_type)
        self.raw.put_manifest(self.repo, "main", body, self.media_type)
        return tag, digest


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def volumes_of(info: dict[str, Any]) -> set[str]:
    return {m["Name"] for m in info["Mounts"] if m["Type"] == "volume"}


def test_soak_alternating_good_and_bad_builds(site: Site, figures: Figures) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    good, bad = Builds(site, push(site, "v2")), Builds(site, push(site, "bad", mode="exit"))
    initial_volumes = volumes_of(site.inspect())
    settings = site.settings(HEALTH_INTERVAL="0.2", HEALTH_SOAK="0.5", HEALTH_TIMEOUT="5",
                             PRUNE_AFTER="1s")
    agent = app.build_agent(settings)
    d = site.bed.docker
    outcomes: dict[str, int] = {}
    times: list[float] = []
    fd0 = rss0 = 0
    deployed: list[str | None] = [v1.digest]
    last_bad: str | None = None
    try:
        for i in range(DEPLOYS):
            if i == 2:  # after warm-up: clients and pools are open
                fd0, rss0 = fds(), rss_kib()
            is_bad = i % 2 == 1
            tag, digest = (bad if is_bad else good).new()
            t0 = time.monotonic()
            report = agent.poll_once()
            times.append(time.monotonic() - t0)
            figures.deploys()
            outcomes[report.outcome] = outcomes.get(report.outcome, 0) + 1
            assert report.outcome == ("rolled_back" if is_bad else "deployed"), (i, report)
            assert str(report.to.digest) == digest and report.to.tag == tag  # type: ignore[union-attr]
            if is_bad:
                figures.fault()
                mark = figures.quarantined(site, digest)
                again = agent.poll_once()  # main still points at the bad build
                figures.quarantine_held(site, mark)  # from the engine's events and history
                assert again.outcome == "quarantined", again
            else:
                assert site.running_digest() == digest
            figures.service_ok(site, "v2", timeout=3)
            assert site.containers() == [site.name], (i, site.containers())
            # the new container got the same volumes back: no new anonymous volume
            assert volumes_of(site.inspect()) == initial_volumes, i
            if deployed[-1] != site.running_digest():
                deployed.append(site.running_digest())
            last_bad = digest if is_bad else None
        fd1, rss1 = fds(), rss_kib()
    finally:
        agent.close()  # flushes the sinks, closes the registry and engine clients
    figures.nothing_lost(site)
    # Images: the retention rule keeps the current and the previous build (a commit
    # prunes the rest); a build rolled back last is still there until the next commit.
    left = {r.split("@", 1)[1] for i in d.images.list()
            for r in i.attrs.get("RepoDigests", []) if r.startswith(v1.ref + "@")}
    allowed = {*deployed[-2:], last_bad}  # current and previous, and the last rolled back
    n_images = len(left)
    ms = sorted(times)
    figures.note(f"soak: {DEPLOYS} deploys ({outcomes}) in {sum(times):.0f}s, per deploy "
                 f"median {ms[len(ms) // 2]:.2f}s max {ms[-1]:.2f}s; fds {fd0}->{fd1}; "
                 f"RSS {rss0 / 1024:.1f}->{rss1 / 1024:.1f} MiB "
                 f"({(rss1 - rss0) / 1024:+.1f}); {n_images} images of the repo left")
    assert left <= allowed, (left, allowed)
    assert fd1 <= fd0 + 1, (fd0, fd1)
    assert len(agent.store.quarantined()) == DEPLOYS // 2
