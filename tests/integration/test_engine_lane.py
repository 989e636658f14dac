"""The lane runs on the engine it says it runs on: a 26 lane that silently ran on 20.10
(or the reverse) would prove nothing about the engines users run."""

from __future__ import annotations

import pytest

from testbed import engines
from twilight_agent.adapters.docker.runtime import DockerRuntime

pytestmark = pytest.mark.integration

EXPECTED = {"26": ("26.", (1, 44)), "20.10": ("20.10.", (1, 41))}


def _api(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor)


def test_the_agent_negotiates_the_api_version_of_this_lane(bed) -> None:
    lane = engines.wanted()
    assert lane is not None, (f"{engines.ENGINE_ENV} is not set: this run names no lane "
                              "(scripts/test sets it to 26 or 20.10)")
    prefix, api = EXPECTED[lane]
    server = bed.docker.version()
    assert server["Version"].startswith(prefix), (lane, server["Version"])
    with DockerRuntime(container="unused") as rt:
        negotiated = _api(rt.api_version)
    print(f"\nlane {lane}: dockerd {server['Version']}, agent negotiated API "
          f"{rt.api_version} (engine max {server['ApiVersion']})")
    if lane == "26":
        assert negotiated >= api  # Docker 29 refuses clients below 1.44
    else:
        assert negotiated == api


def test_the_lane_compose_flavours_answer(bed) -> None:
    lane = engines.wanted() or engines.running_key() or "?"
    for flavour in engines.engine(lane).compose:
        version = engines.compose_version(flavour)
        assert version[:1] == ("2" if flavour == "v2" else "1"), (flavour, version)
