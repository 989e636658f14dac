"""Rewrite the compose ``.env`` ``IMAGE_TAG=`` line atomically.

Through ``atomic_write`` (temp file created exclusively in the same directory, fsync,
rename, fsync of the directory). Every other byte of the file is kept, and so are its
mode and owner. A missing line is appended. A tag that fails the gate is never written.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from twilight_agent.adapters.atomicfile import atomic_write, kept_attributes
from twilight_agent.core.models import DEFAULT_TAG_PATTERN, Tag
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
        data = read_regular(path)
    except (OSError, InvalidInput):
        return None
    found = _LINE.findall(data)
    if not found:
        return None
    return str(found[-1][1].decode("utf-8", errors="replace").strip().strip("\"'"))


def read_regular(path: Path) -> bytes:
    """The bytes of ``path``, opened without following a symlink; anything but a regular
    file (a symlink, a FIFO, a device) is refused with ``InvalidInput``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInput(f"{path} is a symlink; point TWILIGHT_ENV_FILE at the file "
                               "itself") from None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InvalidInput(f"{path} is not a regular file")
        return f.read()


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
        Tag.parse(tag, pattern)
    except ValueError as exc:
        raise InvalidTag(f"refusing to write IMAGE_TAG: {exc}") from exc
    path = Path(path)
    try:
        data = read_regular(path)
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    new = rewrite(data, tag)
    if new == data:
        return False
    kept = kept_attributes(path)
    try:
        if kept is None:
            atomic_write(path, new)
        else:
            atomic_write(path, new, mode=kept[0], owner=kept[1])
    except OSError as exc:  # PermissionError on chown included
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from exc
    return True
