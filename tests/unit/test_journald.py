"""journald output: the native protocol on a real datagram socket, fields, redaction."""

from __future__ import annotations

import io
import os
import socket
import struct
from pathlib import Path

import pytest
import structlog

from twilight_agent import logs


def parse(payload: bytes) -> dict[str, str]:
    """Decode the native journal protocol (both the KEY=value and the binary form)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(payload):
        nl = payload.index(b"\n", i)
        line = payload[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", payload[nl + 1:nl + 9])
            value = payload[nl + 9:nl + 9 + size]
            assert payload[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[key.decode()] = value.decode()
    return fields


def receive(sock: socket.socket) -> dict[str, str]:
    data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
    if fds:  # the memfd path
        with os.fdopen(fds[0], "rb") as fh:  # journald mmaps it; the offset is at the end
            fh.seek(0)
            data = fh.read()
    return parse(data)


def test_events_carry_journal_fields(journal: tuple[str, socket.socket]) -> None:
    path, sock = journal
    assert logs.configure("journald", journal_socket=path) == "journald"
    logs.get_logger().warning("rollback", deploy_id="d-1", phase="VERIFY",
                              digest="sha256:" + "b" * 64, duration_s=12.5,
                              sides={"from": "sha-1111111"}, skipped=None)
    fields = receive(sock)
    assert fields["TWILIGHT_EVENT"] == "rollback"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "twilight-agent"
    assert fields["TWILIGHT_DEPLOY_ID"] == "d-1"
    assert fields["TWILIGHT_PHASE"] == "VERIFY"
    assert fields["TWILIGHT_DIGEST"] == "sha256:" + "b" * 64
    assert fields["TWILIGHT_DURATION_S"] == "12.5"
    assert fields["TWILIGHT_SIDES"] == '{"from":"sha-1111111"}'
    assert "TWILIGHT_SKIPPED" not in fields and "TWILIGHT_TIMESTAMP" not in fields
    assert fields["MESSAGE"].startswith("rollback deploy_id=d-1 phase=VERIFY digest=sha256:")


def test_secrets_are_redacted_in_the_journal(journal: tuple[str, socket.socket]) -> None:
    path, sock = journal
    logs.configure("journald", journal_socket=path)
    logs.get_logger().info("registry_auth", registry_password="ghp_secret123456",
                           header="Bearer abcdefghijklmnop")
    fields = receive(sock)
    assert "ghp_secret" not in str(fields) and "abcdefghijklmnop" not in str(fields)
    assert fields["TWILIGHT_REGISTRY_PASSWORD"] == logs.REDACTED


def test_multiline_values_use_the_binary_form(journal: tuple[str, socket.socket]) -> None:
    path, sock = journal
    logs.configure("journald", journal_socket=path)
    logs.get_logger().error("health_failed", logs_tail="line one\nline two")
    fields = receive(sock)
    assert fields["TWILIGHT_LOGS_TAIL"] == "line one\nline two"
    assert fields["PRIORITY"] == "3"


def test_an_entry_too_big_for_a_datagram_goes_as_a_sealed_memfd(
        journal: tuple[str, socket.socket]) -> None:
    path, sock = journal
    logs.configure("journald", journal_socket=path)
    big = {f"part{i}": "x" * 60_000 for i in range(8)}  # ~480 KB, above the socket buffer
    logs.get_logger().info("deploy_finished", **big)
    fields = receive(sock)
    assert fields["TWILIGHT_PART7"] == "x" * 60_000


def test_no_journal_socket_falls_back_to_the_stream(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.configure("journald", stream=out, journal_socket=str(tmp_path / "none"))
    logs.get_logger().info("daemon_started", track="main")
    structlog.reset_defaults()
    assert out.getvalue() == "daemon_started track=main\n"


def test_encode_journal_binary_length() -> None:
    payload = logs.encode_journal([("A", "1"), ("B", "x\ny")])
    assert payload == b"A=1\nB\n" + struct.pack("<Q", 3) + b"x\ny\n"


@pytest.mark.parametrize(("key", "name"), [
    ("deploy_id", "TWILIGHT_DEPLOY_ID"), ("from", "TWILIGHT_FROM"),
    ("after-s", "TWILIGHT_AFTER_S"), ("x" * 80, "TWILIGHT_" + "X" * 55),
])
def test_field_names(key: str, name: str) -> None:
    assert logs.field_name(key) == name


class _Stream:
    def __init__(self, fd: int, tty: bool = False) -> None:
        self._fd, self._tty = fd, tty

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return self._tty


def test_auto_picks_journald_only_when_journal_stream_names_stderr(
        tmp_path: Path, journal: tuple[str, socket.socket]) -> None:
    path, _ = journal
    f = (tmp_path / "stderr").open("w")
    st = os.fstat(f.fileno())
    mine = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    stream = _Stream(f.fileno())
    assert logs.resolve_format("auto", stream, mine, path) == "journald"
    assert logs.resolve_format("auto", stream, {"JOURNAL_STREAM": "1:2"}, path) == "json"
    assert logs.resolve_format("auto", stream, {}, path) == "json"
    assert logs.resolve_format("auto", stream, mine, str(tmp_path / "none")) == "json"
    assert logs.resolve_format("auto", _Stream(f.fileno(), tty=True), mine, path) == "console"
    assert logs.resolve_format("json", stream, mine, path) == "json"
    f.close()


def test_memfd_payload_is_sealed(journal: tuple[str, socket.socket]) -> None:
    """journald only accepts a memfd it can trust not to change: it must be sealed."""
    import fcntl

    path, sock = journal
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
        logs.JournalLogger(path).send_memfd(out, b"MESSAGE=hi\n")  # the EMSGSIZE path
    _, fds, _, _ = socket.recv_fds(sock, 1024, 1)
    seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
    with os.fdopen(fds[0], "rb") as fh:
        fh.seek(0)
        assert fh.read() == b"MESSAGE=hi\n"
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
