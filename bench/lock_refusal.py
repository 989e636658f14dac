"""How fast a second ``twilight-agent deploy`` is refused while a deploy holds the lock.

    .venv/bin/python bench/lock_refusal.py [--runs 20] [--no-write]

Holds the agent's lock the way a deploy in flight does (``flock`` on
``<state dir>/deploy.lock``) and times the CLI from exec to its exit 3, ``--runs`` times.
The lock is taken before the registry or the engine is asked, so neither is needed (the
config names unreachable ones, and the run would say so if one were asked). Prints the
figures and writes them to bench/results.md, section "lock refusal" (the shell flow's
``flock -n`` answers at once; the target is under 1 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from bench.requests_per_poll import RESULTS  # noqa: E402

CLI = ROOT / ".venv" / "bin" / "twilight-agent"
SECTION = "lock refusal"


def config(tmp: Path) -> Path:
    state = tmp / "state"
    state.mkdir(mode=0o700)
    path = tmp / "agent.env"
    path.write_text("TWILIGHT_IMAGE=127.0.0.1:9/bench/lock/app\n"
                    "TWILIGHT_REGISTRY_URL=http://127.0.0.1:9\n"
                    "TWILIGHT_CONTAINER=twbench-lock-app\n"
                    f"TWILIGHT_STATE_DIR={state}\nTWILIGHT_ENV_FILE={tmp / 'compose.env'}\n")
    return path


def refusals(runs: int) -> list[float]:
    """Seconds from exec to exit of ``deploy`` while the lock is held, ``runs`` times."""
    with tempfile.TemporaryDirectory(prefix="twbench-lock-") as d:
        cfg = config(Path(d))
        fd = os.open(Path(d) / "state" / "deploy.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        env = {**os.environ, "DOCKER_HOST": f"unix://{d}/no-engine.sock"}
        times = []
        try:
            for _ in range(runs):
                t0 = time.monotonic()
                p = subprocess.run([str(CLI), "--config", str(cfg), "deploy"], env=env,
                                   capture_output=True, text=True, timeout=60)
                times.append(time.monotonic() - t0)
                if p.returncode != 3 or "another deploy holds the lock" not in p.stderr:
                    raise SystemExit(f"expected exit 3 (lock held), got {p.returncode}: "
                                     f"{p.stderr.strip()}")
        finally:
            os.close(fd)
    return times


def write_results(body: str) -> None:
    """Replace this bench's section of results.md, or add it at the end."""
    write_section(RESULTS, SECTION, body, first=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="refusals to time (default 20)")
    parser.add_argument("--no-write", action="store_true", help="do not touch results.md")
    args = parser.parse_args()
    times = refusals(args.runs)
    line = (f"{len(times)} refusals (exit 3): median {statistics.median(times):.3f} s, "
            f"max {max(times):.3f} s, min {min(times):.3f} s")
    print(f"lock refusal: {line}")
    if not args.no_write:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write_results(f"`bench/lock_refusal.py`, {stamp}: `twilight-agent deploy` while "
                      "another deploy holds the lock, from exec to exit; target under 1 s."
                      f"\n\n{line}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
