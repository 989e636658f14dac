"""Rewrite the compose ``.env`` ``IMAGE_TAG=`` line atomically.

Temp file in the same directory, fsync, rename over the original, fsync the directory.
Every other byte of the file is kept, and so are its mode and owner. A missing line is
appended. A tag that fails the gate is never written.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path

from twilight_agent.core.policy import DEFAULT_TAG_PATTERN, check_tag
from twilight_agent.errors import InvalidInput, InvalidTag

KEY = b"IMAGE_TAG"
_LINE = re.compile(rb"^(?P<lead>[ \t]*(?:export[ \t]+)?IMAGE_TAG[ \t]*=)(?P<value>[^\r\n]*)",
                   re.MULTILINE)


def read_image_tag(path: Path) -> str | None:
    """The current ``IMAGE_TAG`` value (the last assignment wins), or None.

    Never raises: the agent reads it on every poll, and a file it cannot read or a value
    that is not UTF-8 (which then fails the tag gate) must not crash the poll.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    found = _LINE.findall(data)
    if not found:
        return None
    return str(found[-1][1].decode("utf-8", errors="replace").strip().strip("\"'"))


def rewrite(data: bytes, tag: str) -> bytes:
    """``data`` with every ``IMAGE_TAG=`` value set to ``tag``; the line appended if none."""
    value = tag.encode()
    if _LINE.search(data):
        return _LINE.sub(lambda m: m.group("lead") + value, data)
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    sep = b"" if not data or data.endswith(b"\n") else newline
    return data + sep + KEY + b"=" + value + newline


def write_image_tag(path: Path, tag: str, pattern: str = DEFAULT_TAG_PATTERN) -> bool:
    """Set ``IMAGE_TAG=tag`` in ``path``. Returns False when it already said so."""
    try:
        check_tag(tag, pattern)
    except ValueError as exc:
        raise InvalidTag(f"refusing to write IMAGE_TAG: {exc}") from exc
    path = Path(path)
    try:
        data = path.read_bytes()
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        data, st = b"", None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    new = rewrite(data, tag)
    if new == data:
        return False
    _replace(path, new, st)
    return True


def _replace(path: Path, data: bytes, st: os.stat_result | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            _keep_owner_and_mode(f.fileno(), st)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _keep_owner_and_mode(fd: int, st: os.stat_result | None) -> None:
    if st is None:
        os.fchmod(fd, 0o644)
        return
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
        os.fchown(fd, st.st_uid, st.st_gid)  # PermissionError -> OSError -> InvalidInput
