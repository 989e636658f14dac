"""Helpers for the swarm target's tests: the bed's engine as a one-node swarm (``docker
swarm init --advertise-addr 127.0.0.1``, left again at teardown so every other test sees a
plain engine), a service an operator created, and the agent's settings for it.

The kernel of the bed has no IPVS, so the ingress routing mesh and a service's virtual IP
never answer: a service publishes its port in host mode, or sits behind a proxy on an
attachable overlay network with ``endpoint_mode dnsrr``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.auth
import docker.errors
import docker.types

from testbed.images import APP_PORT, AppImage
from testbed.services import PASSWORD, REGISTRY_HOST, USERNAME
from testbed.util import wait_until
from tests.integration.deploybed import Site

GATEWAY_BRIDGE = "docker_gwbridge"


@contextlib.contextmanager
def one_node_swarm(client: docker.DockerClient) -> Iterator[str]:
    """The engine as a swarm manager on loopback; always left at the end. An engine that
    is in a swarm already (not ours) fails the test: leaving it would break its owner."""
    state = client.info().get("Swarm", {}).get("LocalNodeState")
    if state != "inactive":
        raise AssertionError(f"the engine is already in swarm mode ({state}); not ours to "
                             "leave: run the swarm tests on an engine that is not in a swarm")
    had_gateway = bool(client.networks.list(names=[GATEWAY_BRIDGE]))
    client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        yield str(client.info()["Swarm"]["NodeID"])
    finally:
        client.swarm.leave(force=True)
        if not had_gateway:  # swarm init made it; leaving does not remove it
            for net in client.networks.list(names=[GATEWAY_BRIDGE]):
                with contextlib.suppress(docker.errors.APIError):
                    net.remove()


@dataclass
class SwarmSite(Site):
    """An operator-run swarm service of the site's image and the agent configured for it."""

    replicas: int = 1
    url_override: str = ""  # behind a proxy: the proxy's URL

    @property
    def url(self) -> str:
        return self.url_override or f"http://127.0.0.1:{self.port}/healthz"

    @property
    def name(self) -> str:
        return f"{self.uid}-svc"

    @property
    def network(self) -> str:
        return f"{self.uid}-overlay"

    def base_config(self, **over: object) -> dict[str, str]:
        cfg = super().base_config(**over)
        del cfg["CONTAINER"], cfg["ENV_FILE"]
        cfg.update({"SWARM_SERVICE": self.name, "HEALTH_TIMEOUT": "4", "HEALTH_SOAK": "1"})
        cfg.update({k.upper(): str(v) for k, v in over.items()})
        return cfg

    def create_service(self, img: AppImage, *, host_port: bool = True,
                       update: dict[str, Any] | None = None, global_mode: bool = False) -> str:
        """Create the service like ``docker service create --with-registry-auth``: by
        digest, the bed's credentials in X-Registry-Auth; host-mode port or dnsrr on the
        site's overlay network; ``global_mode``: one task per node (here: one). Waits until
        every replica serves."""
        api = self.bed.docker.api
        spec = docker.types.ContainerSpec(f"{img.ref}@{img.digest}",
                                          stop_grace_period=1_000_000_000)
        template = docker.types.TaskTemplate(
            spec, restart_policy=docker.types.RestartPolicy("any", delay=200_000_000),
            networks=[] if host_port else [self.network])
        endpoint = (docker.types.EndpointSpec(ports={self.port: (APP_PORT, "tcp", "host")})
                    if host_port else docker.types.EndpointSpec(mode="dnsrr"))
        if not host_port:
            self.bed.docker.networks.create(self.network, driver="overlay", attachable=True)
        body = {"Name": self.name, "TaskTemplate": template,
                "Mode": {"Global": {}} if global_mode else
                {"Replicated": {"Replicas": self.replicas}},
                "EndpointSpec": endpoint, "UpdateConfig": update or {}}
        auth = docker.auth.encode_header({"username": USERNAME, "password": PASSWORD,
                                          "serveraddress": REGISTRY_HOST})
        res = api._post_json(api._url("/services/create"), data=body,
                             headers={"X-Registry-Auth": auth})
        sid = str(api._result(res, True)["ID"])
        self.wait_tasks(img.digest)
        return sid

    def remove_service(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.bed.docker.api.remove_service(self.name)
        with contextlib.suppress(docker.errors.NotFound):
            self.bed.docker.api.remove_container(f"{self.uid}-proxy", force=True)
        # its tasks' containers go away with the service, asynchronously
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self.bed.docker.containers.list(
                all=True, filters={"label": f"com.docker.swarm.service.name={self.name}"}),
                timeout=20, interval=0.2, what="the service's containers to go")
        for net in self.bed.docker.networks.list(names=[self.network]):
            with contextlib.suppress(docker.errors.APIError):
                net.remove()

    def service(self) -> dict[str, Any]:
        return dict(self.bed.docker.api.inspect_service(self.name))

    def spec_digest(self) -> str:
        image = self.service()["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        return str(image.rsplit("@", 1)[1])

    def running_digests(self) -> list[str]:
        """The digest of every task swarm wants running and that runs: what ``docker
        service ps`` lists as Running, read from each task's spec."""
        tasks = self.bed.docker.api.tasks(filters={"service": self.name,
                                                   "desired-state": "running"})
        return sorted(t["Spec"]["ContainerSpec"]["Image"].rsplit("@", 1)[1] for t in tasks
                      if t["Status"]["State"] == "running")

    def wait_tasks(self, digest: str, timeout: float = 30) -> None:
        want = [digest] * self.replicas
        try:
            wait_until(lambda: self.running_digests() == want, timeout=timeout, interval=0.2,
                       what=f"{self.replicas} task(s) of {digest[:19]} running")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {self.ps()}") from None

    def ps(self) -> str:
        """``docker service ps`` as text, for assertion messages."""
        p = subprocess.run(["docker", "service", "ps", "--no-trunc", self.name],
                           capture_output=True, text=True, timeout=20)
        return p.stdout + p.stderr

    def update_status(self) -> dict[str, Any]:
        return dict(self.service().get("UpdateStatus") or {})

    def version(self) -> int:
        return int(self.service()["Version"]["Index"])

    def wait_serving_now(self, version: str, timeout: float = 20) -> None:
        self.wait_serving(version, timeout)

    def json_cli(self, *args: str, **over: object) -> Any:
        p = self.cli(*args, **over)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)


def elapsed(t0: float) -> float:
    return round(time.monotonic() - t0, 1)
