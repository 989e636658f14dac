"""One way to replace a file: every writer of the agent (``.env``, the pin in the config
file, the metrics file) goes through ``atomic_write``.

The temporary file is created next to the target with ``O_CREAT|O_EXCL|O_NOFOLLOW`` under a
random name (a planted file or symlink is never followed or truncated), written, given
its mode (and owner, on request), fsynced, renamed over the target, and the directory is
fsynced, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data``. ``mode`` is applied whatever the umask; ``owner``
    ``(uid, gid)`` is applied when given and different (as far as this user may: else the
    group only). Raises ``OSError``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if owner is not None and owner != _owner(os.fstat(f.fileno())):
                _chown(f.fileno(), owner)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def kept_attributes(path: Path) -> tuple[int, tuple[int, int]] | None:
    """``(mode, (uid, gid))`` of an existing file, to keep them across a rewrite."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mode & 0o7777, _owner(st)


def fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _chown(fd: int, owner: tuple[int, int]) -> None:
    """Keep the owner; a user that may not give files away (the agent's own user
    rewriting root's compose .env) keeps the group at least, and the file is its own."""
    try:
        os.fchown(fd, *owner)
    except PermissionError:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, owner[1])


def _owner(st: os.stat_result) -> tuple[int, int]:
    return st.st_uid, st.st_gid
