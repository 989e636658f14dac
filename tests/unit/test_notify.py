"""sd_notify over a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from twilight_agent.adapters.notify.targets import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket where systemd's would be."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_with_status(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = Notifier(path)
    assert n.ready("following main at sha-abc1234")
    assert received(sock) == {"READY": "1", "STATUS": "following main at sha-abc1234"}


def test_reloading_carries_monotonic_usec(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = Notifier(path)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    fields = received(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_stopping_watchdog_and_one_line_status(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = Notifier(path)
    n.stopping("stopping")
    assert received(sock) == {"STOPPING": "1", "STATUS": "stopping"}
    n.watchdog()
    assert received(sock) == {"WATCHDOG": "1"}
    n.status("halted: rollback failed\nsee the journal")  # a newline would end the field
    assert received(sock) == {"STATUS": "halted: rollback failed see the journal"}


def test_abstract_namespace_socket() -> None:
    name = f"twilight-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        assert Notifier("@" + name).ready()
        assert received(sock) == {"READY": "1"}
    finally:
        sock.close()


def test_without_systemd_everything_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog_interval is None


def test_unreachable_socket_is_logged_once_and_never_raises(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone"))
    with structlog.testing.capture_logs() as logs:
        assert n.ready() is False
        assert n.watchdog() is False
    assert [e["event"] for e in logs] == ["sd_notify_failed"]


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "60000000"}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "junk"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_sec(env: dict[str, str],
                                                   interval: float | None) -> None:
    assert Notifier.from_env({"NOTIFY_SOCKET": "/x", **env}).watchdog_interval == interval
