"""Fixtures of the integration layer: an operator-run app container and its agent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.deploybed import Site
from tests.integration.proxybed import ProxySite


@pytest.fixture
def site(bed, repo, cleanup, tmp_path) -> Iterator[Site]:
    s = Site(bed=bed, uid=cleanup, repo=repo, tmp=tmp_path)
    yield s
    s.teardown()


@pytest.fixture
def proxy_site(bed, repo, cleanup, tmp_path) -> Iterator[ProxySite]:
    """A ``site`` whose app has no host port and sits behind nginx on its network."""
    s = ProxySite(bed=bed, uid=cleanup, repo=repo, tmp=tmp_path)
    yield s
    s.teardown()
