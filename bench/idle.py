"""What the agent costs while nothing happens, and how fast it is up.

- idle: ``twilight-agent run`` at ``TWILIGHT_POLL_INTERVAL=30s`` against a running,
  up-to-date app; RSS (``VmRSS`` of ``/proc/<pid>/status``) and CPU (``utime + stime`` of
  ``/proc/<pid>/stat``) over the window, cut in five equal slices (one figure per slice).
- READY: the daemon started with ``NOTIFY_SOCKET`` naming a unix datagram socket bound
  here; the time from ``Popen`` to the ``READY=1`` datagram, as systemd would see it.
- requests per idle poll: ``bench/requests_per_poll.py``'s measurement at 100 and 10,000
  tags, in a repository of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable

from bench import requests_per_poll as rpp
from bench.scenarios import Bench, Figures
from bench.site import CLI, CREATED, Site, _clean_env
from testbed.images import build_and_push

TICKS = os.sysconf("SC_CLK_TCK")
SLICES = 5


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def idle(bench: Bench, window_s: float, report: Callable[[Figures], None]) -> list[Figures]:
    """One daemon, ``SLICES`` consecutive slices of ``window_s / SLICES`` each."""
    site = bench.site()
    try:
        v1 = site.push("v1")
        site.up(v1)
        proc = site.start_agent(30.0)
        time.sleep(2)  # the first poll's connections settle
        out: list[Figures] = []
        step = window_s / SLICES
        for _ in range(SLICES):
            c0, t0 = cpu_s(proc.pid), time.monotonic()
            peak = rss_mb(proc.pid)
            while time.monotonic() - t0 < step:
                time.sleep(min(1.0, step))
                peak = max(peak, rss_mb(proc.pid))
            cpu = 100 * (cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
            out.append({"rss_mb": peak, "cpu_pct": cpu})
            report(out[-1])
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon died while idle: {site.log_tail()}")
        return out
    finally:
        site.close()


def ready_times(bench: Bench, runs: int) -> list[Figures]:
    """Start the daemon ``runs`` times (fresh state each time); seconds until READY=1."""
    site = bench.site()
    out: list[Figures] = []
    try:
        v1 = site.push("v1")
        site.up(v1)
        for i in range(runs):
            out.append({"ready_s": _one_ready(site, i)})
            bench.log(f"  READY run {i + 1}: {out[-1]['ready_s']:.3f}s")
    finally:
        site.close()
    return out


def _one_ready(site: Site, i: int) -> float:
    cfg = site.agent_config(30.0, state=f"ready{i}")
    path = site.dir / f"notify{i}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(30)
        env = {**_clean_env(), "NOTIFY_SOCKET": str(path)}
        t0 = time.monotonic()
        proc = subprocess.Popen([str(CLI), "--config", str(cfg), "run"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:
                msg = sock.recv(4096).decode(errors="replace")
                if "READY=1" in msg.splitlines():
                    return time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def requests_per_poll(bench: Bench, counts: list[int], polls: int) -> list[Figures]:
    """Idle-poll requests at each tag count, in ``bench/twbench-rpp<hex>/app``."""
    uid = secrets.token_hex(3)
    repo = f"bench/twbench-rpp{uid}/app"
    CREATED.append(f"twbench-rpp{uid}")
    pushed = []
    rows: list[Figures] = []
    try:
        branch = build_and_push(bench.client, repo, version=f"branch-{uid}",
                                branch="feature")
        pushed.append(branch)
        pushed.append(build_and_push(bench.client, repo, version=f"v1-{uid}"))
        done = 0
        for n in counts:
            rpp.flood(bench.raw, repo, branch.sha_tag, done, n)
            done = n
            row = rpp.measure(repo, polls)
            rows.append({k: float(v) for k, v in row.items()})
            bench.log(f"  {int(row['tags']):,} tags: {row['per_poll']:.2f} requests/poll")
    finally:
        for img in pushed:
            with contextlib.suppress(Exception):
                bench.raw.delete_manifest(repo, img.digest)
    return rows
