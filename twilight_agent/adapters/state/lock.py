"""The deploy lock: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<state_dir>/deploy.lock``.

The kernel frees it when the holder dies, so a SIGKILLed agent never leaves it stuck.
Busy -> ``LockBusy`` at once (exit 3). Each acquisition opens its own descriptor, and
flock locks belong to the open file, so a second holder is refused whether it is another
process, another thread or the same thread: one deploy takes the lock exactly once. The
CLI takes it before the slow imports and hands the agent a ``Held`` lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from twilight_agent.errors import ConfigError, InvalidInput, LockBusy

LOCK_NAME = "deploy.lock"


def ensure_state_dir(path: Path) -> None:
    """Create the state directory 0700 (an existing one is left as systemd made it); one
    that cannot be made is a config error (exit 2), not a traceback."""
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=0o700)
            os.chmod(path, 0o700)
        except FileExistsError:
            if not path.is_dir():  # another process made it meanwhile: fine if a directory
                raise ConfigError(f"TWILIGHT_STATE_DIR {path} is not a directory") from None
        except OSError as exc:
            raise ConfigError(f"TWILIGHT_STATE_DIR {path} cannot be created: "
                              f"{exc.strerror or exc}") from exc


class DeployLock:
    """``with DeployLock(state_dir): ...`` holds the deploy lock for the block."""

    def __init__(self, state_dir: Path) -> None:
        self.path = str(Path(state_dir) / LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        ensure_state_dir(Path(self.path).parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise InvalidInput(f"cannot open the lock file {self.path}: {exc.strerror}"
                               ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusy(f"another deploy holds the lock {self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held(self) -> bool:
        """True while this object holds it."""
        return self._fd is not None

    def __enter__(self) -> DeployLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class Held:
    """A lock the caller already holds for the whole process (a CLI deploy): entering it
    checks that, and leaving it keeps it."""

    def __init__(self, lock: DeployLock) -> None:
        self.lock = lock

    def __enter__(self) -> Held:
        assert self.lock.held(), "Held() wraps a lock that is acquired"
        return self

    def __exit__(self, *exc: object) -> None:
        return None
