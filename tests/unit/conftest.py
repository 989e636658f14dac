"""Fixtures shared by the unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# ---------------------------------------- the local Sigstore (test_sigstore_standin, test_keyless)
@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """No connection leaves this process (the Sigstore tests use it for the whole module),
    from the trust root's loading on: a verifier that
    tried to reach Rekor, a TSA or TUF would fail here rather than pass on the network's say."""
    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"a connection to {address} during an offline test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        yield


@pytest.fixture(scope="module")
def standin(offline: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from testbed.sigstore_standin import SigstoreStandin
    return SigstoreStandin(tmp_path_factory.mktemp("sigstore"))


@pytest.fixture(scope="module")
def stranger(offline: None, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Another Sigstore altogether: its CA, logs and TSA are in no trust root here."""
    from testbed.sigstore_standin import SigstoreStandin
    return SigstoreStandin(tmp_path_factory.mktemp("stranger"))
