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


class PullMeter:
    """Whether a pull moves, from its stream: a layer's bytes (``progressDetail.current``
    of ``Downloading`` and ``Extracting``) grew, or a layer reached a new status. A pull
    stuck on a silent connection writes nothing, so it never moves."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int] = {}

    def moved(self, line: Mapping[str, Any]) -> bool:
        if "error" in line or "errorDetail" in line or not line.get("status"):
            return False
        key = (str(line.get("id") or ""), str(line["status"]).split(" ", 1)[0])
        detail = line.get("progressDetail") or {}
        current = detail.get("current") if isinstance(detail, Mapping) else None
        now = current if isinstance(current, int) else 0
        before = self._seen.get(key)
        if before is not None and now <= before:
            return False
        self._seen[key] = now
        return True

    def summary(self) -> str:
        """``pull: 3 layers, 12.4 MB so far`` (bytes downloaded, as the stream counts)."""
        done = sum(n for (_, status), n in self._seen.items() if status == "Downloading")
        layers = len({ident for ident, _ in self._seen if ident})
        return f"pull: {layers} layers, {done / 1e6:.1f} MB so far"
