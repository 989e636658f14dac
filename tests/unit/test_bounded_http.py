"""The overall deadline holds over a real loopback socket (httpx's own timeouts are per
read, so a server dripping a byte at a time would never trip them)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.unit.slowdrip import slow_server
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.registry.deadline import deadline_transport
from twilight_agent.errors import RegistryUnavailable


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_deadline_cuts_a_dripping_server(mode) -> None:
    with slow_server(mode, step=0.1) as server:
        deadline = time.monotonic() + 1.0
        client = httpx.Client(transport=deadline_transport(lambda: deadline - time.monotonic()),
                              timeout=5.0)
        start = time.monotonic()
        with client, pytest.raises(httpx.TimeoutException), \
                client.stream("GET", server["url"]) as r:
            for _ in r.iter_raw():
                pass
        assert time.monotonic() - start < 2.5
        assert server["sent"] > 3  # it really was dripping, each read well within 5 s


def test_no_deadline_means_plain_httpx_timeouts() -> None:
    with slow_server("headers", step=0.1, limit=1.0) as server:
        client = httpx.Client(transport=deadline_transport(lambda: None), timeout=5.0)
        start = time.monotonic()
        with client, pytest.raises(httpx.HTTPError):
            client.get(server["url"])  # the server gives up after 1 s: not a timeout
        assert time.monotonic() - start >= 0.9


def test_registry_operation_deadline_over_a_real_socket() -> None:
    with slow_server("headers", step=0.1) as server:
        base = server["url"].removesuffix("/healthz")
        start = time.monotonic()
        with HttpRegistry(base, "owner/app", operation_timeout=1.0, attempts=3,
                          backoff_base=0.01) as reg, pytest.raises(RegistryUnavailable):
            reg.track_digest("main")
        assert time.monotonic() - start < 2.5
