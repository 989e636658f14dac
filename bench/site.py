"""One benchmark site: an app run from ``deploy/compose.yml`` as its own compose project,
its repository in the bed's registry, and either flow driving it: the agent daemon
(``twilight-agent run``) or ``bench/shell_deploy.sh``.

Everything is named ``twbench-<hex>`` (project, containers, volume, repository path) and
``close()`` removes it all: containers, volume, local images, the manifests pushed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import httpx

from testbed import engines
from testbed.images import AppImage, build_and_push
from testbed.rawclient import RawRegistry
from testbed.services import REGISTRY_HOST, REGISTRY_URL

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / ".venv" / "bin" / "twilight-agent"
SHELL_FLOW = ROOT / "bench" / "shell_deploy.sh"
COMPOSE_FILE = ROOT / "deploy" / "compose.yml"
CREATED: list[str] = []  # every site id this process made, for the final sweep


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_time(stamp: str) -> float:
    """Wall time of a structlog ISO timestamp (``2026-11-22T05:00:00.123456Z``)."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Site:
    """A compose project ``twbench-<hex>`` serving on a free loopback port."""

    def __init__(self, client: docker.DockerClient, raw: RawRegistry, workdir: Path) -> None:
        self.client, self.raw = client, raw
        self.uid = f"twbench-{secrets.token_hex(3)}"
        CREATED.append(self.uid)
        self.repo = f"bench/{self.uid}/app"
        self.dir = workdir / self.uid
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.pushed: list[AppImage] = []
        shutil.copy(COMPOSE_FILE, self.dir / "docker-compose.yml")

    @property
    def ref(self) -> str:
        return f"{REGISTRY_HOST}/{self.repo}"

    def refs(self, img: AppImage) -> set[str]:
        """The references a container of ``img`` shows in engine events (agent, compose)."""
        return {f"{self.ref}@{img.digest}", f"{self.ref}:{img.sha_tag}"}

    def healthz(self) -> tuple[int, str]:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
        except httpx.HTTPError:
            return 0, ""
        return r.status_code, r.text.strip()

    def wait_serving(self, version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthz() == (200, f"ok {version}"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.uid} never answered ok {version} ({self.healthz()})")

    # -- images -------------------------------------------------------------------------
    def push(self, version: str, mode: str = "good", *, main: bool = True) -> AppImage:
        """Build and push like CI. ``main=False``: only ``sha-<7>``; ``move_main`` later.

        The version carries the site's id, so no two sites (nor anyone else's builds on
        the engine) share a build-cache step that one's cleanup could prune under another.
        """
        img = build_and_push(self.client, self.repo, version=f"{version}-{self.uid[8:]}",
                             mode=mode,
                             branch="main" if main else "feature")
        self.pushed.append(img)
        return img

    def move_main(self, img: AppImage) -> float:
        """Point ``main`` (then ``latest``) at ``img``; wall time ``main`` moved."""
        self.raw.tag(self.repo, img.sha_tag, "main")
        t = time.time()
        self.raw.tag(self.repo, img.sha_tag, "latest")
        return t

    # -- compose ------------------------------------------------------------------------
    def write_env(self, tag: str) -> None:
        (self.dir / ".env").write_text(
            f"COMPOSE_PROJECT_NAME={self.uid}\nIMAGE_REPO={self.ref}\nIMAGE_TAG={tag}\n"
            f"APP_PORT={self.port}\n")

    def compose(self, *args: str) -> None:
        flavour = compose_flavour()
        subprocess.run([*engines.compose_argv(flavour), *args], cwd=self.dir, check=True,
                       capture_output=True, timeout=180, env=engines.compose_env(flavour))

    def up(self, img: AppImage) -> None:
        self.write_env(img.sha_tag)
        self.compose("up", "-d")
        self.wait_serving(img.version)

    # -- the shell flow -----------------------------------------------------------------
    def shell_deploy(self, tag: str) -> tuple[int, dict[str, float]]:
        """Run the reference flow; (exit code, {event: wall time}) from its stderr."""
        flavour = compose_flavour()
        env = {**engines.compose_env(flavour),
               "COMPOSE": " ".join(engines.compose_argv(flavour))}
        p = subprocess.run(["bash", str(SHELL_FLOW), tag], cwd=self.dir, capture_output=True,
                           text=True, timeout=300, env=env)
        steps: dict[str, float] = {}
        for line in p.stderr.splitlines():
            stamp, _, rest = line.partition(" ")
            with contextlib.suppress(ValueError):
                steps.setdefault(rest.split(" ", 1)[0], float(stamp))
        return p.returncode, steps

    # -- the agent ----------------------------------------------------------------------
    def agent_config(self, poll_interval: float, state: str = "state") -> Path:
        cfg = {"IMAGE": self.ref, "REGISTRY_URL": REGISTRY_URL,
               "COMPOSE_PROJECT": self.uid, "SERVICE": "app",
               "ENV_FILE": str(self.dir / ".env"), "STATE_DIR": str(self.dir / state),
               "RUNTIME_DIRECTORY": str(self.dir / "run"), "LOG_FORMAT": "json",
               "POLL_INTERVAL": f"{poll_interval:g}s", "HEALTH_TIMEOUT": "60s",
               "WATCH": "0"}  # the watch adds no swap time; it only delays the next deploy
        path = self.dir / f"agent-{state}.env"
        path.write_text("".join(f"TWILIGHT_{k}={v}\n" for k, v in cfg.items()))
        return path

    def start_agent(self, poll_interval: float, **env: str) -> subprocess.Popen[bytes]:
        """``twilight-agent run``; returns once its first poll has found nothing to do."""
        cfg = self.agent_config(poll_interval)
        self.log_path = self.dir / "agent.log"
        with open(self.log_path, "ab") as log:
            self.daemon = subprocess.Popen(
                [str(CLI), "--config", str(cfg), "run"], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, env={**_clean_env(), **env})
        deadline = time.monotonic() + 60
        while not any(e["event"] == "cycle" for e in self.agent_events()):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start: {self.log_tail()}")
            time.sleep(0.1)
        return self.daemon

    def agent_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if isinstance(ev, dict) and "event" in ev:
                    ev["t"] = log_time(ev["timestamp"]) if "timestamp" in ev else 0.0
                    out.append(ev)
        return out

    def wait_agent(self, event: str, timeout: float, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.agent_events():
                if ev["event"] == event and all(ev.get(k) == v for k, v in match.items()):
                    return ev
            if self.daemon is not None and self.daemon.poll() is not None:
                break
            time.sleep(0.1)
        raise TimeoutError(f"no agent {event} {match} within {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 8) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return "(no log)"

    def stop_agent(self) -> None:
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None

    # -- cleanup ------------------------------------------------------------------------
    def close(self) -> None:
        self.stop_agent()
        with contextlib.suppress(Exception):
            self.compose("down", "-v", "--remove-orphans", "-t", "2")
        d = self.client
        label = f"com.docker.compose.project={self.uid}"
        for c in d.containers.list(all=True, filters={"label": label}) + \
                d.containers.list(all=True, filters={"name": self.uid}):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True, v=True)
        for v in d.volumes.list(filters={"name": self.uid}):
            with contextlib.suppress(docker.errors.APIError):
                v.remove(force=True)
        sweep_images(d, [self.uid])
        for img in self.pushed:
            with contextlib.suppress(Exception):
                self.raw.delete_manifest(self.repo, img.digest)
        shutil.rmtree(self.dir, ignore_errors=True)


def sweep_images(client: docker.DockerClient, uids: list[str]) -> None:
    """Remove every container, volume and local image named with one of ``uids`` (what a
    site's own cleanup could not remove, e.g. while the engine was restarting)."""
    for uid in uids:
        for c in client.containers.list(all=True, filters={"name": uid}):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True, v=True)
        for v in client.volumes.list(filters={"name": uid}):
            with contextlib.suppress(docker.errors.APIError):
                v.remove(force=True)
    for img in client.api.images(all=True):  # no per-image inspect racing a removal
        refs = (img.get("RepoTags") or []) + (img.get("RepoDigests") or [])
        if any(uid in r for uid in uids for r in refs):
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(img["Id"], force=True)


def _clean_env() -> dict[str, str]:
    """The environment for the agent: no TWILIGHT_* or systemd variables leak in."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("TWILIGHT_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_"))}


def compose_flavour() -> str:
    """What the host's users run on this engine: compose v2 on 26 (v1 cannot bring a
    service back there), Debian 12's docker-compose 1.29 on 20.10."""
    return "v2" if engines.running_key() == "26" else "v1"
