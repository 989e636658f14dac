"""Test app images, built ``FROM scratch`` with Debian's static busybox.

Variants (``mode``): ``good`` (busybox httpd serving ``/healthz``), ``exit`` (exits at boot),
``500`` (``/healthz`` answers 500), ``hang`` (accepts and never answers), ``worker-exit``
(good as web, exits at boot as a worker), ``die-later`` (good, then exits with code 3
``die_after`` seconds after it started), ``sick-later`` (good, then keeps running with
``/healthz`` answering 500 from ``die_after`` seconds on); any mode can boot late
(``boot_delay``) and carry a Docker HEALTHCHECK. ``APP_ROLE=worker`` runs a queue worker
(no port); a command given to the container (a migration) runs instead of the app. Each
build gets a random commit SHA and OCI labels the way docker/metadata-action writes them,
and is pushed like ``docker-build.yml``: ``sha-<7>`` always, plus ``main`` and ``latest``
for main builds.
"""

from __future__ import annotations

import datetime as dt
import io
import secrets
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from testbed.services import PASSWORD, REGISTRY_HOST, USERNAME
from testbed.util import BedError

APP_PORT = 8080
SOURCE = "https://github.com/lacatfly/twilight-demo"

RUN_SCRIPT = """#!/bin/sh
# A command given (a one-off task such as a migration) runs instead, like a real entrypoint.
if [ $# -gt 0 ]; then exec "$@"; fi
echo "app $APP_VERSION starting (mode $APP_MODE, role ${APP_ROLE:-web})"
if [ "${APP_BOOT_DELAY:-0}" != "0" ]; then sleep "$APP_BOOT_DELAY"; fi
# Like a real service, stop promptly on SIGTERM (PID 1 gets no default signal handling).
trap 'kill "$child" 2>/dev/null; echo "app $APP_VERSION stopping"; exit 0' TERM INT
if [ "$APP_ROLE" = worker ]; then  # a queue worker: no port; worker-exit breaks only it
  case "$APP_MODE" in
    exit|worker-exit) echo "worker $APP_VERSION: fatal: queue unreachable" >&2; exit 3 ;;
  esac
  echo "worker $APP_VERSION running"; sleep 3600 & child=$!; wait "$child"; exit 0
fi
case "$APP_MODE" in
  exit) echo "app $APP_VERSION: fatal: cannot open database" >&2; exit 3 ;;
  500) echo "app $APP_VERSION listening (health failing)"; nc -ll -p 8080 -e /app/r500 & ;;
  hang) echo "app $APP_VERSION listening (never answers)"; nc -ll -p 8080 -e /app/rhang & ;;
  *) echo "app $APP_VERSION listening on :8080"; httpd -f -v -p 8080 -h /www & ;;
esac
child=$!
if [ "$APP_MODE" = die-later ]; then  # passes the gate, then dies (a leak, a bad cron)
  sleep "$APP_DIE_AFTER" & wait $!
  echo "app $APP_VERSION: fatal: worker pool exhausted after ${APP_DIE_AFTER}s" >&2; exit 3
fi
if [ "$APP_MODE" = sick-later ]; then  # passes the gate, then /healthz answers 500 (runs on)
  sleep "$APP_DIE_AFTER" & wait $!
  kill "$child"; wait "$child"  # the port is free once httpd is gone
  echo "app $APP_VERSION: database lost after ${APP_DIE_AFTER}s (health failing)"
  nc -ll -p 8080 -e /app/r500 & child=$!
fi
wait "$child"
"""
R500 = """#!/bin/sh
read -r line
printf 'HTTP/1.0 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n'
printf 'Content-Length: 5\\r\\nConnection: close\\r\\n\\r\\nfail\\n'
"""
RHANG = """#!/bin/sh
exec sleep 3600
"""
APPLETS = ["sh", "httpd", "nc", "sleep", "cat", "echo", "ls", "mkdir", "wget", "printf", "sed",
           "touch", "rm", "kill", "ps", "env", "id", "true", "false", "test", "["]


def _busybox() -> Path:
    path = shutil.which("busybox")
    if path is None:
        raise BedError("busybox is not installed: run `bash scripts/test` as root "
                       "(it apt-installs busybox-static)")
    return Path(path)


@dataclass
class AppImage:
    """One pushed build."""

    repo: str  # repository path in the registry, e.g. ``bed/abc123/app``
    revision: str
    digest: str
    tags: list[str]
    version: str
    mode: str
    image_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def sha_tag(self) -> str:
        return "sha-" + self.revision[:7]

    @property
    def ref(self) -> str:
        return f"{REGISTRY_HOST}/{self.repo}"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def build_context(*, version: str, mode: str, boot_delay: float, healthcheck: bool,
                  labels: dict[str, str], volume: str | None, die_after: float = 20) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "rootfs/bin/busybox", _busybox().read_bytes())
        for applet in APPLETS:
            info = tarfile.TarInfo(f"rootfs/bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
        _add(tar, "rootfs/app/run", RUN_SCRIPT.encode())
        _add(tar, "rootfs/app/r500", R500.encode())
        _add(tar, "rootfs/app/rhang", RHANG.encode())
        _add(tar, "rootfs/www/healthz", f"ok {version}\n".encode(), 0o644)
        _add(tar, "rootfs/www/version", f"{version}\n".encode(), 0o644)
        _add(tar, "rootfs/tmp/.keep", b"", 0o644)
        lines = [
            "FROM scratch",
            "COPY rootfs/ /",
            f"ENV PATH=/bin APP_VERSION={version} APP_MODE={mode} APP_BOOT_DELAY={boot_delay:g}"
            f" APP_DIE_AFTER={die_after:g}",
            "WORKDIR /www",
            f"EXPOSE {APP_PORT}",
        ]
        if labels:
            lines.append("LABEL " + " ".join(f'"{k}"="{v}"' for k, v in labels.items()))
        if volume:
            lines.append(f'VOLUME ["{volume}"]')
        if healthcheck:
            lines.append("HEALTHCHECK --interval=1s --timeout=2s --retries=2 --start-period=1s "
                         f"CMD wget -q -O /dev/null http://127.0.0.1:{APP_PORT}/healthz || exit 1")
        lines.append('ENTRYPOINT ["/bin/sh", "/app/run"]')
        _add(tar, "Dockerfile", ("\n".join(lines) + "\n").encode(), 0o644)
    return buf.getvalue()


def _build(client: docker.DockerClient, ctx: bytes, tag: str, mode: str) -> Any:
    """Build the context; once more without the build cache if the engine lost a cached
    parent meanwhile ("failed to get digest ...: open .../imagedb/content/...": the
    previous image's removal pruned it while the classic builder still pointed at it)."""
    for nocache in (False, True):
        try:
            image, _ = client.images.build(fileobj=io.BytesIO(ctx), custom_context=True,
                                           tag=tag, rm=True, forcerm=True, nocache=nocache)
            return image
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            if nocache or "failed to get digest" not in str(exc):
                raise BedError(f"building the {mode} test image failed: {exc}") from exc
    raise AssertionError("unreachable")


def build_and_push(client: docker.DockerClient, repo: str, *, version: str = "v1",
                   mode: str = "good", boot_delay: float = 0, healthcheck: bool = False,
                   labels: bool = True, branch: str = "main", volume: str | None = None,
                   extra_tags: tuple[str, ...] = (), revision: str | None = None,
                   die_after: float = 20) -> AppImage:
    """Build one app image and push it like CI would; return what was pushed.

    ``branch="main"`` pushes ``sha-<7>``, ``main`` and ``latest``; any other branch only
    ``sha-<7>`` (a PR or branch build: it must never be chosen because it is newer).
    """
    revision = revision or secrets.token_hex(20)
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    oci = {
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": SOURCE,
        "org.opencontainers.image.version": version,
    } if labels else {}
    ref = f"{REGISTRY_HOST}/{repo}"
    ctx = build_context(version=version, mode=mode, boot_delay=boot_delay,
                        healthcheck=healthcheck, labels=oci, volume=volume, die_after=die_after)
    tags = ["sha-" + revision[:7]]
    if branch == "main":
        tags += ["main", "latest"]
    tags += list(extra_tags)
    image = _build(client, ctx, f"{ref}:{tags[0]}", mode)
    auth = {"username": USERNAME, "password": PASSWORD}
    digest = ""
    for tag in tags:
        image.tag(ref, tag)
        for line in client.images.push(ref, tag, auth_config=auth, stream=True, decode=True):
            if "error" in line:
                raise BedError(f"push of {ref}:{tag} failed: {line['error']}")
            aux = line.get("aux") or {}
            if aux.get("Digest"):
                digest = aux["Digest"]
    if not digest:
        raise BedError(f"push of {ref} gave no digest")
    # Leave nothing local: the agent must pull it from the registry, as on a real host.
    for tag in tags:
        client.images.remove(f"{ref}:{tag}", noprune=False)
    return AppImage(repo=repo, revision=revision, digest=digest, tags=tags, version=version,
                    mode=mode, image_id=image.id, labels=oci)
