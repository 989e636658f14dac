"""The Docker engine (the ImagePort, and what the container targets stand on), through
docker-py's low-level ``APIClient``.

The low-level client is used throughout: it posts create bodies as they are (the high-level
``containers.create`` loses fields on the way) and exposes the pull stream, whose in-band
``error`` lines are how the engine reports a failed pull after answering 200. The API
version is negotiated on first use (``version="auto"``): 1.41 on 20.10, 1.44+ on the
engines of production hosts; ``create_config`` handles the differences. Every docker-py /
requests exception is translated here: an engine that does not answer ->
``DockerUnavailable``; anything else it refuses -> ``RuntimeError_`` with its reason."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import docker
import docker.errors

from twilight_agent.adapters.docker import task as docker_task
from twilight_agent.adapters.docker.compose_labels import Relabel
from twilight_agent.adapters.docker.create_config import (
    CreatePlan,
    binds_host_ports,
    build_create_plan,
    endpoints_of,
    published_url_from,
    without_aliases,
)
from twilight_agent.adapters.docker.errors import UNREACHABLE, engine_errors, explain, unavailable
from twilight_agent.adapters.docker.logs import prune_images, read_log_tail
from twilight_agent.adapters.docker.neighbours import Neighbours
from twilight_agent.adapters.docker.refs import PullMeter, pull_line, repository_of, tag_of
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.models import Digest
from twilight_agent.core.ports import (
    PARKED_SUFFIX,
    ContainerState,
    Snapshot,
    TaskResult,
)
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import PullFailed, RuntimeError_, TargetNotFound

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


class Listed(NamedTuple):
    """One container as the engine lists it."""

    id: str
    name: str
    labels: dict[str, str]
    image: str  # the reference it was created from


class DockerRuntime:
    """The Docker engine as the deploy agent sees it. Cheap to build; connects on first use."""

    def __init__(self, base_url: str = "unix:///var/run/docker.sock", *, container: str = "",
                 repository: str = "", timeout: int = 60, clock: Clock = SYSTEM) -> None:
        self._base_url = base_url
        self._clock = clock  # the prune cutoff, the pre-deploy task's duration
        self._timeout = timeout
        self._container = container
        self._repository = repository
        self._client: docker.APIClient | None = None
        # The engine's inspect of each snapshotted container and its image: create_from
        # rebuilds the new config from it. Kept here, not in the (journaled) Snapshot.
        self._details: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._neighbours = Neighbours(base_url)

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
        raise TargetNotFound("no target: set TWILIGHT_CONTAINER or TWILIGHT_COMPOSE_PROJECT "
                             "+ TWILIGHT_SERVICE")

    # ------------------------------------------------------------------ snapshot
    def snapshot(self, container_id: str) -> Snapshot:
        info, image = self._describe(container_id)
        reference = str((info.get("Config") or {}).get("Image") or "")
        if len(self._details) > 64:  # a long-running daemon: keep the last deploys' only
            self._details.clear()
        self._details[str(info["Id"])] = (info, image)
        return Snapshot(
            container_id=str(info["Id"]), name=str(info["Name"]).lstrip("/"),
            image_id=str(image["Id"]), digest=self._repo_digest(image, reference),
            tag=tag_of(reference),
            restart_policy=dict((info.get("HostConfig") or {}).get("RestartPolicy") or {}),
            service=str(((info.get("Config") or {}).get("Labels") or {}).get(
                COMPOSE_SERVICE) or ""))

    def _describe(self, container_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        info = self._must_inspect(container_id)
        with engine_errors(f"inspecting the image of {container_id[:12]}"):
            image = dict(self.api.inspect_image(info["Image"]))
        return info, image

    def _details_of(self, snap: Snapshot) -> tuple[dict[str, Any], dict[str, Any]]:
        """The inspect taken with ``snap``; else the (parked) container read again, with
        the restart policy and name it had before it was parked."""
        if snap.container_id in self._details:
            return self._details[snap.container_id]
        info, image = self._describe(snap.container_id)
        host = dict(info.get("HostConfig") or {}, RestartPolicy=dict(snap.restart_policy))
        return dict(info, HostConfig=host, Name="/" + snap.name), image

    def platform(self) -> tuple[str, ...]:
        """The engine's os and architecture (``docker version``), as an index names them."""
        with engine_errors("asking the engine for its platform"):
            v = self.api.version()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(str(v.get("Arch")), str(v.get("Arch")))
        return (str(v.get("Os") or "linux"), arch or "amd64")

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
             progress: Callable[[str], None] | None = None,
             moved: Callable[[str], None] | None = None) -> str:
        ref = f"{repository}@{digest}"
        errors: list[str] = []
        meter = PullMeter()
        try:
            stream = self.api.pull(ref, stream=True, decode=True,
                                   auth_config=dict(auth) if auth else None)
            for line in stream:  # read to the end even after an error: frees the connection
                pull_line(line, errors, progress)
                if meter.moved(line) and moved is not None:
                    moved(meter.summary())
        except docker.errors.APIError as exc:
            raise PullFailed(f"pull of {ref} failed: {explain(exc)}") from exc
        except (*UNREACHABLE, docker.errors.DockerException) as exc:
            raise unavailable(f"pull of {ref}", exc) from exc
        if errors:
            raise PullFailed(f"pull of {ref} failed: {errors[0]}")
        with engine_errors(f"inspecting {ref}"):
            try:
                return str(self.api.inspect_image(ref)["Id"])
            except docker.errors.NotFound as exc:
                raise PullFailed(f"pull of {ref} ended but the image is not there") from exc

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        with engine_errors(f"tagging {image[:19]} as {repository}:{tag}"):
            self.api.tag(image, repository, tag, force=True)

    def prune_images(self, repository: str, keep: set[str], older_than_s: float) -> list[str]:
        return prune_images(self.api, repository, keep, older_than_s, self._clock)

    # ------------------------------------------------------------------ swap
    def park(self, snap: Snapshot) -> None:
        """Restart policy ``no`` and the parked name; the container keeps running."""
        info = self._must_inspect(snap.container_id)
        cid = str(info["Id"])
        if (info.get("HostConfig") or {}).get("AutoRemove"):
            raise RuntimeError_(f"{snap.name} runs with --rm: stopping it would delete it, so "
                                "it cannot be kept for a rollback; recreate it without --rm")
        with engine_errors(f"parking {snap.name}"):
            self.api.update_container(cid, restart_policy={"Name": "no"})
        self.rename(cid, snap.parked_name)

    def stop(self, container_id: str) -> None:
        info = self._must_inspect(container_id)
        if not (info.get("State") or {}).get("Running"):
            return
        stop_timeout = (info.get("Config") or {}).get("StopTimeout")
        timeout = DEFAULT.stop_timeout_s if stop_timeout is None else int(stop_timeout)
        with engine_errors(f"stopping {str(info['Name']).lstrip('/')}"):
            self.api.stop(str(info["Id"]), timeout=timeout)

    def rename(self, container_id: str, name: str) -> None:
        info = self._must_inspect(container_id)
        if str(info["Name"]).lstrip("/") != name:
            with engine_errors(f"renaming {container_id[:12]} to {name}"):
                self.api.rename(str(info["Id"]), name)

    def publishes_ports(self, container_id: str) -> bool:
        return binds_host_ports(self._must_inspect(container_id))

    def address(self, container_id: str) -> str:
        """The container's IP address, on a user-defined network if it has one."""
        nets = (self._must_inspect(container_id).get("NetworkSettings") or {}).get(
            "Networks") or {}
        found = sorted((name in ("bridge", "host", "none"), ep.get("IPAddress") or "")
                       for name, ep in nets.items() if ep.get("IPAddress"))
        if not found:
            raise RuntimeError_(f"container {container_id[:12]} has no IP address (is it "
                                "running, on a network?)")
        return found[0][1]

    def create_plan(self, snap: Snapshot, image: str, name: str | None = None) -> CreatePlan:
        """The create request for ``image`` rebuilt from ``snap``'s container."""
        with engine_errors(f"inspecting image {image}"):
            try:
                new_image = dict(self.api.inspect_image(image))
            except docker.errors.NotFound as exc:
                raise RuntimeError_(f"image {image} is not on this host (pull it first)"
                                    ) from exc
        old, old_image = self._details_of(snap)
        return build_create_plan(old, old_image, new_image, image, name or snap.name,
                                 self.api_version)

    def create_from(self, snap: Snapshot, image: str, name: str | None = None,
                    hidden: bool = False, relabel: Relabel | None = None) -> str:
        """``hidden``: without the network aliases until ``expose`` (start-first);
        ``relabel``: the labels to change, from the old ones and the new image's id."""
        plan = self.create_plan(snap, image, name)
        if relabel is not None:
            labels = dict(plan.body.get("Labels") or {})
            plan.body["Labels"] = {**labels, **relabel(labels, plan.image_id)}
        return self.create_planned(without_aliases(plan) if hidden else plan)

    def expose(self, container_id: str, snap: Snapshot) -> None:
        """Give a hidden container the aliases of ``snap``'s (reconnects each network that
        lacks them; idempotent)."""
        info = self._must_inspect(container_id)
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        for net, endpoint in endpoints_of(self.create_plan(snap, str(info["Image"]))):
            want = set(endpoint.get("Aliases") or [])
            if not want or want <= set((nets.get(net) or {}).get("Aliases") or []):
                continue
            with (engine_errors(f"reconnecting {container_id[:12]} to {net} with its aliases"),
                  contextlib.suppress(docker.errors.NotFound, docker.errors.APIError)):
                self.api.disconnect_container_from_network(container_id, net)
            self._connect(container_id, net, endpoint)

    def create_planned(self, plan: CreatePlan) -> str:
        """Create the container a plan describes, connected to every network."""
        with engine_errors(f"creating {plan.name}"):
            cid = str(self.api.create_container_from_config(plan.body, name=plan.name)["Id"])
        try:
            for net, endpoint in plan.connect_after:
                self._connect(cid, net, endpoint)
        except RuntimeError_:
            self.remove(cid)
            raise
        return cid

    def run_task(self, unit: Snapshot, image: str, argv: tuple[str, ...],
                 timeout: float) -> TaskResult:
        """The one-off pre-deploy task (``docker_task.py``)."""
        return docker_task.run_task(self, unit, image, argv, timeout, self._clock)

    def remove_task(self, unit: Snapshot) -> bool:
        return docker_task.remove_task(self, unit)

    def find_by_labels(self, labels: Mapping[str, str]) -> list[Listed]:
        """Every container carrying all of ``labels``."""
        wanted = [f"{k}={v}" for k, v in labels.items()]
        with engine_errors("listing containers"):
            found = self.api.containers(all=True, filters={"label": wanted})
        return [Listed(str(c["Id"]), str((c.get("Names") or ["/"])[0]).lstrip("/"),
                       dict(c.get("Labels") or {}), str(c.get("Image") or ""))
                for c in found]

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
        self._neighbours.refresh(self.api, container_id)

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
            started = not (info.get("State") or {}).get("Running")
            if started:
                self.api.start(cid)
        if started:
            self._neighbours.refresh(self.api, cid)
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
        return read_log_tail(self.api, container_id, lines)

    def published_url(self, container_id: str, path: str = "/healthz") -> str | None:
        info = self._inspect(container_id)
        if info is None:
            return None
        ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
        if not any(ports.values()):
            ports = (info.get("HostConfig") or {}).get("PortBindings") or {}
        return published_url_from(ports, path)
