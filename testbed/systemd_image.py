"""The systemd test image: a Debian bookworm rootfs made with ``debootstrap``, imported.

The e2e layer boots it as a container on the bed's engine (see design.md, "Test bed") and
installs twilight-agent in it as a real unit. Building it is the slow part of the e2e
layer, so the image is tagged with a hash of everything that goes into it and reused when
that tag exists; downloaded packages are kept in ``.bed/debootstrap-cache`` so even a
rebuild does not download them again.

    python -m testbed.systemd_image          # build unless present; print the tag
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker

from testbed.services import DEFAULT_WORKDIR
from testbed.util import BedError, image_exists

REPOSITORY = "twilight-e2e-systemd"
SUITE = "bookworm"
INCLUDE = ["systemd", "systemd-sysv", "dbus", "procps", "python3", "python3-venv", "curl",
           "ca-certificates", "iproute2"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# Units a container has no use for: they only slow the boot down or fail in it.
MASKED = ["getty@tty1.service", "console-getty.service", "systemd-logind.service",
          "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
          "e2scrub_reap.service", "fstrim.timer", "systemd-remount-fs.service",
          "systemd-firstboot.service", "systemd-udevd.service", "systemd-udev-trigger.service",
          "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
          "dpkg-db-backup.timer"]
# Bump when the steps below change in a way the hash of the constants does not see.
RECIPE = "3"
Log = Callable[[str], None]


def mirror() -> str:
    """The Debian mirror this machine already uses (deb822 sources), else deb.debian.org."""
    try:
        text = SOURCES.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M):
        if not uri.rstrip("/").endswith("-security"):
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def image_tag(mirror_url: str | None = None) -> str:
    """``twilight-e2e-systemd:<hash of the inputs>``."""
    inputs = "\n".join([RECIPE, SUITE, mirror_url or mirror(), *INCLUDE, *MASKED])
    return f"{REPOSITORY}:{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BedError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def debootstrap(rootfs: Path, cache: Path, mirror_url: str) -> None:
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise BedError("debootstrap is not installed: run `bash scripts/test` as root "
                       "(it apt-installs debootstrap)")
    if os.geteuid() != 0:
        raise BedError("building the systemd test image needs root (debootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}",
          f"--cache-dir={cache.resolve()}", SUITE, str(rootfs), mirror_url],
         f"debootstrap {SUITE} from {mirror_url}")


def trim(rootfs: Path) -> None:
    """Mask units a container cannot use, make the machine id per boot, drop docs/caches."""
    system = rootfs / "etc/systemd/system"
    for unit in MASKED:
        link = system / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "etc/hostname").write_text("twilight-e2e\n")
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "var/cache/apt",
                "var/lib/apt/lists"):
        shutil.rmtree(rootfs / sub, ignore_errors=True)
        (rootfs / sub).mkdir(parents=True, exist_ok=True)


def import_rootfs(rootfs: Path, tag: str) -> None:
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
                           stdout=subprocess.PIPE)
    imp = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout,
                         capture_output=True, text=True, check=False)
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or imp.returncode != 0:
        raise BedError(f"docker import of the rootfs failed: {imp.stderr.strip()}")


def ensure_image(client: docker.DockerClient, workdir: Path = DEFAULT_WORKDIR,
                 log: Log = print) -> str:
    """Return the image tag, building it first unless it exists. Safe to run concurrently."""
    tag = image_tag()
    if image_exists(client, tag):
        log(f"systemd image {tag}: reused")
        return tag
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "systemd-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if image_exists(client, tag):
            log(f"systemd image {tag}: built by a concurrent run, reused")
            return tag
        t0 = time.monotonic()
        rootfs = workdir / "systemd-rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        try:
            debootstrap(rootfs, workdir / "debootstrap-cache", mirror())
            t1 = time.monotonic()
            trim(rootfs)
            import_rootfs(rootfs, tag)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        log(f"systemd image {tag}: built in {time.monotonic() - t0:.0f}s "
            f"(debootstrap {t1 - t0:.0f}s, import {time.monotonic() - t1:.0f}s)")
    return tag


def main() -> int:
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto")
    try:
        print(ensure_image(client))
    except BedError as exc:
        print(f"systemd image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
