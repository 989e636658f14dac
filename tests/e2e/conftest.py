"""The e2e layer: twilight-agent as a real systemd unit in a booted Debian container.

``machine`` boots the systemd image on the bed's engine (host network, the host's docker
socket) and installs the package and the unit the way README.md says: ``deploy/install.sh``
with the config already in place. The app container the agent manages runs on the same
engine, published on 127.0.0.1, so the agent reaches it and the registry over loopback.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from testbed.images import AppImage
from testbed.services import REGISTRY_HOST, REGISTRY_URL
from testbed.systemd_image import ensure_image
from testbed.util import BedError, wait_until
from tests.conftest import Bed

ROOT = Path(__file__).resolve().parents[2]
UNIT = "twilight-agent.service"
CONFIG = "/etc/twilight-agent/agent.env"
INSTALL_DIR = "/tmp/twilight-install"
# How the design's test bed boots systemd in a container (`--privileged` fails here).
# NET_ADMIN: a host's systemd has it, and the unit hands it to the agent (neighbours.py).
BOOT = ["--network", "host", "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
        "--security-opt", "seccomp=unconfined", "--cgroupns=host",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "-v", "/var/run/docker.sock:/var/run/docker.sock"]
# systemd in a container moves the credentials mount inside a private namespace, so the
# unit's LoadCredential= directory stays empty and unreadable there. The bed's images are
# public (anonymous pulls): drop the credential for the e2e runs only.
E2E_DROPIN = """# e2e only: LoadCredential= cannot hand credentials over inside a docker container
[Service]
LoadCredential=
"""


def _say(request: pytest.FixtureRequest, line: str) -> None:
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)


@pytest.fixture(scope="session")
def systemd_image(bed: Bed, request: pytest.FixtureRequest) -> str:
    try:
        return ensure_image(bed.docker, log=lambda line: _say(request, line))
    except BedError as exc:
        pytest.fail(f"cannot build the systemd test image: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The pinned dependencies (deploy/requirements.txt) as released wheels, and the package
    built from a copy of the working tree."""
    t0 = time.monotonic()
    base = tmp_path_factory.mktemp("wheelhouse")
    src, out = base / "src", base / "wheels"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "twilight_agent", src / "twilight_agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    for argv in (  # the pinned dependencies as released (hashes checked), then ours
            ["download", "--require-hashes", "--only-binary=:all:", "--dest", str(out),
             "-r", str(ROOT / "deploy/requirements.txt")],
            ["wheel", "--no-deps", "--wheel-dir", str(out), str(src)]):
        proc = subprocess.run([*pip, *argv], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"pip {argv[0]} for the wheelhouse failed: "
                        f"{proc.stderr.strip()[-2000:]}", pytrace=False)
    _say(request, f"wheels built in {time.monotonic() - t0:.0f}s")
    return out


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Machine:
    """The booted systemd container."""

    container: Any
    name: str
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, script: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        code, out = self.container.exec_run(["sh", "-c", script], environment=env or {})
        return int(code), out.decode(errors="replace").strip()

    def sh(self, script: str, env: dict[str, str] | None = None) -> str:
        code, out = self.run(script, env)
        assert code == 0, f"`{script}` exited {code}:\n{out}"
        return out

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.put({path: (text.encode(), mode)})

    def put(self, files: dict[str, tuple[bytes, int]]) -> None:
        assert self.container.put_archive("/", _tar(files))

    def prop(self, name: str, unit: str = UNIT) -> str:
        return self.sh(f"systemctl show -p {name} --value {unit}")

    def journal(self, *matches: str, unit: str = UNIT) -> list[dict[str, Any]]:
        """Entries of the unit (this boot), filtered by journal field matches."""
        out = self.sh(f"journalctl -u {unit} -o json --no-pager {' '.join(matches)}")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def events(self, event: str, unit: str = UNIT, **fields: str) -> list[dict[str, Any]]:
        matches = [f"TWILIGHT_EVENT={event}"]
        matches += [f"TWILIGHT_{k.upper()}={v}" for k, v in fields.items()]
        return self.journal(*matches, unit=unit)

    def journal_text(self, unit: str = UNIT) -> str:
        return self.run(f"journalctl -u {unit} --no-pager -o cat | tail -n 60")[1]


def _boot(image: str, name: str) -> Any:
    proc = subprocess.run(["docker", "run", "-d", "--name", name, *BOOT, image,
                           "/lib/systemd/systemd"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"booting the systemd container failed: {proc.stderr.strip()}",
                    pytrace=False)
    return proc.stdout.strip()


@pytest.fixture
def machine(bed: Bed, cleanup: str, systemd_image: str) -> Iterator[Machine]:
    """A booted systemd, not yet with twilight-agent (see ``install``)."""
    t0 = time.monotonic()
    name = f"{cleanup}-systemd"
    cid = _boot(systemd_image, name)
    m = Machine(bed.docker.containers.get(cid), name)
    try:
        wait_until(lambda: m.run("systemctl is-system-running")[1] in ("running", "degraded"),
                   timeout=60, interval=0.3, what="systemd in the container to finish booting")
    except TimeoutError:
        pytest.fail("systemd did not boot: " + m.run("systemctl --failed --no-legend")[1],
                    pytrace=False)
    m.timings["boot_s"] = time.monotonic() - t0
    yield m
    with contextlib.suppress(docker.errors.APIError):  # first, so the agent stops acting
        m.container.remove(force=True)


def install(m: Machine, wheelhouse: Path, config: dict[str, str], instance: str = "") -> str:
    """README's steps: config first (install.sh never overwrites it), then install.sh, which
    installs the package and the unit and runs ``systemctl enable --now``. Returns what
    install.sh printed; ``install_command`` runs it again the same way. ``instance``: one
    of several apps (``--instance NAME``, the template unit)."""
    t0 = time.monotonic()
    files: dict[str, tuple[bytes, int]] = {}
    for whl in wheelhouse.glob("*.whl"):
        files[f"{INSTALL_DIR}/wheels/{whl.name}"] = (whl.read_bytes(), 0o644)
    for rel in ("deploy/install.sh", "deploy/agent.env.example", "deploy/requirements.txt",
                "systemd/twilight-agent.service", "systemd/twilight-agent@.service"):
        files[f"{INSTALL_DIR}/{rel}"] = ((ROOT / rel).read_bytes(), 0o755)
    unit = f"twilight-agent@{instance}.service" if instance else UNIT
    conf = f"/etc/twilight-agent/{instance}.env" if instance else CONFIG
    files[conf] = (render_config(config).encode(), 0o644)
    dropin = "twilight-agent@.service" if instance else UNIT
    # named to sort last: it also empties what install.sh's own drop-ins load
    files[f"/etc/systemd/system/{dropin}.d/zz-e2e.conf"] = (E2E_DROPIN.encode(), 0o644)
    m.put(files)
    args = ("--instance", instance) if instance else ()
    code, out = m.run(install_command(wheelhouse, *args), env=OFFLINE)
    assert code == 0, f"install.sh failed ({code}):\n{out}\n{m.journal_text(unit)}"
    m.timings["install_s"] = time.monotonic() - t0
    return out


# pip inside the machine installs from the staged wheels only.
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"{INSTALL_DIR}/wheels"}


def install_command(wheelhouse: Path, *args: str) -> str:
    """``bash install.sh <our wheel> ARGS`` as staged in the machine by ``install``."""
    ours = next(wheelhouse.glob("twilight_agent-*.whl")).name
    return " ".join([f"bash {INSTALL_DIR}/deploy/install.sh {INSTALL_DIR}/wheels/{ours}",
                     *args])


def render_config(config: dict[str, str]) -> str:
    return "".join(f"TWILIGHT_{k.upper()}={v}\n" for k, v in config.items())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class App:
    """The operator's app container on the host engine, published on 127.0.0.1."""

    bed: Bed
    uid: str
    repo: str
    port: int = field(default_factory=free_port)

    @property
    def name(self) -> str:
        return f"{self.uid}-app"

    @property
    def image(self) -> str:
        return f"{REGISTRY_HOST}/{self.repo}"

    def config(self, **over: str) -> dict[str, str]:
        cfg = {"image": self.image, "registry_url": REGISTRY_URL, "container": self.name,
               "poll_interval": "3s", "health_timeout": "20s", "health_interval": "0.5s",
               "health_soak": "1s", "log_format": "auto", "watch": "0"}
        cfg.update(over)
        return cfg

    def start(self, img: AppImage) -> None:
        d = self.bed.docker
        ref = f"{img.ref}:{img.sha_tag}"  # as an operator's compose file names it
        d.images.pull(ref)
        d.containers.run(ref, name=self.name, detach=True, stop_signal="SIGKILL",
                         ports={"8080/tcp": ("127.0.0.1", self.port)},
                         restart_policy={"Name": "unless-stopped"})
        wait_until(lambda: self.serving() == img.version, timeout=20, what=f"{img.version}")

    def serving(self) -> str | None:
        """The version answering /healthz now, or None."""
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        return r.text.strip().removeprefix("ok ")

    def containers(self) -> list[str]:
        return sorted(c.name for c in self.bed.docker.containers.list(
            all=True, filters={"name": self.name}))

    def running(self) -> bool:
        return bool(self.bed.docker.containers.get(self.name).attrs["State"]["Running"])
