"""Rewrite the compose ``.env`` ``IMAGE_TAG=`` and ``IMAGE_DIGEST=`` lines atomically.

Through ``atomic_write`` (temp file created exclusively in the same directory, fsync,
rename, fsync of the directory). Every other byte of the file is kept, and so are its
mode and owner. A missing ``IMAGE_TAG`` line is appended, a missing ``IMAGE_DIGEST`` line
goes right after it. A tag that fails the gate, or a digest that is not one, is never
written.

``IMAGE_DIGEST`` holds the digest with its ``@`` (``IMAGE_DIGEST=@sha256:...``), so one
compose file pins it for compose v2 and v1 alike: ``${IMAGE_REPO}:${IMAGE_TAG}${IMAGE_DIGEST-}``
(v1 1.29 has no ``${VAR:+...}``); an ``.env`` without the key still names the tag alone.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from twilight_agent.adapters.state.atomicfile import atomic_write, kept_attributes
from twilight_agent.core.models import DEFAULT_TAG_PATTERN, Digest, Tag
from twilight_agent.errors import InvalidInput, InvalidTag

KEY = b"IMAGE_TAG"
DIGEST_KEY = b"IMAGE_DIGEST"


def _line(key: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"^(?P<lead>[ \t]*(?:export[ \t]+)?" + key
                      + rb"[ \t]*=)(?P<value>[^\r\n]*)(?P<end>\r?\n)?", re.MULTILINE)


_LINE, _DIGEST_LINE = _line(KEY), _line(DIGEST_KEY)


def read_image_tag(path: Path) -> str | None:
    """The current ``IMAGE_TAG`` value (the last assignment wins), or None.

    Never raises: the agent reads it on every poll, and a file it cannot read or a value
    that is not UTF-8 (which then fails the tag gate) must not crash the poll.
    """
    return _read(path, _LINE)


def read_image_digest(path: Path) -> str | None:
    """The current ``IMAGE_DIGEST`` value without its ``@``, or None; never raises."""
    value = _read(path, _DIGEST_LINE)
    return value.lstrip("@") or None if value is not None else None


def _read(path: Path, line: re.Pattern[bytes]) -> str | None:
    try:
        data = read_regular(path)
    except (OSError, InvalidInput):
        return None
    found = line.findall(data)
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


def rewrite(data: bytes, tag: str, digest: str | None = None) -> bytes:
    """``data`` with every ``IMAGE_TAG=`` value set to ``tag``, the line appended if none;
    with ``digest``, every ``IMAGE_DIGEST=`` value set to ``@digest``, the line put right
    after the last ``IMAGE_TAG=`` line if none."""
    value = tag.encode()
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    if _LINE.search(data):
        data = _LINE.sub(lambda m: m.group("lead") + value + (m.group("end") or b""), data)
    else:
        sep = b"" if not data or data.endswith(b"\n") else newline
        data = data + sep + KEY + b"=" + value + newline
    if digest is None:
        return data
    pin = b"@" + digest.encode()
    if _DIGEST_LINE.search(data):
        return _DIGEST_LINE.sub(lambda m: m.group("lead") + pin + (m.group("end") or b""),
                                data)
    last = list(_LINE.finditer(data))[-1]
    line = DIGEST_KEY + b"=" + pin
    if not last.group("end"):  # the last line of a file without a final newline
        return data[:last.end()] + newline + line + data[last.end():]
    return data[:last.end()] + line + last.group("end") + data[last.end():]


def write_image_tag(path: Path, tag: str, pattern: str = DEFAULT_TAG_PATTERN,
                    digest: str | None = None) -> bool:
    """Set ``IMAGE_TAG=tag`` (and ``IMAGE_DIGEST=@digest``) in ``path``. Returns False when
    it already said so."""
    try:
        if not isinstance(tag, Tag):  # a Tag passed the gate where it came in
            Tag.parse(tag, pattern)
        if digest is not None:
            Digest(digest)
    except ValueError as exc:
        raise InvalidTag(f"refusing to write IMAGE_TAG/IMAGE_DIGEST: {exc}") from exc
    path = Path(path)
    try:
        data = read_regular(path)
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    return _replace(path, data, rewrite(data, tag, digest))


def image_lines(path: Path) -> dict[str, str | None] | None:
    """The ``IMAGE_TAG`` and ``IMAGE_DIGEST`` values as written (None: no such line), for
    ``put_back`` after a rollback; None when the file cannot be read."""
    try:
        data = read_regular(path)
    except FileNotFoundError:
        data = b""
    except (OSError, InvalidInput):
        return None
    return {"tag": _raw(data, _LINE), "digest": _raw(data, _DIGEST_LINE)}


def put_back(path: Path, before: Mapping[str, str | None]) -> bool:
    """Undo a commit's rewrite: both lines as ``image_lines`` read them before it, a line
    that was not there removed again, every other byte kept. So the project is what
    compose last saw, and ``compose up -d`` finds the restored container unchanged."""
    path = Path(path)
    try:
        data = read_regular(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    new = _set_or_drop(_set_or_drop(data, _LINE, before.get("tag")), _DIGEST_LINE,
                       before.get("digest"))
    return _replace(path, data, new)


def _raw(data: bytes, line: re.Pattern[bytes]) -> str | None:
    found = line.findall(data)
    return found[-1][1].decode("utf-8", "surrogateescape") if found else None


def _set_or_drop(data: bytes, line: re.Pattern[bytes], value: str | None) -> bytes:
    if value is None:
        return line.sub(b"", data)
    raw = value.encode("utf-8", "surrogateescape")
    return line.sub(lambda m: m.group("lead") + raw + (m.group("end") or b""), data)


def _replace(path: Path, data: bytes, new: bytes) -> bool:
    """Write ``new`` over ``path`` (which held ``data``) atomically, keeping its mode and
    owner; False when nothing changes."""
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
