"""Fixtures of the fleet tests: four nodes, each its own dockerd 26 in its own network
namespace (``testbed.fleet``), made for this directory and taken down at its end, with a
check that nothing of them is left (no namespace, interface, mount or process).

These tests run in the engine-26 lane only (``scripts/test``): the nodes run engine 26.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testbed import fleet
from testbed.util import BedError

NODES = 4


@pytest.fixture(scope="package")
def nodes(bed: Any) -> Iterator[list[fleet.Node]]:
    fleet.down()  # what an interrupted earlier run may have left
    try:
        ns = fleet.up(NODES)
    except BedError as exc:
        left = fleet.down()
        pytest.fail(f"fleet unavailable: {exc} (left: {left})", pytrace=False)
    yield ns
    left = fleet.down()
    assert left == [], f"the fleet left {left}"
