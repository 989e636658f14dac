"""Fixtures of the swarm tests: the bed's engine as a one-node swarm for this module.

These tests run only in the engine-26 lane (``scripts/test``): swarm mode is
engine-global, so the swarm is made for this directory and left at its end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.swarm.swarmbed import SwarmSite, one_node_swarm


@pytest.fixture(scope="package")
def swarm(bed) -> Iterator[str]:
    with one_node_swarm(bed.docker) as node:
        yield node


@pytest.fixture
def swarm_site(bed, swarm, private_repo, cleanup, tmp_path) -> Iterator[SwarmSite]:
    token = tmp_path / "registry-token"
    token.write_text(bed.password + "\n")
    token.chmod(0o600)
    s = SwarmSite(bed=bed, uid=cleanup, repo=private_repo, tmp=tmp_path,
                  config={"REGISTRY_USERNAME": bed.username,
                          "REGISTRY_PASSWORD_FILE": str(token)})
    yield s
    s.remove_service()
