"""RuntimePort on the Docker engine, through docker-py's low-level ``APIClient``.

The low-level client is used throughout: it posts create bodies as they are (the high-level
``containers.create`` loses fields on the way) and exposes the pull stream, whose in-band
``error`` lines are how the engine reports a failed pull after answering 200.
The API version is negotiated on first use (``version="auto"``): the test engine speaks
1.41, production engines 1.44+; ``create_config`` handles the differences.

Every docker-py / requests exception is translated here: an engine that does not answer
-> ``DockerUnavailable``; anything else it refuses -> ``RuntimeError_`` with its reason.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions

from twilight_agent.adapters.create_config import build_create_plan
from twilight_agent.core.models import Digest
from twilight_agent.core.ports import PARKED_SUFFIX, ContainerState, Snapshot
from twilight_agent.errors import DockerUnavailable, PullFailed, RuntimeError_, TargetNotFound

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
DEFAULT_STOP_TIMEOUT = 10
_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
# Pull stream statuses worth a line on a terminal (per-byte progress is not).
_QUIET_STATUSES = ("Downloading", "Extracting", "Waiting", "Verifying Checksum")


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def close_leaked_sockets(exc: BaseException) -> None:
    """Close the socket docker-py's ``UnixHTTPConnection.connect`` leaves open when the
    engine refuses: it would otherwise be closed by the garbage collector (ResourceWarning).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            sock = tb.tb_frame.f_locals.get("sock")
            if isinstance(sock, socket.socket):
                sock.close()
            tb = tb.tb_next
        todo += [err.__cause__, err.__context__]


def _unavailable(what: str, exc: Exception) -> DockerUnavailable:
    close_leaked_sockets(exc)
    return DockerUnavailable(f"{what}: the Docker engine does not answer ({exc})")


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Translate docker-py and requests exceptions raised while doing ``what``."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise _unavailable(what, exc) from exc
    except docker.errors.APIError as exc:
        raise RuntimeError_(f"{what}: {_explain(exc)}") from exc
    except docker.errors.DockerException as exc:
        raise _unavailable(what, exc) from exc


def repository_of(reference: str) -> str:
    """``host/name`` of ``host/name:tag`` or ``host/name@sha256:...``."""
    name = reference.split("@", 1)[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


def tag_of(reference: str) -> str | None:
    """The tag of ``repo:tag``; None for a digest reference or an image id."""
    if "@" in reference or reference.startswith("sha256:"):
        return None
    _, sep, tail = reference.rpartition(":")
    return tail if sep and "/" not in tail else None


class DockerRuntime:
    """The Docker engine as the deploy agent sees it. Cheap to build; connects on first use."""

    def __init__(self, base_url: str = "unix:///var/run/docker.sock", *, container: str = "",
                 compose_project: str = "", service: str = "", repository: str = "",
                 timeout: int = 60) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._container = container
        self._project = compose_project
        self._service = service
        self._repository = repository
        self._client: docker.APIClient | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def api(self) -> docker.APIClient:
        if self._client is None:
            with engine_errors("connecting to the Docker engine"):
                self._client = docker.APIClient(base_url=self._base_url, version="auto",
                                                 timeout=self._timeout)
        return self._client

    @property
    def api_version(self) -> str:
        return str(self.api.api_version)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DockerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _inspect(self, container_id: str) -> dict[str, Any] | None:
        with engine_errors(f"inspecting container {container_id[:12]}"):
            try:
                return dict(self.api.inspect_container(container_id))
            except docker.errors.NotFound:
                return None

    def _must_inspect(self, container_id: str) -> dict[str, Any]:
        info = self._inspect(container_id)
        if info is None:
            raise TargetNotFound(f"container {container_id[:12]} does not exist")
        return info

    # ------------------------------------------------------------------ finding
    def find_by_name(self, name: str) -> str | None:
        with engine_errors(f"looking up container {name}"):
            found = self.api.containers(all=True, filters={"name": name})
        for c in found:
            if f"/{name}" in (c.get("Names") or []):
                return str(c["Id"])
        return None

    def find_target(self) -> str:
        if self._container:
            cid = self.find_by_name(self._container)
            if cid is None:
                parked = self.find_by_name(self._container + PARKED_SUFFIX)
                hint = f" (only a parked {self._container}{PARKED_SUFFIX})" if parked else ""
                raise TargetNotFound(f"no container named {self._container}{hint}")
            return cid
        if self._project and self._service:
            return self._find_compose_target()
        raise TargetNotFound("no target: set TWILIGHT_CONTAINER or TWILIGHT_COMPOSE_PROJECT "
                             "+ TWILIGHT_SERVICE")

    def _find_compose_target(self) -> str:
        labels = [f"{COMPOSE_PROJECT}={self._project}", f"{COMPOSE_SERVICE}={self._service}"]
        with engine_errors("looking up the compose service"):
            found = self.api.containers(all=True, filters={"label": labels})
        live = [c for c in found
                if not any(n.endswith(PARKED_SUFFIX) for n in c.get("Names") or [])]
        where = f"compose project {self._project} service {self._service}"
        if not live:
            raise TargetNotFound(f"no container for {where}")
        if len(live) > 1:
            names = ", ".join(sorted(c["Names"][0].lstrip("/") for c in live))
            raise TargetNotFound(f"{len(live)} containers for {where} ({names}); "
                                 "set TWILIGHT_CONTAINER to pick one")
        return str(live[0]["Id"])

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, container_id: str) -> Snapshot:
        info = self._must_inspect(container_id)
        with engine_errors(f"inspecting the image of {container_id[:12]}"):
            image = dict(self.api.inspect_image(info["Image"]))
        reference = str((info.get("Config") or {}).get("Image") or "")
        return Snapshot(
            container_id=str(info["Id"]), name=str(info["Name"]).lstrip("/"),
            image_id=str(image["Id"]), digest=self._repo_digest(image, reference),
            tag=tag_of(reference),
            restart_policy=dict((info.get("HostConfig") or {}).get("RestartPolicy") or {}),
            inspect=info, image_inspect=image)

    def _repo_digest(self, image: Mapping[str, Any], reference: str) -> str | None:
        repo_digests = [str(d) for d in image.get("RepoDigests") or []]
        for repo in (self._repository, repository_of(reference)):
            for ref in repo_digests:
                if repo and ref.startswith(repo + "@"):
                    return ref.split("@", 1)[1]
        if len(repo_digests) == 1:
            return repo_digests[0].split("@", 1)[1]
        return None

    # ------------------------------------------------------------------ images
    def pull(self, repository: str, digest: Digest, auth: Mapping[str, str] | None,
             progress: Callable[[str], None] | None = None) -> str:
        ref = f"{repository}@{digest}"
        errors: list[str] = []
        try:
            stream = self.api.pull(ref, stream=True, decode=True,
                                   auth_config=dict(auth) if auth else None)
            for line in stream:  # read to the end even after an error: frees the connection
                self._pull_line(line, errors, progress)
        except docker.errors.APIError as exc:
            raise PullFailed(f"pull of {ref} failed: {_explain(exc)}") from exc
        except (*_UNREACHABLE, docker.errors.DockerException) as exc:
            raise _unavailable(f"pull of {ref}", exc) from exc
        if errors:
            raise PullFailed(f"pull of {ref} failed: {errors[0]}")
        with engine_errors(f"inspecting {ref}"):
            try:
                return str(self.api.inspect_image(ref)["Id"])
            except docker.errors.NotFound as exc:
                raise PullFailed(f"pull of {ref} ended but the image is not there") from exc

    @staticmethod
    def _pull_line(line: Mapping[str, Any], errors: list[str],
                   progress: Callable[[str], None] | None) -> None:
        if "error" in line or "errorDetail" in line:
            detail = line.get("errorDetail") or {}
            errors.append(str(line.get("error") or detail.get("message") or "unknown error"))
            return
        status = str(line.get("status") or "")
        if progress is None or errors or not status or status.startswith(_QUIET_STATUSES):
            return
        ident = str(line.get("id") or "")
        progress(f"{ident}: {status}" if ident and len(ident) <= 12 else status)

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        with engine_errors(f"tagging {image[:19]} as {repository}:{tag}"):
            self.api.tag(image, repository, tag, force=True)

    def prune_images(self, repository: str, keep: set[str], older_than_s: float) -> list[str]:
        cutoff = time.time() - older_than_s
        with engine_errors("listing images and containers for pruning"):
            images = self.api.images()
            used = {str(c.get("ImageID")) for c in self.api.containers(all=True)}
        removed = []
        for img in images:
            refs = [r for r in (img.get("RepoTags") or []) + (img.get("RepoDigests") or [])
                    if repository_of(r) == repository]
            digests = {r.split("@", 1)[1] for r in refs if "@" in r}
            if (not refs or img["Id"] in keep or img["Id"] in used or digests & keep
                    or int(img.get("Created") or 0) >= cutoff):
                continue
            if self._untag_all(refs):
                removed.append(str(img["Id"]))
        return removed

    def _untag_all(self, refs: list[str]) -> bool:
        """Remove this repository's references to an image (never forced)."""
        for ref in refs:
            with engine_errors(f"removing image {ref}"):
                try:
                    self.api.remove_image(ref, force=False, noprune=False)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError:  # in use since we listed, or shared: keep it
                    return False
        return True

    # ------------------------------------------------------------------ swap
    def park(self, snap: Snapshot) -> None:
        info = self._must_inspect(snap.container_id)
        cid = str(info["Id"])
        if (info.get("HostConfig") or {}).get("AutoRemove"):
            raise RuntimeError_(f"{snap.name} runs with --rm: stopping it would delete it, so "
                                "it cannot be kept for a rollback; recreate it without --rm")
        stop_timeout = (info.get("Config") or {}).get("StopTimeout")
        timeout = DEFAULT_STOP_TIMEOUT if stop_timeout is None else int(stop_timeout)
        with engine_errors(f"parking {snap.name}"):
            self.api.update_container(cid, restart_policy={"Name": "no"})
            self.api.stop(cid, timeout=timeout)
            if str(info["Name"]).lstrip("/") != snap.parked_name:
                self.api.rename(cid, snap.parked_name)

    def create_from(self, snap: Snapshot, image: str) -> str:
        with engine_errors(f"inspecting image {image}"):
            try:
                new_image = dict(self.api.inspect_image(image))
            except docker.errors.NotFound as exc:
                raise RuntimeError_(f"image {image} is not on this host (pull it first)"
                                    ) from exc
        plan = build_create_plan(snap.inspect, snap.image_inspect, new_image, image,
                                 snap.name, self.api_version)
        with engine_errors(f"creating {snap.name} from {image}"):
            cid = str(self.api.create_container_from_config(plan.body, name=plan.name)["Id"])
        try:
            for net, endpoint in plan.connect_after:
                self._connect(cid, net, endpoint)
        except RuntimeError_:
            self.remove(cid)
            raise
        return cid

    def _connect(self, cid: str, net: str, endpoint: Mapping[str, Any]) -> None:
        ipam = endpoint.get("IPAMConfig") or {}
        links = [tuple(str(link).split(":", 1)) for link in endpoint.get("Links") or []]
        with engine_errors(f"connecting {cid[:12]} to network {net}"):
            self.api.connect_container_to_network(
                cid, net, aliases=endpoint.get("Aliases"), links=links or None,
                ipv4_address=ipam.get("IPv4Address") or None,
                ipv6_address=ipam.get("IPv6Address") or None,
                link_local_ips=ipam.get("LinkLocalIPs") or None,
                driver_opt=endpoint.get("DriverOpts") or None)

    def start(self, container_id: str) -> None:
        with engine_errors(f"starting {container_id[:12]}"):
            self.api.start(container_id)

    def unpark(self, snap: Snapshot) -> str:
        cid = self.find_by_name(snap.parked_name) or snap.container_id
        info = self._inspect(cid)
        if info is None:
            raise TargetNotFound(f"parked container {snap.parked_name} is gone")
        cid = str(info["Id"])
        with engine_errors(f"restoring {snap.name}"):
            if str(info["Name"]).lstrip("/") != snap.name:
                self.api.rename(cid, snap.name)
            policy = dict(snap.restart_policy) or {"Name": "no"}
            self.api.update_container(cid, restart_policy=policy)
            if not (info.get("State") or {}).get("Running"):
                self.api.start(cid)
        return cid

    def remove(self, container_id: str) -> None:
        with (engine_errors(f"removing container {container_id[:12]}"),
              contextlib.suppress(docker.errors.NotFound)):
                self.api.remove_container(container_id, v=False, force=True)

    # ------------------------------------------------------------------ observing
    def state(self, container_id: str) -> ContainerState:
        info = self._inspect(container_id)
        if info is None:
            return ContainerState(status="missing", running=False)
        st = info.get("State") or {}
        health = (st.get("Health") or {}).get("Status") or None
        running = bool(st.get("Running"))
        return ContainerState(
            status=str(st.get("Status") or "unknown"), running=running,
            exit_code=None if running else st.get("ExitCode"),
            oom_killed=bool(st.get("OOMKilled")), restart_count=int(info.get("RestartCount") or 0),
            health=health, started_at=st.get("StartedAt"))

    def logs_tail(self, container_id: str, lines: int = 50) -> str:
        # Read as a stream and stop at a byte cap: ``tail=lines`` bounds lines, not bytes,
        # and one line of a crashing app can be gigabytes. Control characters other than
        # newline and tab (terminal escapes) are dropped: this text is printed and logged.
        cap = 64 * 1024
        chunks: list[bytes] = []
        size = 0
        with engine_errors(f"reading logs of {container_id[:12]}"):
            try:
                stream = self.api.logs(container_id, stdout=True, stderr=True, tail=lines,
                                       stream=True, follow=False)
            except docker.errors.NotFound:
                return ""
            try:
                for chunk in stream:
                    chunks.append(bytes(chunk)[:cap - size])
                    size += len(chunks[-1])
                    if size >= cap:
                        chunks.append(b"\n[log tail cut at 64 KiB]\n")
                        break
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        text = b"".join(chunks).decode("utf-8", errors="replace")
        return "".join(c for c in text if c in "\n\t" or not (c < " " or "\x7f" <= c < "\xa0"))

    def published_url(self, container_id: str, path: str = "/healthz") -> str | None:
        info = self._inspect(container_id)
        if info is None:
            return None
        ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
        if not any(ports.values()):
            ports = (info.get("HostConfig") or {}).get("PortBindings") or {}
        return published_url_from(ports, path)


def _port_number(key: str) -> int:
    number = key.split("/", 1)[0]
    return int(number) if number.isdigit() else 0


def published_url_from(ports: Mapping[str, Any], path: str = "/healthz") -> str | None:
    """``http://<host>:<port><path>`` for the first published tcp port, lowest port first."""
    for key in sorted((k for k in ports if k.endswith("/tcp")), key=_port_number):
        for binding in ports.get(key) or []:
            host_port = str(binding.get("HostPort") or "")
            if host_port:
                return f"http://{_url_host(str(binding.get('HostIp') or ''))}:{host_port}{path}"
    return None


def _url_host(host_ip: str) -> str:
    if host_ip in ("", "0.0.0.0", "::", "127.0.0.1"):
        return "127.0.0.1"
    return f"[{host_ip}]" if ":" in host_ip else host_ip
