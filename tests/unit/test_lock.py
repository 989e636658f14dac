"""The deploy lock: exclusive across processes, threads and a second take in one thread."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from twilight_agent.adapters.state.lock import DeployLock
from twilight_agent.errors import LockBusy

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(30)
"""


def test_another_process_holding_it_means_busy_at_once_and_death_frees_it(
        tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "deploy.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(LockBusy) as info, DeployLock(tmp_path):
            pass
        assert time.monotonic() - t0 < 0.5 and info.value.exit_code == 3
    finally:
        holder.kill()  # the kernel frees a dead holder's lock
        holder.communicate()
    with DeployLock(tmp_path) as lock:
        assert lock.held()
    assert stat.S_IMODE((tmp_path / "deploy.lock").stat().st_mode) == 0o600


def test_taken_once_exclusive_across_threads_and_within_one(tmp_path: Path) -> None:
    lock = DeployLock(tmp_path / "state")
    seen: list[str] = []

    def other() -> None:
        try:
            with DeployLock(tmp_path / "state"):
                seen.append("acquired")
        except LockBusy:
            seen.append("busy")

    with lock:
        with pytest.raises(LockBusy):  # one deploy takes it once: no re-entry
            DeployLock(tmp_path / "state").acquire()
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == ["busy"] and not lock.held()
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    other()
    assert seen == ["busy", "acquired"]
