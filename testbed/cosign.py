"""The real ``cosign`` for the bed: Debian 13's package (cosign 2.5), fetched like the 26
engine is (``apt-get download`` through the bed's private apt configuration, the host's
own apt sources only read to find its mirror) and unpacked with ``dpkg-deb -x`` into a
prefix the bed owns, once per machine.

``sign`` signs an image on the bed registry through its token auth, the way CI would:
``cosign sign --key ... --tlog-upload=false``, with the registry credentials in a
``DOCKER_CONFIG`` of its own and the key's password in ``COSIGN_PASSWORD``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from testbed import engines
from testbed.services import PASSWORD, REGISTRY_HOST, USERNAME
from testbed.util import BedError

PACKAGE = "cosign"
KEY_PASSWORD = "twilight-bed-cosign"


def prefix() -> Path:
    return engines.ROOT / "cosign" / "root"


def binary() -> Path:
    return prefix() / "usr/bin/cosign"


def _apt_options(apt_dir: Path) -> list[str]:
    return ["-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={apt_dir / 'sources'}",
            "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
            "-o", f"Dir::Cache={apt_dir / 'cache'}",
            "-o", "APT::Sandbox::User=root", "-q"]


def _apt(apt_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", *_apt_options(apt_dir), *args], capture_output=True,
                          text=True, cwd=cwd, check=False, timeout=600)


def fetch() -> str:
    """Download and unpack Debian 13's cosign into the prefix (once); return its version."""
    if binary().exists():
        return version()
    apt_dir, debs = engines.ROOT / "apt-cosign", engines.ROOT / "cosign" / "debs"
    for d in ("sources", "lists/partial", "cache/archives/partial"):
        (apt_dir / d).mkdir(parents=True, exist_ok=True)
    debs.mkdir(parents=True, exist_ok=True)
    (apt_dir / "sources" / f"{engines.SUITE}.sources").write_text(
        f"Types: deb\nURIs: {engines.host_mirror()}\nSuites: {engines.SUITE}\n"
        f"Components: main\nSigned-By: {engines.KEYRING}\n")
    for step in (("update",), ("download", PACKAGE)):
        out = _apt(apt_dir, debs, *step)
        if out.returncode != 0:
            raise BedError(f"apt-get {step[0]} {PACKAGE} ({engines.SUITE}, private "
                           f"configuration) failed:\n{out.stderr[-1500:]}")
    found = sorted(debs.glob(f"{PACKAGE}_*.deb"))
    if not found:
        raise BedError(f"apt-get download {PACKAGE} left no .deb in {debs}")
    shutil.rmtree(prefix(), ignore_errors=True)
    prefix().mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(prefix())], check=True)
    (prefix().parent / "package.txt").write_text(found[-1].name + "\n")
    for deb in found:
        deb.unlink()
    return version()


def version() -> str:
    """The Debian package's version (the binary says ``GitVersion: devel``), after a
    ``cosign version`` that proves the binary runs here."""
    out = subprocess.run([str(binary()), "version"], capture_output=True, text=True,
                         check=False, timeout=60)
    if out.returncode != 0:
        raise BedError(f"{binary()} version failed: {out.stderr.strip()[-300:]}")
    package = (prefix().parent / "package.txt").read_text().strip()
    return package.split("_")[1] if package.count("_") >= 2 else package


def env(workdir: Path) -> dict[str, str]:
    """cosign's environment: the bed registry's credentials in a ``DOCKER_CONFIG`` of its
    own, the key password, no tlog, no network beyond the loopback registry."""
    config = workdir / "docker-config"
    config.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {REGISTRY_HOST: {"auth": auth}}}))
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir),
            "DOCKER_CONFIG": str(config), "COSIGN_PASSWORD": KEY_PASSWORD,
            "COSIGN_YES": "true", "SIGSTORE_NO_CACHE": "true", "TUF_ROOT": str(workdir / "tuf")}


def run(workdir: Path, *args: str, timeout: float = 120,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cosign ARGS`` in ``workdir``; raises ``BedError`` with its stderr when it fails."""
    out = subprocess.run([str(binary()), *args], capture_output=True, text=True, cwd=workdir,
                         env={**env(workdir), **(extra_env or {})}, check=False,
                         timeout=timeout)
    if out.returncode != 0:
        raise BedError(f"cosign {' '.join(args[:2])} failed ({out.returncode}):\n"
                       f"{out.stderr.strip()[-1500:]}")
    return out


def generate_key_pair(workdir: Path, name: str) -> tuple[Path, Path]:
    """``cosign generate-key-pair`` -> (``name.key``, ``name.pub``) in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    run(workdir, "generate-key-pair", "--output-key-prefix", name)
    return workdir / f"{name}.key", workdir / f"{name}.pub"


def sign(workdir: Path, key: Path, repo: str, digest: str,
         annotations: dict[str, str] | None = None, referrers: bool = False) -> None:
    """Sign ``REGISTRY_HOST/repo@digest`` with ``key`` on the bed registry (token auth).

    ``referrers``: as an OCI 1.1 referrer (``--registry-referrers-mode=oci-1-1``, still
    experimental in cosign 2.5); on a registry without the referrers API cosign writes the
    ``sha256-<hex>`` tag schema instead of the ``.sig`` tag."""
    argv = ["sign", "--key", str(key), "--tlog-upload=false", "--yes",
            "--allow-http-registry", "--allow-insecure-registry"]
    if referrers:
        argv.append("--registry-referrers-mode=oci-1-1")
    for k, v in (annotations or {}).items():
        argv += ["-a", f"{k}={v}"]
    run(workdir, *argv, f"{REGISTRY_HOST}/{repo}@{digest}",
        extra_env={"COSIGN_EXPERIMENTAL": "1"} if referrers else None)
