"""Fixtures shared by the unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket standing in for journald's: ``(path, socket)``."""
    path = str(tmp_path / "journal.socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()
    structlog.reset_defaults()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The model-based test's figures (examples, steps, seconds), one line each."""
    from tests.unit.test_model import FIGURES

    for line in FIGURES:
        terminalreporter.write_line(line)
