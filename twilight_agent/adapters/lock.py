"""The deploy lock: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<state_dir>/deploy.lock``.

The kernel frees it when the holder dies, so a SIGKILLed agent never leaves it stuck.
Busy -> ``LockBusy`` at once (exit 3). Re-entrant within one thread (the CLI takes it
before the slow imports, the agent takes it again), exclusive across threads and processes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

from twilight_agent.errors import LockBusy

LOCK_NAME = "deploy.lock"

_guard = threading.Lock()
_held: dict[str, tuple[int, int, int]] = {}  # path -> (thread id, depth, fd)


class DeployLock:
    """``with DeployLock(state_dir): ...`` holds the deploy lock for the block."""

    def __init__(self, state_dir: Path) -> None:
        self.path = str(Path(state_dir) / LOCK_NAME)

    def acquire(self) -> None:
        me = threading.get_ident()
        with _guard:
            held = _held.get(self.path)
            if held is not None:
                owner, depth, fd = held
                if owner != me:
                    raise LockBusy("another deploy holds the lock (this process)")
                _held[self.path] = (owner, depth + 1, fd)
                return
            fd = self._lock_file()
            _held[self.path] = (me, 1, fd)

    def _lock_file(self) -> int:
        parent = Path(self.path).parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusy(f"another deploy holds the lock {self.path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def release(self) -> None:
        with _guard:
            owner, depth, fd = _held[self.path]
            if depth > 1:
                _held[self.path] = (owner, depth - 1, fd)
                return
            del _held[self.path]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def held(self) -> bool:
        """True when this thread holds it."""
        with _guard:
            held = _held.get(self.path)
        return held is not None and held[0] == threading.get_ident()

    def __enter__(self) -> DeployLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
