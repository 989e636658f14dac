"""The fleet bed itself: nodes that are engines of their own, and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Any

import docker
import httpx
import pytest

from testbed import engines, fleet
from testbed.accesslog import AccessLog
from testbed.services import REGISTRY_HOST

pytestmark = [pytest.mark.integration]


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_a_fleet_taken_down_leaves_no_namespace_interface_mount_or_process(bed: Any) -> None:
    """Up, a container with a volume and a published port on each node, down: nothing."""
    if fleet.FleetState.load() is not None:  # the package's fleet is up: check that one
        pytest.fail("run this test before the fleet fixture (it is first in its file)")
    ns = fleet.up(2)
    try:
        img = bed.push(f"bed/fleetdown{os.getpid()}/app", version="v1")
        for node in ns:
            with contextlib.closing(node.client()) as c:
                c.images.pull(img.ref, tag=img.sha_tag)
                c.containers.run(f"{img.ref}:{img.sha_tag}", detach=True, name="left",
                                 ports={"8080/tcp": 18080}, volumes={"vol": {"bind": "/d"}})
            assert httpx.get(f"http://{node.ip}:18080/healthz", timeout=10).text.startswith(
                "ok v1")
        assert fleet.leftovers()  # the check can see a running fleet
    finally:
        left = fleet.down()
    assert left == [], left
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert fleet.BRIDGE not in out and not os.path.exists(fleet.RUN)


def test_each_node_is_its_own_engine_and_pulls_through_its_own_address(
        bed: Any, nodes: list[fleet.Node]) -> None:
    img = bed.push(f"bed/fleetown{os.getpid()}/app", version="v1")
    host_ns = _netns_inode(os.getpid())
    seen: dict[str, set[Any]] = {"netns": set(), "root": set(), "containerd": set()}
    mark = AccessLog()
    for node in nodes:
        pid = node.dockerd_pid()
        assert pid is not None
        with contextlib.closing(node.client()) as c:
            info = c.info()
            c.images.pull(img.ref, tag="main")
            assert img.digest in str(c.images.get(f"{img.ref}:main").attrs["RepoDigests"])
        seen["netns"].add(_netns_inode(pid))
        seen["root"].add(info["DockerRootDir"])
        containerd = [p for p in fleet.fleet_pids() if f"containerd --config {node.run}/"
                      in engines.cmdline(p)]
        assert len(containerd) == 1, (node.name, containerd)
        seen["containerd"].add(containerd[0])
    assert all(len(v) == len(nodes) for v in seen.values()), seen
    assert host_ns not in seen["netns"]
    by = {a for a, m, u, s in mark.served_from(img.repo) if m == "GET" and "/manifests/" in u}
    assert by == {n.source for n in nodes}, by  # each node asked for itself
    with pytest.raises(docker.errors.ImageNotFound):  # and the bed's engine holds nothing
        bed.docker.images.get(f"{REGISTRY_HOST}/{img.repo}:main")
