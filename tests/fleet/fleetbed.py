"""Sites on the fleet's nodes: each one an app container under a node's own dockerd and an
agent run in the node's network namespace, with its own state (a host of a fleet).

The agent reaches its engine over the node's socket and the registry as
``127.0.0.1:5000`` in the node's namespace (``testbed.fleet_forward``); the test reaches
the app at the node's address on the fleet bridge.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import docker

from testbed.accesslog import AccessLog
from testbed.fleet import Node
from testbed.images import AppImage, build_and_push
from testbed.services import PASSWORD, REGISTRY_URL, USERNAME
from tests.integration.deploybed import CLI, Site
from tests.swarm.swarmbed import SwarmSite


@dataclass
class NodeBed:
    """What a Site needs of the bed, with the node's engine as ``docker``; images are still
    built and pushed by the bed's own engine (the nodes only ever pull)."""

    docker: docker.DockerClient
    builder: docker.DockerClient
    raw: Any
    registry_url: str = REGISTRY_URL
    username: str = USERNAME
    password: str = PASSWORD

    def push(self, repo: str, **kw: Any) -> AppImage:
        return build_and_push(self.builder, repo, **kw)

    @property
    def auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


@dataclass
class NodeSite(Site):
    node: Node | None = None
    bind_ip: ClassVar[str] = "0.0.0.0"  # the test reaches it over the fleet bridge

    @property
    def url(self) -> str:
        assert self.node is not None
        return f"http://{self.node.ip}:{self.port}/healthz"

    def base_config(self, **over: object) -> dict[str, str]:
        assert self.node is not None
        cfg = super().base_config()
        cfg["DOCKER_HOST"] = self.node.docker_host
        cfg.update({k.upper(): str(v) for k, v in over.items()})
        return cfg

    def argv(self, cfg: Path, *args: str) -> list[str]:
        assert self.node is not None
        return self.node.inside([str(CLI), "--config", str(cfg), *args])

    def popen_on_host(self, *args: str, **over: object) -> subprocess.Popen[str]:
        """``popen`` in the host's namespace (the node's engine still): for an agent that
        must reach something on the host's loopback, a fault proxy."""
        cfg = self.write_config(**{"HEALTH_URL": self.url, **over})  # the node's address
        proc = subprocess.Popen([str(CLI), "--config", str(cfg), *args], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.tmp)
        self.procs.append(proc)
        return proc


def node_site(bed: Any, node: Node, uid: str, repo: str, tmp: Path) -> NodeSite:
    tmp.mkdir(parents=True, exist_ok=True)
    nb = NodeBed(docker=node.client(), builder=bed.docker, raw=bed.raw)
    return NodeSite(bed=nb, uid=uid, repo=repo, tmp=tmp, node=node)


def asked_by(log: AccessLog, repo: str, node: Node) -> list[tuple[str, str, int]]:
    """The registry requests for ``repo`` since ``log``'s mark that came from ``node``."""
    return [(m, u, s) for a, m, u, s in log.served_from(repo) if a == node.source]


@dataclass
class NodeSwarmSite(SwarmSite, NodeSite):
    """A swarm service made on the fleet's manager node, the agent in that node's netns."""

    def ps(self) -> str:
        assert self.node is not None
        p = subprocess.run(["docker", "-H", self.node.docker_host, "service", "ps",
                            "--no-trunc", self.name], capture_output=True, text=True,
                           timeout=20)
        return p.stdout + p.stderr


def node_digests(node: Node, service: str) -> list[str]:
    """The digests of the service's containers running on ``node``'s own engine."""
    with contextlib.closing(node.client()) as c:
        found = c.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})
        return sorted(str(x.attrs["Config"]["Image"]).rsplit("@", 1)[-1] for x in found)


@contextlib.contextmanager
def swarm_of(managers: list[Node], workers: list[Node]) -> Iterator[str]:
    """The nodes as one swarm (the first manager inits, on its fleet address); left by all
    at the end. Yields the manager's node id."""
    first = managers[0]
    with contextlib.closing(first.client()) as c:
        c.swarm.init(advertise_addr=first.ip, listen_addr=f"{first.ip}:2377")
        tokens = c.swarm.attrs["JoinTokens"]
        node_id = str(c.info()["Swarm"]["NodeID"])
    try:
        for n in workers:
            with contextlib.closing(n.client()) as w:
                w.swarm.join(remote_addrs=[f"{first.ip}:2377"], join_token=tokens["Worker"],
                             advertise_addr=n.ip, listen_addr=f"{n.ip}:2377")
        yield node_id
    finally:
        for n in [*workers, *managers]:
            with contextlib.suppress(Exception), contextlib.closing(n.client()) as c:
                c.swarm.leave(force=True)
