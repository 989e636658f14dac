"""A container's last log lines, read as a stream under a byte cap."""

from __future__ import annotations

from typing import Any

import docker

from twilight_agent.adapters.docker_errors import engine_errors

LOG_CAP = 64 * 1024


def read_log_tail(api: Any, container_id: str, lines: int = 50) -> str:
    """Read as a stream and stop at a byte cap: ``tail=lines`` bounds lines, not bytes,
    and one line of a crashing app can be gigabytes. Control characters other than
    newline and tab (terminal escapes) are dropped: this text is printed and logged."""
    cap = LOG_CAP
    chunks: list[bytes] = []
    size = 0
    with engine_errors(f"reading logs of {container_id[:12]}"):
        try:
            stream = api.logs(container_id, stdout=True, stderr=True, tail=lines,
                              stream=True, follow=False)
        except docker.errors.NotFound:
            return ""
        try:
            for chunk in stream:
                chunks.append(bytes(chunk)[:cap - size])
                size += len(chunks[-1])
                if size >= cap:
                    chunks.append(b"\n[log tail cut at 64 KiB]\n")
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return "".join(c for c in text if c in "\n\t" or not (c < " " or "\x7f" <= c < "\xa0"))
