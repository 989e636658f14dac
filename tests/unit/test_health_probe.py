"""The HTTP health probe: one overall deadline per probe and a cap on the body it reads."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.unit.slowdrip import slow_server
from twilight_agent.adapters.docker.health import MAX_PROBE_BODY, HttpProbe


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_a_dripping_server_cannot_hold_a_probe(mode) -> None:
    """A byte every 0.1 s never trips a 1 s read timeout; the probe still ends at 1 s."""
    probe = HttpProbe()
    with slow_server(mode, step=0.1) as server:
        start = time.monotonic()
        result = probe(server["url"], 1.0)
        took = time.monotonic() - start
    probe.close()
    assert not result.ok and result.text == "read timeout"
    assert took < 2.0 and server["sent"] > 3


def test_a_flood_of_body_is_read_up_to_the_cap() -> None:
    pulled = {"chunks": 0}

    class Endless(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for _ in range(100_000):  # 400 MiB if read to the end
                pulled["chunks"] += 1
                yield b"x" * 4096

    probe = HttpProbe(transport=httpx.MockTransport(
        lambda r: httpx.Response(200, stream=Endless())))
    assert probe("http://app.test/healthz", 1.0).text == "http 200"
    assert pulled["chunks"] <= MAX_PROBE_BODY // 4096 + 1
    probe.close()


def test_a_quick_answer_is_judged_by_its_status() -> None:
    probe = HttpProbe(transport=httpx.MockTransport(
        lambda r: httpx.Response(503, content=b"down")))
    result = probe("http://app.test/healthz", 1.0)
    assert (result.ok, result.text) == (False, "http 503")
    probe.close()
