"""Image references and the pull stream, as the engine writes them. Pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# Pull stream statuses worth a line on a terminal (per-byte progress is not).
_QUIET_STATUSES = ("Downloading", "Extracting", "Waiting", "Verifying Checksum")


def repository_of(reference: str) -> str:
    """``host/name`` of ``host/name:tag`` or ``host/name@sha256:...``."""
    name = reference.split("@", 1)[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


def tag_of(reference: str) -> str | None:
    """The tag of ``repo:tag`` or ``repo:tag@sha256:...`` (what compose creates from a
    pinned ``.env``); None for ``repo@sha256:...`` or an image id."""
    if reference.startswith("sha256:"):
        return None
    _, sep, tail = reference.split("@", 1)[0].rpartition(":")
    return tail if sep and "/" not in tail else None


def pull_line(line: Mapping[str, Any], errors: list[str],
              progress: Callable[[str], None] | None) -> None:
    """One line of the pull stream: an in-band error is collected (the engine answered
    200 and then failed), a status worth showing goes to ``progress``."""
    if "error" in line or "errorDetail" in line:
        detail = line.get("errorDetail") or {}
        errors.append(str(line.get("error") or detail.get("message") or "unknown error"))
        return
    status = str(line.get("status") or "")
    if progress is None or errors or not status or status.startswith(_QUIET_STATUSES):
        return
    ident = str(line.get("id") or "")
    progress(f"{ident}: {status}" if ident and len(ident) <= 12 else status)
