"""``DockerRuntime.logs_tail`` and a swarm task's log (``SwarmTarget.logs_tail``) read the
engine's log stream with a byte cap and drop terminal control characters (the text goes
to history, the webhook and the terminal)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from twilight_agent.adapters.docker.logs import capped_text, frame_payloads
from twilight_agent.adapters.docker.runtime import DockerRuntime
from twilight_agent.adapters.docker.swarm_target import SwarmTarget


class FakeLogs:
    """Just ``APIClient.logs``: a stream of chunks, counting what was pulled."""

    def __init__(self, chunks: Iterator[bytes] | None = None, missing: bool = False) -> None:
        self.chunks, self.missing = chunks, missing
        self.pulled = 0
        self.closed = False
        self.kwargs: dict[str, Any] = {}

    def logs(self, container: str, **kwargs: Any) -> FakeLogs:
        if self.missing:
            raise docker.errors.NotFound("no such container")
        self.kwargs = kwargs
        return self

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks or iter(()):
            self.pulled += len(chunk)
            yield chunk

    def close(self) -> None:
        self.closed = True


def runtime(api: Any) -> DockerRuntime:
    rt = DockerRuntime()
    rt._client = api  # type: ignore[assignment]
    return rt


def test_a_huge_log_line_is_cut_at_the_cap() -> None:
    endless = (b"y" * 65536 for _ in range(10_000))  # 640 MiB, one line, if read to the end
    api = FakeLogs(endless)
    text = runtime(api).logs_tail("c" * 64, lines=50)
    assert api.kwargs["stream"] is True and api.kwargs["tail"] == 50
    assert api.kwargs.get("follow") is False
    assert api.pulled <= 2 * 65536 and api.closed
    assert len(text) < 70 * 1024 and text.endswith("[log tail cut at 64 KiB]\n")


def test_control_characters_are_dropped_but_lines_kept() -> None:
    api = FakeLogs(iter([b"boot\n\x1b]0;pwned\x07\x1b[2Jready\r\n", b"tab\there\n\xff\n"]))
    assert runtime(api).logs_tail("c" * 64) == "boot\n]0;pwned[2Jready\ntab\there\n\ufffd\n"


def test_missing_container_has_no_logs() -> None:
    assert runtime(FakeLogs(missing=True)).logs_tail("c" * 64) == ""


@pytest.mark.parametrize("size", [0, 10, 65535])
def test_short_logs_come_back_whole(size) -> None:
    api = FakeLogs(iter([b"z" * size]))
    assert runtime(api).logs_tail("c" * 64) == "z" * size


class OneHugeFrame:
    """A task's log response: one multiplexed frame announcing ``size`` bytes, whose payload
    is made on demand, counting what was read."""

    def __init__(self, size: int, byte: bytes = b"x") -> None:
        self.left, self.byte = size, byte
        self.header = struct.pack(">BxxxL", 1, size)
        self.read_bytes = 0
        self.closed = False

    def iter_content(self, n: int) -> Iterator[bytes]:
        """What requests yields: chunks of at most ``n`` bytes, the header in the first."""
        first = True
        while self.left:
            out = self.byte * min(n - (8 if first else 0), self.left)
            self.left -= len(out)
            out, first = (self.header + out if first else out), False
            self.read_bytes += len(out)
            yield out


class FakeTaskApi:
    """Just what ``SwarmTarget`` reads of a failed task: the service, its tasks, its logs."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.params, self.stream, self.closed = raw, {}, None, False
        self.task = {"ID": "t" * 25, "Status": {"State": "failed", "Err": "boom",
                                                "ContainerStatus": {"ExitCode": 3}},
                     "Spec": {"ContainerSpec": {"Image": f"app@{DIGEST}"}}}

    def inspect_service(self, sid: str) -> dict[str, Any]:
        return {"ID": sid, "Spec": {}}

    def tasks(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        return [self.task]

    def _url(self, path: str, *args: str) -> str:
        return path.format(*args)

    def _get(self, url: str, params: dict[str, Any], stream: bool) -> Any:
        self.params, self.stream = params, stream
        return self

    def iter_content(self, n: int) -> Iterator[bytes]:
        return self.raw.iter_content(n)  # type: ignore[no-any-return]

    def _raise_for_status(self, res: Any) -> None:
        return None

    def close(self) -> None:
        self.closed = True


DIGEST = "sha256:" + "d" * 64


def test_a_swarm_task_frame_of_300_mib_is_read_only_to_the_cap() -> None:
    """docker-py reads a frame whole; the task log is read in pieces and left at the cap."""
    raw = OneHugeFrame(300 * 1024 * 1024)
    api = FakeTaskApi(raw)
    target = SwarmTarget(runtime(api), service="svc")  # type: ignore[arg-type]
    text = target.logs_tail(f"svc@{DIGEST}", 50)
    assert api.stream is True and api.params["tail"] == 50 and api.closed
    assert raw.read_bytes <= 2 * 64 * 1024
    assert "exit code 3" in text and text.endswith("[log tail cut at 64 KiB]\n")
    assert len(text) < 70 * 1024


def test_task_log_frames_are_joined_and_stripped_like_a_container_log() -> None:
    frames = b"".join(struct.pack(">BxxxL", 1, len(p)) + p
                      for p in (b"boot\n\x1b[2J", b"ready\n"))
    for size in (1, 3, 8, 9, len(frames)):  # however the response is cut into chunks
        chunks = [frames[i:i + size] for i in range(0, len(frames), size)]
        assert capped_text(frame_payloads(chunks)) == "boot\n[2Jready\n", size
    assert list(frame_payloads([b"\x01\x00\x00"])) == []  # a cut header: no frame
