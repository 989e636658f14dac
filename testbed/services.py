"""Bring up and tear down the bed's services: dockerd, the registry and its token server.

What the bed starts it records in ``<workdir>/state.json`` and stops again on ``down``;
an engine that already answers on the socket is reused and left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker
import httpx

from testbed import engines
from testbed.tokenserver import ISSUER, SERVICE, make_signing_material
from testbed.util import BedError, wait_until

REGISTRY_HOST = "127.0.0.1:5000"
REGISTRY_URL = f"http://{REGISTRY_HOST}"
TOKEN_PORT = 5001
USERNAME = "twilight-ci"
# A fixed, recognisable fake PAT: the security tests scan every log line for it.
PASSWORD = "ghp_TwilightTestBedSecret0123456789abcdef"
DEFAULT_WORKDIR = Path(
    os.environ.get("TWILIGHT_BED_DIR", Path(__file__).resolve().parent.parent / ".bed"))


@dataclass
class BedState:
    workdir: str
    pids: dict[str, int] = field(default_factory=dict)
    started_engine: bool = False
    engine: str = ""  # the engine key answering when the bed was last brought up
    timings: dict[str, float] = field(default_factory=dict)

    def save(self) -> None:
        Path(self.workdir, "state.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> BedState | None:
        try:
            return cls(**json.loads((workdir / "state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def engine_client(timeout: int = 60) -> docker.DockerClient:
    return docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto",
                               timeout=timeout)


def engine_answers() -> bool:
    try:
        engine_client(timeout=5).ping()
        return True
    except Exception:
        return False


def registry_answers() -> bool:
    try:
        r = httpx.get(f"{REGISTRY_URL}/v2/", timeout=2)
        return r.status_code == 401 and "Bearer" in r.headers.get("www-authenticate", "")
    except httpx.HTTPError:
        return False


# Services outlive the call that started them; holding their Popen objects keeps Python
# from warning that a child is "still running" when one would be garbage-collected.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:  # the child holds its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _CHILDREN.append(proc)
    return proc


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_engine(state: BedState, want: str | None = None) -> None:
    """Have engine ``want`` (default: ``TESTBED_ENGINE``, else whatever answers, else 20.10)
    answer on the socket: reuse it if it already does, else stop the other engine and
    start this one (see ``testbed.engines``)."""
    want = want or engines.wanted()
    current = engines.running_key() if engine_answers() else None
    if current is not None and want in (None, current):
        state.engine = current
        return
    if current is not None:
        if not engines.dockerd_pids():
            raise BedError(f"engine {current} answers on /var/run/docker.sock but no dockerd "
                           f"runs on this machine (a shared socket?): cannot switch to "
                           f"engine {want} here")
        engines.stop_running()
        state.pids.pop("dockerd", None)
    key = want or engines.DEFAULT_ENGINE
    if key == "20.10" and shutil.which("dockerd") is None:
        raise BedError("no Docker engine answers on /var/run/docker.sock and dockerd is not "
                       "installed: run `bash scripts/test` as root (it apt-installs docker.io)")
    state.pids["dockerd"] = engines.start(key, Path(state.workdir, "dockerd.log"))
    state.started_engine = True
    state.engine = key


def engine_pings(sock_path: str = "/var/run/docker.sock") -> bool:
    """GET /_ping on the engine's socket, closing it whatever happens (docker-py leaves a
    socket open when the connect is refused)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(sock_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            head = s.recv(64)
        except OSError:
            return False
    return head.startswith(b"HTTP/1.") and b" 200 " in head


def stop_engine(timeout: float = 90) -> list[str]:
    """Stop the running dockerd (SIGTERM, wait for it to exit) and return its command line,
    for ``start_engine_again``. Without live-restore its containers stop with it."""
    pids = engines.dockerd_pids()  # the bed's engine, never a fleet node's
    if not pids:
        raise BedError("no dockerd is running to stop")
    # The same command line again: the engine keeps its binary, data root and exec root.
    argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    for pid in pids:
        _kill(pid, timeout=timeout)
    return argv


def start_engine_again(argv: list[str], workdir: Path = DEFAULT_WORKDIR,
                       timeout: float = 90) -> int:
    """Start dockerd with the command line ``stop_engine`` returned; return the new pid once
    it answers. Containers with a restart policy come back when it starts."""
    log = Path(workdir, "dockerd.log")
    with open(log, "ab") as fh:  # setsid -f: dockerd is nobody's child here, like before
        subprocess.run(["setsid", "-f", *argv],
                       stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       check=True, timeout=30)
    try:
        wait_until(engine_pings, timeout=timeout, interval=0.2, what="dockerd to answer")
    except TimeoutError as exc:
        raise BedError(f"dockerd did not come back; last log lines:\n{_tail(log)}") from exc
    pid = engines.dockerd_pids()[0]
    state = BedState.load(workdir)
    if state is not None and state.started_engine:
        state.pids["dockerd"] = pid
        state.save()
    return pid


def restart_engine(workdir: Path = DEFAULT_WORKDIR, timeout: float = 90) -> int:
    """Stop the running dockerd and start it again the way ``start_engine`` does; return
    the new pid once it answers. The registry and token server are host processes: they
    stay."""
    return start_engine_again(stop_engine(timeout), workdir, timeout)


def _registry_config(workdir: Path, cert: Path) -> Path:
    cfg = workdir / "registry.yml"
    cfg.write_text(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {workdir / 'registry-data'}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: {REGISTRY_HOST}
  secret: twilight-testbed-not-a-secret
auth:
  token:
    realm: http://127.0.0.1:{TOKEN_PORT}/token
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {cert}
""")
    return cfg


def registry_log_path() -> Path:
    """The log of the registry answering on :5000 (beside the config its command line
    names), which must hold its access log: one line per request it served."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
        except (OSError, ValueError):
            continue
        if len(argv) == 3 and argv[1] == "serve" and argv[2].endswith("/registry.yml"):
            config = Path(argv[2])
            if "accesslog:\n    disabled: false" not in config.read_text():
                raise BedError(f"the registry runs without its access log ({config}): "
                               "restart the bed (python -m testbed down; python -m testbed up)")
            return config.parent / "registry.log"
    raise BedError("no bed registry process found (python -m testbed up)")


def start_registry(state: BedState) -> None:
    if registry_answers():
        return
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise BedError("the distribution registry is not installed: run `bash scripts/test` "
                       "as root (it apt-installs docker-registry)")
    workdir = Path(state.workdir)
    key, cert = make_signing_material(workdir)
    users = json.dumps({USERNAME: PASSWORD})
    tok_log = workdir / "tokenserver.log"
    env_users = workdir / "users.json"
    env_users.write_text(users)
    env_users.chmod(0o600)
    tok = _spawn([sys.executable, "-m", "testbed", "tokenserver", "--key", str(key),
                  "--users", str(env_users), "--port", str(TOKEN_PORT)], tok_log)
    state.pids["tokenserver"] = tok.pid
    reg_log = workdir / "registry.log"
    reg = _spawn([binary, "serve", str(_registry_config(workdir, cert))], reg_log)
    state.pids["registry"] = reg.pid
    state.save()
    try:
        wait_until(registry_answers, timeout=30, interval=0.1, what="the registry on :5000")
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{TOKEN_PORT}/_stats", timeout=1)
                   .status_code == 200, timeout=30, interval=0.1, what="the token server")
    except TimeoutError as exc:
        raise BedError(f"registry/token server did not come up; registry log:\n{_tail(reg_log)}"
                       f"\ntoken server log:\n{_tail(tok_log)}") from exc


def up(workdir: Path = DEFAULT_WORKDIR, engine: str | None = None) -> BedState:
    """Start what is missing (switching to ``engine`` if another one answers); return the
    state naming what this call started."""
    workdir.mkdir(parents=True, exist_ok=True)
    old = BedState.load(workdir)
    state = old if old and (engine_answers() and registry_answers()) else BedState(str(workdir))
    t0 = time.monotonic()
    start_engine(state, engine)
    state.timings["engine_s"] = round(time.monotonic() - t0, 2)
    t1 = time.monotonic()
    start_registry(state)
    state.timings["registry_s"] = round(time.monotonic() - t1, 2)
    state.save()
    return state


def _kill(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with contextlib.suppress(ChildProcessError):  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def down(workdir: Path = DEFAULT_WORKDIR) -> list[str]:
    """Stop what ``up`` started (registry, token server, and dockerd if the bed started it)."""
    state = BedState.load(workdir)
    if state is None:
        return []
    stopped = []
    for name in ("registry", "tokenserver"):
        pid = state.pids.pop(name, None)
        if pid:
            _kill(pid)
            stopped.append(name)
    if state.pids.pop("dockerd", None):
        engines.stop_running()  # also what the engine leaves behind (bridges, compose link)
        stopped.append(f"dockerd ({state.engine or 'engine'})")
    (workdir / "state.json").unlink(missing_ok=True)
    return stopped
