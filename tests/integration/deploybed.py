"""Helpers for the deploy engine's integration tests: an operator-run app container, the
agent's settings for it, and the CLI run as a subprocess (as an operator would)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import docker
import httpx

from testbed.images import AppImage
from testbed.services import PASSWORD, REGISTRY_HOST, REGISTRY_URL, USERNAME
from testbed.util import wait_until
from twilight_agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv" / "bin" / "twilight-agent"
PYTHON = ROOT / ".venv" / "bin" / "python"
# What a leak of the bed's registry credentials looks like: the PAT, its Basic form, and a
# JWT (every token the bed's token server issues starts with "eyJ").
SECRET_FORMS = [PASSWORD, base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode(), "eyJ"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    """One operator-run app container and the agent configured for it."""

    bed: Any
    uid: str
    repo: str
    tmp: Path
    port: int = field(default_factory=free_port)
    config: dict[str, str] = field(default_factory=dict)
    published: bool = True  # False: no host port, reached on its network (behind a proxy)
    procs: list[subprocess.Popen[str]] = field(default_factory=list, repr=False)
    bind_ip: ClassVar[str] = "127.0.0.1"  # where run_app publishes the app's port

    @property
    def name(self) -> str:
        return f"{self.uid}-app"

    @property
    def url(self) -> str:
        if self.published:
            return f"http://127.0.0.1:{self.port}/healthz"
        nets = self.inspect()["NetworkSettings"]["Networks"]
        return f"http://{nets[f'{self.uid}-net']['IPAddress']}:8080/healthz"

    @property
    def env_file(self) -> Path:
        return self.tmp / "compose.env"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    def base_config(self, **over: object) -> dict[str, str]:
        cfg = {"IMAGE": f"{REGISTRY_HOST}/{self.repo}", "REGISTRY_URL": REGISTRY_URL,
               "CONTAINER": self.name, "STATE_DIR": str(self.state_dir),
               "ENV_FILE": str(self.env_file), "HEALTH_TIMEOUT": "8",
               "HEALTH_INTERVAL": "0.5", "HEALTH_SOAK": "1", "LOG_FORMAT": "json",
               "WATCH": "0"}  # the watch after commit has its own tests (test_watch.py)
        cfg.update({k.upper(): str(v) for k, v in over.items()})
        return cfg

    def settings(self, **over: object) -> Settings:
        cfg = {**self.base_config(), **self.config, **{k.upper(): str(v) for k, v in over.items()}}
        return Settings(**{k.lower(): v for k, v in cfg.items()})

    def write_config(self, **over: object) -> Path:
        path = self.tmp / "agent.env"
        cfg = {**self.base_config(), **self.config, **{k.upper(): str(v) for k, v in over.items()}}
        path.write_text("".join(f"TWILIGHT_{k}={v}\n" for k, v in cfg.items()))
        return path

    # -- the operator's container ---------------------------------------------------
    def run_app(self, img: AppImage, entrypoint: list[str] | None = None) -> str:
        """Run ``img`` like an operator: network alias, port, env, labels, a named and an
        anonymous volume, restart policy; write data into both volumes."""
        d, api = self.bed.docker, self.bed.docker.api
        ref = f"{img.ref}@{img.digest}"
        private = self.repo.startswith("private/")  # the operator logged in for those
        d.images.pull(ref, auth_config=self.bed.auth if private else None)
        net = f"{self.uid}-net"
        d.networks.create(net)
        d.volumes.create(f"{self.uid}-data")
        ports = {8080: (self.bind_ip, self.port)} if self.published else {}
        hc = api.create_host_config(port_bindings=ports,
                                    network_mode=net, binds=[f"{self.uid}-data:/data"],
                                    restart_policy={"Name": "unless-stopped"})
        cid = api.create_container(
            ref, name=self.name, environment={"RUNTIME_VAR": "hello"}, ports=[8080],
            stop_timeout=2, entrypoint=entrypoint,
            labels={"runtime.label": "kept"}, host_config=hc,
            networking_config=api.create_networking_config(
                {net: api.create_endpoint_config(aliases=["web"])}))["Id"]
        api.start(cid)
        self.env_file.write_text(f"# compose env\nPOSTGRES_DB=app\nIMAGE_TAG={img.sha_tag}\n")
        self.wait_serving(img.version)
        self.exec("echo named-data > /data/n && echo anon-data > /cache/a")
        return str(cid)

    def exec(self, script: str) -> str:
        code, out = self.bed.docker.containers.get(self.name).exec_run(["sh", "-c", script])
        assert code == 0, out
        return out.decode().strip()

    def inspect(self) -> dict[str, Any]:
        return dict(self.bed.docker.api.inspect_container(self.name))

    def running_digest(self) -> str | None:
        """The digest the container under the target's name runs; None when nothing runs
        under that name (stopped, or between the park and the create of a swap)."""
        try:
            info = self.inspect()
        except docker.errors.NotFound:
            return None
        if not info["State"]["Running"]:
            return None
        img = self.bed.docker.api.inspect_image(info["Image"])
        for rd in img.get("RepoDigests") or []:
            if rd.startswith(f"{REGISTRY_HOST}/{self.repo}@"):
                return str(rd.split("@", 1)[1])
        return None

    def serving(self) -> str | None:
        try:
            r = httpx.get(self.url, timeout=2)
        except httpx.HTTPError:
            return None
        return r.text.strip() if r.status_code == 200 else None

    def wait_serving(self, version: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serving() == f"ok {version}":
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.url} never answered ok {version} (got {self.serving()!r})")

    def data_intact(self) -> bool:
        return self.exec("cat /data/n /cache/a").split() == ["named-data", "anon-data"]

    def containers(self) -> list[str]:
        return sorted(c.name for c in self.bed.docker.containers.list(
            all=True, filters={"name": self.uid}))

    # -- the agent --------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 90,
            **over: object) -> subprocess.CompletedProcess[str]:
        cfg = self.write_config(**over)
        return subprocess.run(self.argv(cfg, *args), capture_output=True,
                              text=True, timeout=timeout, cwd=self.tmp)

    def argv(self, cfg: Path, *args: str) -> list[str]:
        """The agent's command line (a fleet node's site runs it in the node's netns)."""
        return [str(CLI), "--config", str(cfg), *args]

    def popen(self, *args: str, **over: object) -> subprocess.Popen[str]:
        cfg = self.write_config(**over)
        proc = subprocess.Popen(self.argv(cfg, *args), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.tmp)
        self.procs.append(proc)  # ended by teardown() if a test stops before it does
        return proc

    def history(self) -> list[dict[str, Any]]:
        p = self.cli("history", "--json")
        assert p.returncode == 0, p.stderr
        return list(json.loads(p.stdout))

    def status(self) -> dict[str, Any]:
        p = self.cli("status", "--json")
        assert p.returncode == 0, p.stderr
        return dict(json.loads(p.stdout))

    def journal_step(self) -> str | None:
        """The step the agent journaled last while a deploy is open (``None`` when nothing
        is in flight or there is no state database yet): read from the state database."""
        db = self.state_dir / "state.db"
        if not db.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(db, timeout=1)) as c:
                # a deploy's rows go in the transaction that writes its history row
                row = c.execute("SELECT step FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def wait_journal(self, *steps: str, timeout: float = 30,
                     proc: subprocess.Popen[str] | None = None) -> str:
        """Wait until the open journal row names one of ``steps``; fail naming the last one
        seen (or the agent's output, if ``proc`` ended first)."""
        def reached() -> str | None:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the agent ended first: {proc.communicate()}")
            step = self.journal_step()
            return step if step in steps else None
        try:
            return wait_until(reached, timeout=timeout, interval=0.01,
                              what=f"the journal to reach {'/'.join(steps)}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc} (last step: {self.journal_step()})") from None

    def env_tag(self) -> str:
        m = re.search(r"^IMAGE_TAG=(.*)$", self.env_file.read_text(), re.M)
        return m.group(1) if m else ""

    def env_digest(self) -> str:
        m = re.search(r"^IMAGE_DIGEST=@(.*)$", self.env_file.read_text(), re.M)
        return m.group(1) if m else ""

    def teardown(self) -> None:
        """End what the test started and left: agent processes, then the containers."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)  # reaps it and closes its pipes
        self.remove_anonymous_volumes()

    def remove_anonymous_volumes(self) -> None:
        for c in self.bed.docker.containers.list(all=True, filters={"name": self.uid}):
            anon = [m["Name"] for m in c.attrs["Mounts"] if m["Type"] == "volume"
                    and re.fullmatch("[0-9a-f]{64}", m["Name"])]
            c.remove(force=True, v=False)
            for name in anon:
                self.bed.docker.api.remove_volume(name)


def private_site(bed: Any, repo: str, uid: str, tmp: Path, **config: str) -> Site:
    """A site whose image lives in a private repository: the operator pulled it with the
    bed's credentials, and the agent gets them as a user name and a password file."""
    token = tmp / "registry-token"
    token.write_text(PASSWORD + "\n")
    token.chmod(0o600)
    return Site(bed=bed, uid=uid, repo=repo, tmp=tmp,
                config={"REGISTRY_USERNAME": USERNAME, "REGISTRY_PASSWORD_FILE": str(token),
                        **config})


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook endpoint on loopback: yields its URL and the JSON bodies posted to it."""
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def push(site: Site, version: str, **kw: Any) -> AppImage:
    """Push a build of the app (with an anonymous volume at /cache) to the site's repo."""
    return site.bed.push(site.repo, version=version, volume="/cache", **kw)  # type: ignore[no-any-return]


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def python_child(code: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """``python -c code args...`` with the project importable and nothing else inherited."""
    return subprocess.Popen([str(PYTHON), "-c", code, *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


__all__ = ["CLI", "SECRET_FORMS", "Site", "one_line", "private_site", "push", "python_child",
           "sys", "webhook_receiver"]
