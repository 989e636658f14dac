"""The Docker runtime adapter against the real engine (API 1.41) and the token-auth registry."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testbed.util import wait_until
from twilight_agent.adapters.docker.runtime import DockerRuntime
from twilight_agent.core.models import Digest
from twilight_agent.errors import DockerUnavailable, PullFailed, RuntimeError_, TargetNotFound

pytestmark = pytest.mark.integration


@pytest.fixture
def rt(bed, cleanup: str) -> Iterator[DockerRuntime]:
    """The runtime for ``<uid>-app``. Anonymous volumes cannot carry the uid in their name:
    afterwards, remove this test's containers and then the anonymous volumes they used."""
    with DockerRuntime(container=f"{cleanup}-app") as runtime:
        yield runtime
    anon: set[str] = set()
    for c in bed.docker.containers.list(all=True, filters={"name": cleanup}):
        anon |= {m["Name"] for m in c.attrs["Mounts"] if m["Type"] == "volume"
                 and re.fullmatch("[0-9a-f]{64}", m["Name"])}
        c.remove(force=True, v=False)
    for name in anon:
        bed.docker.api.remove_volume(name)


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=2)


def _answers(rt: DockerRuntime, cid: str, path: str) -> str | None:
    url = rt.published_url(cid, path)
    try:
        return _get(url).text.strip() if url else None
    except httpx.HTTPError:
        return None


def _exec(bed, cid: str, script: str) -> str:
    code, out = bed.docker.containers.get(cid).exec_run(["sh", "-c", script])
    assert code == 0, out
    return out.decode().strip()


def _operator_container(bed, uid: str, ref: str, bind_dir: Path) -> str:
    """Run the app the way an operator would: networks with aliases, a published port, a
    run-time env var and labels, a bind mount, a named and an anonymous volume."""
    api = bed.docker.api
    net, net2 = f"{uid}-net", f"{uid}-net2"
    bed.docker.networks.create(net)
    bed.docker.networks.create(net2)
    bed.docker.volumes.create(f"{uid}-data")
    host_config = api.create_host_config(
        port_bindings={8080: ("127.0.0.1", None)}, network_mode=net,
        binds=[f"{bind_dir}:/bind:rw", f"{uid}-data:/data"],
        restart_policy={"Name": "unless-stopped"})
    cid = api.create_container(
        ref, name=f"{uid}-app", environment={"RUNTIME_VAR": "hello"}, ports=[8080],
        stop_timeout=1,  # the app (PID 1) ignores SIGTERM: park waits this long, not 10 s
        labels={"runtime.label": "x", "com.docker.compose.project": uid,
                "com.docker.compose.service": "app"},
        host_config=host_config,
        networking_config=api.create_networking_config(
            {net: api.create_endpoint_config(aliases=["web"])}))["Id"]
    api.connect_container_to_network(cid, net2, aliases=["web2"])
    api.start(cid)
    return str(cid)


def test_swap_keeps_operator_config_and_data_and_unpark_restores(bed, repo, cleanup, rt,
                                                                 tmp_path):
    uid = cleanup
    v1 = bed.push(repo, version="v1", volume="/cache")
    v2 = bed.push(repo, version="v2", volume="/cache")
    bed.docker.images.pull(v1.ref, tag=v1.sha_tag, auth_config=bed.auth)
    old = _operator_container(bed, uid, f"{v1.ref}:{v1.sha_tag}", tmp_path)
    wait_until(lambda: _answers(rt, old, "/version") == "v1", 10, what="v1 answering")
    _exec(bed, old, "echo named > /data/f && echo anon > /cache/f")
    (tmp_path / "host-file").write_text("bound\n")
    old_info = bed.docker.api.inspect_container(old)
    anon = next(m["Name"] for m in old_info["Mounts"] if m["Destination"] == "/cache")

    image_id = rt.pull(v2.ref, Digest(v2.digest), bed.auth)
    snap = rt.snapshot(rt.find_target())
    assert (snap.container_id, snap.tag, snap.digest) == (old, v1.sha_tag, v1.digest)
    rt.park(snap)
    parked = bed.docker.api.inspect_container(f"{uid}-app.twilight-prev")
    assert parked["Id"] == old and parked["State"]["Running"]  # parked, still serving
    t0 = time.monotonic()
    rt.stop(old)
    assert time.monotonic() - t0 < 5  # the container's StopTimeout (1 s), not the default 10 s
    with pytest.raises(TargetNotFound, match=r"only a parked .*\.twilight-prev"):
        rt.find_target()
    new = rt.create_from(snap, f"{v2.ref}@{v2.digest}")
    assert rt.state(new).status == "created"
    rt.start(new)

    info = bed.docker.api.inspect_container(new)
    assert info["Name"] == f"/{uid}-app" and info["Image"] == image_id
    assert f"{v2.ref}@{v2.digest}" in bed.docker.api.inspect_image(image_id)["RepoDigests"]
    wait_until(lambda: _answers(rt, new, "/version") == "v2", 10, what="v2 answering")
    assert info["HostConfig"]["PortBindings"] == old_info["HostConfig"]["PortBindings"]
    assert rt.published_url(new).startswith("http://127.0.0.1:")
    env = _exec(bed, new, "env").splitlines()
    assert "RUNTIME_VAR=hello" in env and "APP_VERSION=v2" in env and "APP_VERSION=v1" not in env
    labels = info["Config"]["Labels"]
    assert labels["runtime.label"] == "x"
    assert labels["com.docker.compose.project"] == uid
    assert labels["org.opencontainers.image.version"] == "v2"
    assert labels["org.opencontainers.image.revision"] == v2.revision
    nets = info["NetworkSettings"]["Networks"]
    assert set(nets) == {f"{uid}-net", f"{uid}-net2"}
    assert "web" in nets[f"{uid}-net"]["Aliases"] and "web2" in nets[f"{uid}-net2"]["Aliases"]
    assert old[:12] not in nets[f"{uid}-net"]["Aliases"] + nets[f"{uid}-net2"]["Aliases"]
    assert info["Config"]["Hostname"] != old[:12]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert set(mounts) == {"/bind", "/data", "/cache"}
    assert mounts["/cache"]["Name"] == anon and mounts["/data"]["Name"] == f"{uid}-data"
    assert _exec(bed, new, "cat /data/f /cache/f /bind/host-file") == "named\nanon\nbound"

    parked = bed.docker.api.inspect_container(f"{uid}-app.twilight-prev")
    assert parked["Id"] == old and not parked["State"]["Running"]
    assert parked["HostConfig"]["RestartPolicy"]["Name"] == "no"

    rt.remove(new)
    assert rt.state(new).status == "missing"
    assert bed.docker.volumes.get(anon)  # force-remove kept the anonymous volume
    assert rt.unpark(snap) == old
    restored = bed.docker.api.inspect_container(old)
    assert restored["Name"] == f"/{uid}-app" and restored["State"]["Running"]
    assert restored["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    wait_until(lambda: _answers(rt, old, "/version") == "v1", 10, what="v1 back")
    assert _exec(bed, old, "cat /data/f /cache/f") == "named\nanon"


def test_missing_target_and_unreachable_engine():
    with DockerRuntime(container="twilight-no-such-container") as rt:
        with pytest.raises(TargetNotFound, match="no container named"):
            rt.find_target()
        assert rt.state("twilight-no-such-container").status == "missing"
    with DockerRuntime("unix:///nonexistent/docker.sock", container="app") as rt, \
            pytest.raises(DockerUnavailable):
        rt.find_target()
    with DockerRuntime("tcp://127.0.0.1:1", timeout=2) as rt, pytest.raises(DockerUnavailable):
        rt.state("abc")


def test_pull_by_digest_reports_progress_and_failures(bed, repo, rt):
    img = bed.push(repo, version="v1")
    lines: list[str] = []
    image_id = rt.pull(img.ref, Digest(img.digest), bed.auth, progress=lines.append)
    assert f"{img.ref}@{img.digest}" in bed.docker.api.inspect_image(image_id)["RepoDigests"]
    assert any("Digest: " + img.digest in line for line in lines)
    assert not any("Downloading" in line for line in lines)

    with pytest.raises(PullFailed, match="manifest unknown"):
        rt.pull(img.ref, Digest("sha256:" + "0" * 64), bed.auth)

    # The manifest exists but its config blob is gone: the engine answers 200 and reports
    # the failure in the progress stream.
    broken = bed.push(repo, version="v2")
    manifest = json.loads(bed.raw.get_manifest(repo, broken.digest)[0])
    gone = bed.raw._req("DELETE", repo, f"blobs/{manifest['config']['digest']}")
    assert gone.status_code == 202
    with pytest.raises(PullFailed, match="unknown blob"):
        rt.pull(broken.ref, Digest(broken.digest), bed.auth)


def test_prune_keeps_current_previous_and_used_images(bed, repo, rt):
    imgs = [bed.push(repo, version=f"v{i}") for i in range(1, 6)]
    ids = [rt.pull(i.ref, Digest(i.digest), bed.auth) for i in imgs]
    used = bed.docker.api.create_container(ids[0], name=f"{repo.split('/')[1]}-user")["Id"]
    rt.tag_image(ids[3], imgs[3].ref, "old")  # v4 tagged and pulled by digest, v5 by digest only
    removed = rt.prune_images(imgs[0].ref, keep={ids[2], imgs[1].digest}, older_than_s=0)
    assert sorted(removed) == sorted([ids[3], ids[4]])
    left = {i["Id"] for i in bed.docker.api.images()}
    assert {ids[0], ids[1], ids[2]} <= left and not {ids[3], ids[4]} & left
    assert rt.prune_images(imgs[0].ref, keep=set(), older_than_s=3600) == []
    rt.remove(used)


def test_park_refuses_a_container_that_stopping_would_delete(bed, repo, cleanup, rt):
    img = bed.push(repo, version="v1")
    image_id = rt.pull(img.ref, Digest(img.digest), bed.auth)
    api = bed.docker.api
    cid = api.create_container(image_id, name=f"{cleanup}-app",
                               host_config=api.create_host_config(auto_remove=True))["Id"]
    rt.start(cid)
    with pytest.raises(RuntimeError_, match="runs with --rm"):
        rt.park(rt.snapshot(cid))
    assert rt.state(cid).running and rt.find_target() == cid
