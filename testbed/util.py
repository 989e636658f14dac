"""Small helpers the bed, the tests and the demo share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import docker

T = TypeVar("T")


class BedError(Exception):
    """The test bed could not be brought up; the message says why and what to do."""


def wait_until(
    cond: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll ``cond`` until it returns something truthy; raise ``TimeoutError`` naming ``what``.

    Exceptions from ``cond`` count as "not yet"; the last one is chained on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}") from last_exc
        time.sleep(interval)


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    """The engine holds an image under ``tag`` (the bed's images are built once per input)."""
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
