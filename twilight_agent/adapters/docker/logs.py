"""Engine chores outside the swap: a container's (or a swarm task's) last log lines under
a byte cap, and pruning a repository's old images."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import docker

from twilight_agent.adapters.docker.errors import engine_errors
from twilight_agent.adapters.docker.refs import repository_of
from twilight_agent.core.clock import Clock

LOG_CAP = 64 * 1024


def read_log_tail(api: Any, container_id: str, lines: int = 50) -> str:
    """Read as a stream and stop at a byte cap: ``tail=lines`` bounds lines, not bytes,
    and one line of a crashing app can be gigabytes."""
    with engine_errors(f"reading logs of {container_id[:12]}"):
        try:
            stream = api.logs(container_id, stdout=True, stderr=True, tail=lines,
                              stream=True, follow=False)
        except docker.errors.NotFound:
            return ""
        try:
            return capped_text(stream)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


def capped_text(chunks: Iterable[bytes], cap: int = LOG_CAP) -> str:
    """The first ``cap`` bytes of a log stream as text; it stops reading there. Control
    characters other than newline and tab (terminal escapes) are dropped: this text is
    printed, logged and sent."""
    kept: list[bytes] = []
    size = 0
    for chunk in chunks:
        kept.append(bytes(chunk)[:cap - size])
        size += len(kept[-1])
        if size >= cap:
            kept.append(b"\n[log tail cut at 64 KiB]\n")
            break
    text = b"".join(kept).decode("utf-8", errors="replace")
    return "".join(c for c in text if c in "\n\t" or not (c < " " or "\x7f" <= c < "\xa0"))


def frame_payloads(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The payloads of the engine's multiplexed log stream (each frame: an 8-byte header,
    stream and length, then the payload), from the response's chunks as they come: never
    more than a chunk and a header held. docker-py reads a frame whole, however long the
    engine made it."""
    buf, left = b"", 0
    for chunk in chunks:
        buf += chunk
        while buf:
            if not left:
                if len(buf) < 8:
                    break
                left, buf = struct.unpack(">BxxxL", buf[:8])[1], buf[8:]
                continue
            piece, buf = buf[:left], buf[left:]
            left -= len(piece)
            yield piece


def prune_images(api: Any, repository: str, keep: set[str], older_than_s: float,
                 clock: Clock) -> list[str]:
    """Remove images of ``repository`` created before the cutoff, except ids (or digests)
    in ``keep`` and images any container uses. Returns the removed ids."""
    cutoff = clock.wall() - older_than_s
    with engine_errors("listing images and containers for pruning"):
        images = api.images()
        used = {str(c.get("ImageID")) for c in api.containers(all=True)}
    removed = []
    for img in images:
        refs = [r for r in (img.get("RepoTags") or []) + (img.get("RepoDigests") or [])
                if repository_of(r) == repository]
        digests = {r.split("@", 1)[1] for r in refs if "@" in r}
        if (not refs or img["Id"] in keep or img["Id"] in used or digests & keep
                or int(img.get("Created") or 0) >= cutoff):
            continue
        if _untag_all(api, refs):
            removed.append(str(img["Id"]))
    return removed


def _untag_all(api: Any, refs: list[str]) -> bool:
    """Remove this repository's references to an image (never forced)."""
    for ref in refs:
        with engine_errors(f"removing image {ref}"):
            try:
                api.remove_image(ref, force=False, noprune=False)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError:  # in use since we listed, or shared: keep it
                return False
    return True
