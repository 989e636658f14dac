"""The reverse-proxy test image: Debian 12's nginx in front of the app, on the app's network.

The zero-downtime layout (issue 15) puts the app behind a reverse proxy that reaches it by
its network alias; two containers share the alias during a start-first swap. This image is
that proxy, built like the other bed images from Debian packages only (no image can be
pulled): ``apt-get download`` of ``nginx`` and the libraries it links (Debian 12's, from the
host's own apt sources), ``dpkg-deb -x`` into a rootfs, plus the host's static busybox for a
small entry script, built ``FROM scratch``. It is tagged with a hash of everything that goes
into it and reused when that tag exists; the downloaded ``.deb`` files are kept in
``.bed/proxy-debs`` so a rebuild (the other engine, a pruned image) downloads nothing.

What the proxy does (``NGINX_CONF``): listen on 80 and pass every request to
``http://$PROXY_UPSTREAM_HOST:$PROXY_UPSTREAM_PORT`` (default ``web:8080``, the entry script
fills them in at start). The upstream is a variable, so nginx resolves it per request
through the engine's DNS (``resolver 127.0.0.11 valid=1s``) instead of once at start-up;
each resolution gives *every* address of the alias and nginx builds a round-robin set of
them for the request, so ``proxy_next_upstream`` moves to the next container when one
refuses, resets or does not accept within ``proxy_connect_timeout`` (a container that has
just stopped: its address no longer answers at all). The access log (stdout) has the
addresses each request tried: ``upstream=10.0.0.2:8080, 10.0.0.3:8080``.

Why these settings, measured with the 50 ms prober through the proxy while a second
container joins the alias and the first is stopped (``docker stop``), 75-115 requests a run:
as here, 0 failed (13 runs, both engines; 4-21 requests paid the 200 ms connect timeout on
the address that had gone, until the 1 s cached resolution expired); with nginx's default
60 s connect timeout, 15 and 19 failed (the prober gives up after 1 s, nginx still waits on
an address that drops packets); with ``proxy_next_upstream off``, 18 and 23 failed (504).
A literal upstream (``proxy_pass http://web:8080``) is resolved once at start-up and never
sees the new container at all; ``server web:8080 resolve`` in an ``upstream`` block needs
nginx 1.27.3 (Debian 12 has 1.22).

    python -m testbed.proxy_image          # build unless present; print the tag
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

from testbed.services import DEFAULT_WORKDIR
from testbed.util import BedError, image_exists

REPOSITORY = "twilight-bed-proxy"
# nginx and exactly the libraries its binary links (readelf -d: NEEDED); nginx-common is
# left out: the image carries its own nginx.conf and needs none of Debian's.
PACKAGES = ("nginx", "libc6", "libcrypt1", "libpcre2-8-0", "libssl3", "zlib1g")
APPLETS = ("sh", "sed", "cat", "ls", "wget", "sleep", "kill")
# Unpacked but of no use in the image (charset converters, docs, locales): 9 MB less.
TRIM = ("usr/lib/x86_64-linux-gnu/gconv", "usr/lib/aarch64-linux-gnu/gconv", "usr/share",
        "etc/init.d", "etc/logrotate.d", "etc/ufw")
NGINX_CONF = """\
user nobody nogroup;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
    log_format bed '$time_iso8601 $status $request_time "$request" '
                   'upstream=$upstream_addr upstream_status=$upstream_status';
    access_log /dev/stdout bed;
    # The engine's DNS; valid=1s: a container that joins or leaves the alias is seen
    # within a second. ipv6=off: the bed's networks are IPv4 only.
    resolver 127.0.0.11 valid=1s ipv6=off;
    resolver_timeout 1s;
    server {
        listen 80;
        location / {
            # A variable upstream is resolved per request (a literal one once, at start).
            set $app http://@HOST@:@PORT@;
            proxy_pass $app;
            # A stopped container's address drops packets: give up on it quickly.
            proxy_connect_timeout 200ms;
            proxy_send_timeout 5s;
            proxy_read_timeout 5s;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 5;
            proxy_next_upstream_timeout 3s;
        }
    }
}
"""
ENTRY = """\
#!/bin/sh
# Fill in the upstream (the app's network alias and port), then run nginx as PID 1.
sed -e "s/@HOST@/${PROXY_UPSTREAM_HOST:-web}/" -e "s/@PORT@/${PROXY_UPSTREAM_PORT:-8080}/" \\
    /etc/nginx/nginx.conf.in > /etc/nginx/nginx.conf || exit 1
if [ $# -gt 0 ]; then exec "$@"; fi
exec /usr/sbin/nginx -e stderr -g 'daemon off;'
"""
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
DIRS = ("run", "tmp", "var/lib/nginx", "var/log/nginx", "etc/nginx", "root")
# Bump when the steps below change in a way the hash of the constants does not see.
RECIPE = "1"
Log = Callable[[str], None]


def image_tag() -> str:
    """``twilight-bed-proxy:<hash of the inputs>``."""
    inputs = "\n".join([RECIPE, *PACKAGES, *APPLETS, *TRIM, NGINX_CONF, ENTRY, PASSWD, GROUP,
                        *DIRS])
    return f"{REPOSITORY}:{hashlib.sha256(inputs.encode()).hexdigest()[:12]}"


def _cached(cache: Path) -> list[Path] | None:
    debs = {p.name.split("_", 1)[0]: p for p in sorted(cache.glob("*.deb"))}
    if all(pkg in debs for pkg in PACKAGES):
        return [debs[pkg] for pkg in PACKAGES]
    return None


def fetch_debs(cache: Path, log: Log = print) -> list[Path]:
    """The packages' ``.deb`` files: from ``cache``, else downloaded there with the host's
    apt (Debian 12's archive and security updates), after an ``apt-get update`` if the
    host's package lists are missing."""
    found = _cached(cache)
    if found:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    for d in cache.glob("*.deb"):
        d.unlink()
    download = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", *PACKAGES]
    proc = subprocess.run(download, cwd=cache, capture_output=True, text=True, check=False,
                          timeout=300)
    if proc.returncode != 0:
        log(f"proxy image: apt-get download failed, updating the package lists: "
            f"{proc.stderr.strip().splitlines()[-1:]}")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False,
                       timeout=300)
        proc = subprocess.run(download, cwd=cache, capture_output=True, text=True,
                              check=False, timeout=300)
    found = _cached(cache)
    if proc.returncode != 0 or not found:
        raise BedError(f"apt-get download {' '.join(PACKAGES)} failed (exit "
                       f"{proc.returncode}): {proc.stderr.strip()[-800:]}")
    return found


def _busybox() -> Path:
    path = shutil.which("busybox")
    if path is None:
        raise BedError("busybox is not installed: run `bash scripts/test` as root "
                       "(it apt-installs busybox-static)")
    return Path(path)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def rootfs(debs: list[Path], dest: Path) -> None:
    """Unpack the packages into ``dest`` and add what nginx and the entry script need."""
    for deb in debs:
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise BedError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}")
    for sub in TRIM:
        shutil.rmtree(dest / sub, ignore_errors=True)
    for sub in DIRS:
        (dest / sub).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "bin").mkdir(exist_ok=True)
    shutil.copy2(_busybox(), dest / "bin/busybox")
    for applet in APPLETS:
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "etc/passwd").write_text(PASSWD)
    (dest / "etc/group").write_text(GROUP)
    (dest / "etc/nginx/nginx.conf.in").write_text(NGINX_CONF)
    (dest / "entry").write_text(ENTRY)
    (dest / "entry").chmod(0o755)


def build_context(debs: list[Path]) -> bytes:
    dockerfile = "\n".join([
        "FROM scratch",
        "COPY rootfs/ /",
        "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin PROXY_UPSTREAM_HOST=web PROXY_UPSTREAM_PORT=8080",
        "EXPOSE 80",
        'LABEL "org.opencontainers.image.description"="twilight test bed: Debian 12 nginx"'
        f' "twilight.bed.packages"="{" ".join(d.name for d in debs)}"',
        'ENTRYPOINT ["/entry"]',
    ]) + "\n"
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="twilight-proxy-") as tmp:
        rootfs(debs, Path(tmp))
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(tmp, arcname="rootfs", filter=_root_owned)
            info = tarfile.TarInfo("Dockerfile")
            info.size, info.mode = len(dockerfile), 0o644
            tar.addfile(info, io.BytesIO(dockerfile.encode()))
    return buf.getvalue()


def check(client: docker.DockerClient, tag: str) -> str:
    """``nginx -t`` in the image: every library found, the rendered config valid."""
    try:
        out = client.containers.run(tag, ["/usr/sbin/nginx", "-t", "-e", "stderr"],
                                    remove=True, stdout=True, stderr=True)
    except docker.errors.ContainerError as exc:
        raise BedError(f"nginx -t in {tag} failed: {exc.stderr!r}") from exc
    return bytes(out).decode(errors="replace").strip()


def build(client: docker.DockerClient, tag: str, cache: Path, log: Log = print) -> None:
    t0 = time.monotonic()
    debs = fetch_debs(cache, log)
    t1 = time.monotonic()
    try:
        client.images.build(fileobj=io.BytesIO(build_context(debs)), custom_context=True,
                            tag=tag, rm=True, forcerm=True)
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise BedError(f"building the proxy image failed: {exc}") from exc
    try:
        check(client, tag)
    except BedError:
        client.images.remove(tag, force=True)
        raise
    log(f"proxy image {tag}: built in {time.monotonic() - t0:.1f}s "
        f"(packages {t1 - t0:.1f}s, build and check {time.monotonic() - t1:.1f}s)")


def ensure_image(client: docker.DockerClient, workdir: Path = DEFAULT_WORKDIR,
                 log: Log = print) -> str:
    """Return the image tag, building it first unless the engine has it. Safe to run
    concurrently (each engine lane has its own image store: the first test of a lane on a
    fresh engine builds it, in a few seconds from the cached packages)."""
    tag = image_tag()
    if image_exists(client, tag):
        return tag
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "proxy-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image_exists(client, tag):
            build(client, tag, workdir / "proxy-debs", log)
    return tag


def main() -> int:
    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto")
    try:
        tag = ensure_image(client)
        print(tag)
        print(check(client, tag), file=sys.stderr)
    except BedError as exc:
        print(f"proxy image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
