"""The two engines the bed runs, one at a time, on the standard socket.

``20.10``: Debian 12's ``docker.io`` (API 1.41) with its ``docker-compose`` 1.29 (v1),
exactly as the system package starts it (default data and exec roots).

``26``: Debian 13's ``docker.io`` 26.1 (API 1.45), ``docker-cli`` and ``docker-compose``
2.26 (the v2 plugin), fetched with ``apt-get download`` through a private apt
configuration (the host's own apt sources are only read, to find its mirror) and unpacked
with ``dpkg-deb -x`` into a prefix the bed owns. It runs with Debian 12's containerd and
runc, with its own data root, exec root and pidfile, so nothing of one engine is seen by
the other. While it runs, compose v2 is linked where the docker CLI finds plugins
(``docker compose ...`` works); the link goes when it stops.

Which engine: ``TESTBED_ENGINE`` (or ``python -m testbed up --engine``); unset, the engine
already answering is reused, else 20.10 starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.util import BedError, wait_until

SOCKET = "/var/run/docker.sock"
ENGINE_ENV = "TESTBED_ENGINE"
ENGINES = ("26", "20.10")
DEFAULT_ENGINE = "20.10"
ROOT = Path(os.environ.get("TWILIGHT_ENGINES_DIR", "/var/lib/twilight-bed"))
RUN = Path("/run/twilight-bed")
# What Debian 13 ships; the prefix is fetched once per machine.
SUITE = "trixie"
PACKAGES = ("docker.io", "docker-cli", "docker-compose", "tini")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"  # Debian 12's knows trixie's keys
# Where the docker CLI looks for plugins (a standard system directory, not the package's).
PLUGIN_LINK = Path("/usr/local/lib/docker/cli-plugins/docker-compose")


@dataclass(frozen=True)
class Engine:
    """How to start one engine and what comes with it."""

    key: str  # "26" or "20.10"
    dockerd: Path
    extra_args: tuple[str, ...]
    compose: tuple[str, ...]  # the compose flavours to test on it, first = the one users run
    pidfile: Path = Path("/var/run/docker.pid")

    def argv(self) -> list[str]:
        return [str(self.dockerd), "--host", f"unix://{SOCKET}", *self.extra_args]


def prefix() -> Path:
    return ROOT / "engine-26" / "root"


def engine(key: str) -> Engine:
    if key == "20.10":
        return Engine("20.10", Path(shutil.which("dockerd") or "/usr/sbin/dockerd"), (),
                      compose=("v1", "v2"))
    if key == "26":
        p, run = prefix(), RUN / "engine-26"
        return Engine("26", p / "usr/sbin/dockerd", (
            "--data-root", str(ROOT / "engine-26" / "data"), "--exec-root", str(run),
            "--pidfile", str(run / "dockerd.pid"),
            "--config-file", str(ROOT / "engine-26" / "daemon.json"),
            "--userland-proxy-path", str(p / "usr/sbin/docker-proxy"),
            "--init-path", str(p / "usr/bin/tini-static")),
            compose=("v2",), pidfile=run / "dockerd.pid")
    raise BedError(f"unknown engine {key!r}: {ENGINE_ENV} must be one of {', '.join(ENGINES)}")


def wanted() -> str | None:
    key = os.environ.get(ENGINE_ENV, "").strip()
    if key and key not in ENGINES:
        raise BedError(f"{ENGINE_ENV}={key!r}: must be one of {', '.join(ENGINES)}")
    return key or None


# ----------------------------------------------------------------------- what is running
def _get(path: str, timeout: float = 3) -> dict[str, object] | None:
    """GET ``path`` on the engine's socket (HTTP/1.0, closed whatever happens)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(SOCKET)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    try:
        return dict(json.loads(body))
    except ValueError:
        return None


def running_version() -> dict[str, object] | None:
    """The engine's ``/version`` (Version, ApiVersion, ...), or None if nothing answers."""
    return _get("/version")


def key_of(version: str) -> str:
    """``20.10.24+dfsg1`` -> ``20.10``; ``26.1.5+dfsg1`` -> ``26``."""
    major, _, rest = version.partition(".")
    return f"{major}.{rest.split('.')[0]}" if major == "20" else major


def running_key() -> str | None:
    v = running_version()
    return key_of(str(v["Version"])) if v else None


def cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def dockerd_pids() -> list[int]:
    """The bed's own dockerd (the one on ``/var/run/docker.sock``), never a fleet node's."""
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=False)
    lines = {int(p): cmdline(int(p)) for p in found.stdout.split()}
    return [p for p, cmd in lines.items() if f"unix://{SOCKET}" in cmd or "--host" not in cmd]


# ----------------------------------------------------------------------- fetching 26
def host_mirror(etc: Path = Path("/etc")) -> str:
    """The Debian archive URI the host's own apt sources use (read, never changed)."""
    codename = ""
    with contextlib.suppress(OSError):
        m = re.search(r"^VERSION_CODENAME=(\S+)", (etc / "os-release").read_text(), re.M)
        codename = m.group(1) if m else ""
    candidates: list[tuple[str, list[str]]] = []
    for src in sorted((etc / "apt/sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for stanza in re.split(r"\n\s*\n", src.read_text()):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and \
                        fields.get("Enabled", "yes") != "no":
                    candidates += [(u, fields.get("Suites", "").split())
                                   for u in fields.get("URIs", "").split()]
    lists = [etc / "apt/sources.list", *sorted((etc / "apt/sources.list.d").glob("*.list"))]
    for src in lists:
        with contextlib.suppress(OSError):
            for line in src.read_text().splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    candidates.append((m.group(1), [m.group(2)]))
    for uri, suites in candidates:  # the main archive: it serves the release's own suite
        if codename in suites and "security" not in uri:
            return uri.rstrip("/")
    raise BedError("cannot find the Debian archive in the host's apt sources (looked for a "
                   f"'deb' source of suite {codename or '?'} in /etc/apt/sources.list*): "
                   "the 26 engine is fetched from the same mirror")


def _apt(apt_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    opts = ["-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={apt_dir / 'sources'}",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
            "-o", f"Dir::Cache={apt_dir / 'cache'}",
            "-o", "APT::Sandbox::User=root", "-q"]
    return subprocess.run(["apt-get", *opts, *args], capture_output=True, text=True,
                          cwd=apt_dir / "debs", check=False, timeout=600)


def fetch_26() -> str:
    """Download and unpack Debian 13's engine, CLI and compose v2 into the prefix (once);
    return ``dockerd --version``."""
    p = prefix()
    stamp = p.parent / "packages.txt"
    if stamp.exists() and (p / "usr/sbin/dockerd").exists():
        return _version_line(p / "usr/sbin/dockerd")
    apt_dir = ROOT / "apt"
    for d in ("sources", "lists/partial", "cache/archives/partial", "debs"):
        (apt_dir / d).mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources" / f"{SUITE}.sources").write_text(
        f"Types: deb\nURIs: {host_mirror()}\nSuites: {SUITE}\nComponents: main\n"
        f"Signed-By: {KEYRING}\n")
    for step in (("update",), ("download", *PACKAGES)):
        out = _apt(apt_dir, *step)
        if out.returncode != 0:
            raise BedError(f"apt-get {step[0]} ({SUITE}, private configuration) failed:\n"
                           f"{out.stderr[-1500:]}")
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True)
    debs = sorted((apt_dir / "debs").glob("*.deb"))
    names = []
    for deb in debs:
        pkg = deb.name.split("_", 1)[0]
        if pkg not in PACKAGES:
            continue
        subprocess.run(["dpkg-deb", "-x", str(deb), str(p)], check=True)
        names.append(deb.name)
    (p.parent / "daemon.json").write_text("{}\n")
    plugins = p.parent / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    link.unlink(missing_ok=True)
    link.symlink_to(p / "usr/libexec/docker/cli-plugins/docker-compose")
    stamp.write_text("".join(f"{n}\n" for n in names))
    for deb in debs:
        deb.unlink()
    return _version_line(p / "usr/sbin/dockerd")


def _version_line(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         check=False, timeout=30)
    if out.returncode != 0:
        raise BedError(f"{binary} --version failed: {out.stderr.strip()}")
    return out.stdout.strip()


# ----------------------------------------------------------------------- compose
def compose_argv(flavour: str) -> list[str]:
    """The command a user types: ``docker compose`` (v2) or ``docker-compose`` (v1)."""
    if flavour == "v2":
        return [str(prefix() / "usr/bin/docker"), "compose"]
    if flavour == "v1":
        return [shutil.which("docker-compose") or "docker-compose"]
    raise ValueError(flavour)


def compose_env(flavour: str) -> dict[str, str]:
    """Environment for ``compose_argv(flavour)``: v2 finds its plugin in the bed's CLI config
    directory, on either engine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    if flavour == "v2":
        env["DOCKER_CONFIG"] = str(prefix().parent / "docker-config")
    return env


def compose_version(flavour: str) -> str:
    out = subprocess.run([*compose_argv(flavour), "version", "--short"], capture_output=True,
                         text=True, env=compose_env(flavour), check=False, timeout=60)
    return out.stdout.strip() or f"unavailable: {out.stderr.strip()[-200:]}"


def _link_plugin(on: bool) -> None:
    target = prefix() / "usr/libexec/docker/cli-plugins/docker-compose"
    ours = PLUGIN_LINK.is_symlink() and Path(os.readlink(PLUGIN_LINK)) == target
    if on and not PLUGIN_LINK.exists() and not PLUGIN_LINK.is_symlink():
        PLUGIN_LINK.parent.mkdir(parents=True, exist_ok=True)
        PLUGIN_LINK.symlink_to(target)
    elif not on and ours:
        PLUGIN_LINK.unlink()


# ----------------------------------------------------------------------- start / stop
def stop_running(timeout: float = 90) -> list[int]:
    """SIGTERM every dockerd, wait until each has exited (its containers stop with it), then
    remove what it leaves on the host: its managed containerd, its bridges, compose v2's
    link. Returns the pids stopped."""
    pids = dockerd_pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while dockerd_pids() and time.monotonic() < deadline:
        for pid in pids:  # reap it if it is our child (else it lingers as a zombie)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    for pid in dockerd_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _stop_managed_containerd()
    _remove_bridges()
    _link_plugin(False)
    return pids


def _stop_managed_containerd() -> None:
    """The containerd a dockerd started under its exec root normally exits with it."""
    for _ in range(50):
        found = subprocess.run(["pgrep", "-f", r"^containerd --config .*/containerd\.toml"],
                               capture_output=True, text=True, check=False)
        pids = [int(p) for p in found.stdout.split()  # a fleet node's is its own business
                if f"{RUN}/fleet/" not in cmdline(int(p))]
        if not pids:
            return
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _remove_bridges() -> None:
    """docker0 and the br-<id> bridges of user networks: each engine makes its own again."""
    out = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True,
                         text=True, check=False)
    for m in re.finditer(r"^\d+:\s+(docker0|br-[0-9a-f]{12})[:@]", out.stdout, re.M):
        subprocess.run(["ip", "link", "delete", m.group(1)], capture_output=True, check=False)


def start(key: str, log: Path, timeout: float = 90) -> int:
    """Start engine ``key`` on the standard socket (nothing may be running); return its pid."""
    if key == "26":
        fetch_26()
        (RUN / "engine-26").mkdir(parents=True, exist_ok=True)
    e = engine(key)
    if not e.dockerd.exists():
        raise BedError(f"dockerd for engine {key} is not installed ({e.dockerd}): run "
                       "`bash scripts/test` as root (it installs the engines)")
    with open(log, "ab") as fh:  # setsid -f: dockerd is nobody's child, so it outlives us
        fh.write(f"\n--- testbed: starting engine {key}: {' '.join(e.argv())}\n".encode())
        fh.flush()
        subprocess.run(["setsid", "-f", *e.argv()], stdout=fh, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, check=True, timeout=30)
    try:
        wait_until(lambda: running_version() is not None, timeout=timeout, interval=0.2,
                   what=f"engine {key} to answer")
    except TimeoutError as exc:
        raise BedError(f"engine {key} did not come up; last log lines:\n"
                       f"{_tail(log)}") from exc
    got = running_key()
    if got != key:
        raise BedError(f"started engine {key} but the socket answers as {got}")
    if "v2" in e.compose:  # a host that has `docker compose` (the agent asks it for labels)
        _link_plugin(True)
    pids = dockerd_pids()
    return pids[0] if pids else 0


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def describe() -> dict[str, object]:
    """What answers on the socket: engine key, version, API version (for status lines)."""
    v = running_version()
    if not v:
        return {"engine": None}
    key = key_of(str(v["Version"]))
    return {"engine": key, "version": v.get("Version"), "api": v.get("ApiVersion"),
            "min_api": v.get("MinAPIVersion")}


def lane_line() -> str:
    """One line naming the engine that answers and the compose flavours tested on it."""
    d = describe()
    if d["engine"] is None:
        return "no engine answers on " + SOCKET
    flavours = ", ".join(f"compose {f} {compose_version(f)}"
                         for f in engine(str(d["engine"])).compose)
    return (f"engine {d['engine']} (dockerd {d['version']}, API {d['api']}), {flavours}")
