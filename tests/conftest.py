"""Fixtures shared by every test layer.

``bed`` (session) brings up the real engine and the token-auth registry when they are not
running and tears down what it started. A test that needs them and cannot get them
*fails* with the reason; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from hypothesis import settings as hypothesis_settings

from testbed import engines, services
from testbed.images import AppImage, build_and_push
from testbed.rawclient import RawRegistry
from testbed.util import BedError, wait_until

__all__ = ["wait_until"]

# CI (CI=true) replays the same examples every run: a property test that finds a new input
# fails a developer's run, with the example printed, not a submission at random. Locally
# each run explores new inputs (and the example database keeps what failed).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@dataclass
class Bed:
    docker: docker.DockerClient
    raw: RawRegistry
    registry_url: str = services.REGISTRY_URL
    host: str = services.REGISTRY_HOST
    username: str = services.USERNAME
    password: str = services.PASSWORD

    def push(self, repo: str, **kw: Any) -> AppImage:
        return build_and_push(self.docker, repo, **kw)

    @property
    def auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


def pytest_report_header(config: pytest.Config) -> list[str]:
    want = engines.wanted() or "not set: the engine answering"
    return [f"engine lane ({engines.ENGINE_ENV}={want}): {engines.lane_line()}"]


@pytest.fixture(scope="session")
def bed(request: pytest.FixtureRequest) -> Iterator[Bed]:
    t0 = time.monotonic()
    workdir = services.DEFAULT_WORKDIR
    before = services.BedState.load(workdir)
    already = services.engine_answers() and services.registry_answers()
    try:
        state = services.up(workdir)
    except BedError as exc:
        pytest.fail(f"test bed unavailable: {exc}", pytrace=False)
    ours = not already and not (before and before.pids)
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"test bed ready in {time.monotonic() - t0:.1f}s "
                      f"({'started here' if ours else 'reused'}; {state.timings})")
    client = services.engine_client()
    raw = RawRegistry()
    yield Bed(docker=client, raw=raw)
    raw.close()
    client.close()
    if ours:
        services.down(workdir)


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """A short unique id for this test's containers, volumes, networks and repositories."""
    base = "".join(c for c in request.node.name.lower() if c.isalnum())[:16]
    return f"tw{base}{secrets.token_hex(3)}"


@pytest.fixture
def cleanup(bed: Bed, uid: str) -> Iterator[str]:
    """Yield ``uid``; afterwards remove every container, volume, network and image named
    with it (the agent's ``.twilight-prev`` parking name included)."""
    yield uid
    d = bed.docker
    for c in d.containers.list(all=True, filters={"name": uid}):
        with contextlib.suppress(docker.errors.APIError):
            c.remove(force=True, v=False)
    for v in d.volumes.list(filters={"name": uid}):
        with contextlib.suppress(docker.errors.APIError):
            v.remove(force=True)
    for n in d.networks.list(names=[uid]):
        with contextlib.suppress(docker.errors.APIError):
            n.remove()
    # The low-level list carries tags and digests itself: no per-image inspect that races
    # with images other tests remove meanwhile.
    for img in d.api.images():
        refs = (img.get("RepoTags") or []) + (img.get("RepoDigests") or [])
        if any(uid in r for r in refs):
            with contextlib.suppress(docker.errors.APIError):
                d.api.remove_image(img["Id"], force=True)


@pytest.fixture
def repo(cleanup: str) -> str:
    """A fresh public repository path in the bed's registry."""
    return f"bed/{cleanup}/app"


@pytest.fixture
def private_repo(cleanup: str) -> str:
    """A fresh private repository path (token endpoint demands credentials)."""
    return f"private/{cleanup}/app"
