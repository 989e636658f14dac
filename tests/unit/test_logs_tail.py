"""``DockerRuntime.logs_tail`` reads the engine's log stream with a byte cap and drops
terminal control characters (the text goes to history, the webhook and the terminal)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from twilight_agent.adapters.docker_runtime import DockerRuntime


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


def runtime(api: FakeLogs) -> DockerRuntime:
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
