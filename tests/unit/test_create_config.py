"""The create request rebuilt from an old container: recorded inspect dicts in, body out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from twilight_agent.adapters.docker.create_config import (
    build_create_plan,
    endpoints_of,
    published_url_from,
    without_aliases,
)
from twilight_agent.adapters.docker.refs import repository_of, tag_of

# Recorded from dockerd 20.10 (API 1.41): the bed's v1 app image (VOLUME /cache) run by an
# operator with a user-defined network + alias, a published port, a run-time env var and
# labels (compose ones included), a bind mount, a named volume and restart unless-stopped.
CID = "cfcd99f98d14737e33591fe4505777f0a2b53322f597c3846446c91e06a5db8d"
ANON = "5c1ce14529491a75a4b7534ce502ad40430de275f40f8da011272ae47ad41ab8"
REPO = "127.0.0.1:5000/bed/twrecc18629/app"
OLD_DIGEST = "sha256:59c9466d5d3d4d836c86752b0e3fcac0a4b61e7e80093a29bc57343e609b4b9f"
NEW_REF = REPO + "@sha256:" + "b" * 64
OCI = "org.opencontainers.image."
IMAGE_ENV = ["PATH=/bin", "APP_VERSION=v1", "APP_MODE=good", "APP_BOOT_DELAY=0"]
IMAGE_LABELS = {OCI + "created": "2026-11-22T03:25:43.922524Z",
                OCI + "revision": "eabb4e4b70b53745acea6f5c3dcefe45a916bbc7",
                OCI + "source": "https://github.com/lacatfly/twilight-demo",
                OCI + "version": "v1"}
MASKED = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
          "/sys/firmware"]

CONTAINER: dict[str, Any] = {
    "Id": CID, "Name": "/twrecc18629-app",
    "Image": "sha256:a0f97bdd3eaa116ada976393822a293aa5739199302e3397b7e4b5f583b659f1",
    "Config": {
        "Hostname": CID[:12], "Domainname": "", "User": "", "AttachStdin": False,
        "AttachStdout": False, "AttachStderr": False, "ExposedPorts": {"8080/tcp": {}},
        "Tty": False, "OpenStdin": False, "StdinOnce": False,
        "Env": ["RUNTIME_VAR=hello", *IMAGE_ENV], "Cmd": None,
        "Image": f"{REPO}@{OLD_DIGEST}",
        "Volumes": {"/bind": {}, "/cache": {}, "/data": {}}, "WorkingDir": "/www",
        "Entrypoint": ["/bin/sh", "/app/run"], "OnBuild": None,
        "Labels": {"com.docker.compose.project": "twrecc18629",
                   "com.docker.compose.service": "app", **IMAGE_LABELS,
                   "runtime.label": "x"}},
    "HostConfig": {
        "Binds": ["/srv/app:/bind:rw", "twrecc18629-data:/data:rw"],
        "LogConfig": {"Type": "json-file", "Config": {}}, "NetworkMode": "twrecc18629-net",
        "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
        "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
        "AutoRemove": False, "CapAdd": None, "Memory": 0, "ShmSize": 67108864,
        "MaskedPaths": MASKED,
        "ReadonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"],
        "Runtime": "runc", "CgroupnsMode": "host", "IpcMode": "private"},
    "Mounts": [
        {"Type": "bind", "Source": "/srv/app", "Destination": "/bind", "Mode": "rw",
         "RW": True, "Propagation": "rprivate"},
        {"Type": "volume", "Name": "twrecc18629-data",
         "Source": "/var/lib/docker/volumes/twrecc18629-data/_data", "Destination": "/data",
         "Driver": "local", "Mode": "rw", "RW": True, "Propagation": ""},
        {"Type": "volume", "Name": ANON, "Source": f"/var/lib/docker/volumes/{ANON}/_data",
         "Destination": "/cache", "Driver": "local", "Mode": "", "RW": True,
         "Propagation": ""}],
    "NetworkSettings": {
        "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32774"}]},
        "Networks": {"twrecc18629-net": {
            "IPAMConfig": None, "Links": None, "Aliases": ["web", CID[:12]],
            "NetworkID": "0ced64b6de2b2ef0dd55adffa20a98d7f4aaf1146c04c36a24698ccf4614b8ad",
            "EndpointID": "54d9b19803567417d99f2afa09d85c200801d57cd21f812c94c52880d985118d",
            "Gateway": "172.18.0.1", "IPAddress": "172.18.0.2", "IPPrefixLen": 16,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "MacAddress": "02:42:ac:12:00:02", "DriverOpts": None}}},
}

OLD_IMAGE: dict[str, Any] = {
    "Id": CONTAINER["Image"], "RepoDigests": [f"{REPO}@{OLD_DIGEST}"],
    "Config": {"Hostname": "", "Domainname": "", "User": "", "ExposedPorts": {"8080/tcp": {}},
               "Env": IMAGE_ENV, "Cmd": None, "Volumes": {"/cache": {}}, "WorkingDir": "/www",
               "Entrypoint": ["/bin/sh", "/app/run"], "OnBuild": None,
               "Labels": IMAGE_LABELS}}

NEW_IMAGE: dict[str, Any] = copy.deepcopy(OLD_IMAGE)
NEW_IMAGE["Config"]["Env"] = ["PATH=/bin", "APP_VERSION=v2", "APP_MODE=good",
                              "APP_BOOT_DELAY=0"]


def plan(container=CONTAINER, old_image=OLD_IMAGE, new_image=NEW_IMAGE, api="1.41"):
    return build_create_plan(container, old_image, new_image, NEW_REF, "twrecc18629-app", api)


def changed(**config: Any) -> dict[str, Any]:
    c = copy.deepcopy(CONTAINER)
    c["Config"].update(config)
    return c


def test_recorded_container_env_keeps_run_time_values_only():
    body = plan().body
    assert body["Image"] == NEW_REF
    assert body["Env"] == ["RUNTIME_VAR=hello"]  # APP_VERSION etc. now come from the new image


def test_labels_drop_old_image_values_but_keep_compose_and_run_time_ones():
    labels = plan().body["Labels"]
    assert labels == {"com.docker.compose.project": "twrecc18629",
                      "com.docker.compose.service": "app", "runtime.label": "x"}
    image = copy.deepcopy(OLD_IMAGE)
    image["Config"]["Labels"]["com.docker.compose.service"] = "app"
    assert plan(old_image=image).body["Labels"]["com.docker.compose.service"] == "app"


def test_a_label_the_operator_changed_from_the_image_value_is_kept():
    c = changed(Labels={**CONTAINER["Config"]["Labels"], OCI + "source": "https://mirror"})
    assert plan(container=c).body["Labels"][OCI + "source"] == "https://mirror"


def test_image_defaults_are_unset_so_the_new_image_applies():
    body = plan().body
    for key in ("Entrypoint", "WorkingDir", "User", "Cmd", "OnBuild"):
        assert key not in body, key


def test_operator_overrides_of_image_defaults_are_kept():
    hc = {"Test": ["CMD", "true"], "Interval": 5_000_000_000}
    c = changed(Cmd=["--verbose"], User="1000:1000", WorkingDir="/srv", Healthcheck=hc,
                StopSignal="SIGINT", Entrypoint=["/bin/app"])
    body = plan(container=c).body
    assert body["Cmd"] == ["--verbose"] and body["User"] == "1000:1000"
    assert body["WorkingDir"] == "/srv" and body["Healthcheck"] == hc
    assert body["StopSignal"] == "SIGINT" and body["Entrypoint"] == ["/bin/app"]


def test_image_healthcheck_and_stop_signal_are_not_inherited():
    hc = {"Test": ["CMD-SHELL", "wget -q http://127.0.0.1:8080/healthz"]}
    image = copy.deepcopy(OLD_IMAGE)
    image["Config"].update(Healthcheck=hc, StopSignal="SIGQUIT")
    body = plan(container=changed(Healthcheck=hc, StopSignal="SIGQUIT"), old_image=image).body
    assert "Healthcheck" not in body and "StopSignal" not in body


def test_engine_generated_hostname_is_dropped_a_chosen_one_kept():
    assert "Hostname" not in plan().body
    assert plan(container=changed(Hostname="files")).body["Hostname"] == "files"


def test_host_config_is_kept_minus_engine_defaults():
    host = plan().body["HostConfig"]
    for key in ("PortBindings", "RestartPolicy", "LogConfig", "NetworkMode", "ShmSize",
                "Runtime", "IpcMode"):
        assert host[key] == CONTAINER["HostConfig"][key], key
    assert "MaskedPaths" not in host and "ReadonlyPaths" not in host


def test_anonymous_volume_is_reattached_by_name_and_image_volumes_dropped():
    body = plan().body
    assert body["HostConfig"]["Binds"] == ["/srv/app:/bind:rw", "twrecc18629-data:/data:rw",
                                           f"{ANON}:/cache"]
    assert body["Volumes"] is None  # every declared path is mounted explicitly now
    assert any("anonymous volume 5c1ce1452949 reattached at /cache" in n for n in plan().notes)


def test_a_destination_already_mounted_is_not_mounted_twice():
    c = copy.deepcopy(CONTAINER)
    c["HostConfig"]["Binds"] = []
    c["HostConfig"]["Mounts"] = [{"Type": "volume", "Source": "cache", "Target": "/cache"}]
    assert not plan(container=c).body["HostConfig"].get("Binds")


def test_read_only_anonymous_volume_stays_read_only():
    c = copy.deepcopy(CONTAINER)
    c["Mounts"][2]["RW"] = False
    assert plan(container=c).body["HostConfig"]["Binds"][-1] == f"{ANON}:/cache:ro"


def test_run_time_anonymous_volume_survives_an_image_that_drops_it():
    new_image = copy.deepcopy(NEW_IMAGE)
    new_image["Config"]["Volumes"] = None
    p = plan(new_image=new_image)
    assert f"{ANON}:/cache" in p.body["HostConfig"]["Binds"]
    assert any("no longer declares it" in n for n in p.notes)


def test_published_port_stays_exposed_and_other_image_ports_go():
    image = copy.deepcopy(OLD_IMAGE)
    image["Config"]["ExposedPorts"] = {"8080/tcp": {}, "9090/tcp": {}}
    c = changed(ExposedPorts={"8080/tcp": {}, "9090/tcp": {}, "7000/udp": {}})
    assert plan(container=c, old_image=image).body["ExposedPorts"] == {
        "7000/udp": {}, "8080/tcp": {}}


def test_network_keeps_aliases_minus_short_id_and_drops_runtime_fields():
    body = plan().body
    endpoints = body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints == {"twrecc18629-net": {"Aliases": ["web"]}}
    assert "MacAddress" not in body


def _two_networks(api_144: bool) -> dict[str, Any]:
    c = copy.deepcopy(CONTAINER)
    nets = c["NetworkSettings"]["Networks"]
    nets["twrecc18629-net"]["Aliases"] = ["web", CID] if api_144 else ["web", CID[:12]]
    nets["backend"] = {"IPAMConfig": {"IPv4Address": "10.9.0.5"}, "Links": ["db:database"],
                       "Aliases": ["api"], "DriverOpts": {"x": "1"},
                       "MacAddress": "02:42:0a:09:00:05", "NetworkID": "n2", "EndpointID": "e2",
                       "IPAddress": "10.9.0.5", "Gateway": "10.9.0.1"}
    if api_144:
        nets["backend"]["DNSNames"] = ["twrecc18629-app", CID[:12], "api"]
    return c


def test_api_141_creates_with_the_primary_network_and_connects_the_rest():
    p = plan(container=_two_networks(False), api="1.41")
    assert list(p.body["NetworkingConfig"]["EndpointsConfig"]) == ["twrecc18629-net"]
    assert p.connect_after == [("backend", {
        "IPAMConfig": {"IPv4Address": "10.9.0.5"}, "Links": ["db:database"],
        "Aliases": ["api"], "DriverOpts": {"x": "1"}})]


def test_api_144_creates_with_every_network_and_no_runtime_fields():
    p = plan(container=_two_networks(True), api="1.44")
    endpoints = p.body["NetworkingConfig"]["EndpointsConfig"]
    assert set(endpoints) == {"twrecc18629-net", "backend"} and p.connect_after == []
    assert endpoints["twrecc18629-net"] == {"Aliases": ["web"]}
    assert "DNSNames" not in endpoints["backend"] and "MacAddress" not in endpoints["backend"]


@pytest.mark.parametrize(("api", "where"), [("1.41", "config"), ("1.44", "endpoint"),
                                             ("1.47", "endpoint")])
def test_operator_mac_goes_where_the_api_version_wants_it(api, where):
    body = plan(container=changed(MacAddress="02:00:00:00:00:aa"), api=api).body
    on_endpoint = body["NetworkingConfig"]["EndpointsConfig"]["twrecc18629-net"]
    if where == "config":
        assert body["MacAddress"] == "02:00:00:00:00:aa" and "MacAddress" not in on_endpoint
    else:
        assert on_endpoint["MacAddress"] == "02:00:00:00:00:aa" and "MacAddress" not in body


def test_default_bridge_is_the_primary_network():
    c = copy.deepcopy(CONTAINER)
    c["HostConfig"]["NetworkMode"] = "default"
    c["NetworkSettings"]["Networks"] = {"bridge": {"Aliases": None, "IPAddress": "172.17.0.2"}}
    p = plan(container=c)
    assert p.body["NetworkingConfig"]["EndpointsConfig"] == {"bridge": {}}


@pytest.mark.parametrize("mode", ["host", "container:abc123"])
def test_shared_network_namespaces_get_no_endpoints_and_no_hostname(mode):
    c = changed(Hostname="builder")
    c["HostConfig"]["NetworkMode"] = mode
    c["NetworkSettings"]["Networks"] = {"host": {"NetworkID": "h"}} if mode == "host" else {}
    body = plan(container=c).body
    assert "NetworkingConfig" not in body and "Hostname" not in body
    assert body["HostConfig"]["NetworkMode"] == mode


def test_inputs_are_not_modified():
    before = copy.deepcopy(CONTAINER)
    body = plan().body
    body["HostConfig"]["Binds"].append("x:/x")
    body["Labels"]["y"] = "z"
    assert before == CONTAINER


# The pure helpers of the runtime adapter that read the same inspect data.
@pytest.mark.parametrize(("ports", "url"), [
    ({"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8000"},
                   {"HostIp": "::", "HostPort": "8000"}]}, "http://127.0.0.1:8000/healthz"),
    ({"8080/tcp": [{"HostIp": "::", "HostPort": "8001"}]}, "http://127.0.0.1:8001/healthz"),
    ({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8002"}]},
     "http://127.0.0.1:8002/healthz"),
    ({"8080/tcp": [{"HostIp": "::1", "HostPort": "8003"}]}, "http://[::1]:8003/healthz"),
    ({"8080/tcp": [{"HostIp": "10.1.2.3", "HostPort": "8004"}]}, "http://10.1.2.3:8004/healthz"),
    ({"53/udp": [{"HostIp": "", "HostPort": "53"}], "9000/tcp": None,
      "8080/tcp": [{"HostIp": "", "HostPort": "8005"}]}, "http://127.0.0.1:8005/healthz"),
    ({"9090/tcp": [{"HostPort": "9"}], "443/tcp": [{"HostPort": "8443"}]},
     "http://127.0.0.1:8443/healthz"),
    ({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}, None),
    ({}, None),
])
def test_published_url_takes_the_first_published_tcp_port(ports, url):
    assert published_url_from(ports) == url


@pytest.mark.parametrize(("ref", "repo", "tag"), [
    (f"{REPO}:sha-1234567", REPO, "sha-1234567"),
    (f"{REPO}@{OLD_DIGEST}", REPO, None),
    (f"{REPO}:sha-1234567@{OLD_DIGEST}", REPO, "sha-1234567"),  # compose, pinned .env
    (f"127.0.0.1:5000/app@{OLD_DIGEST}", "127.0.0.1:5000/app", None),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app", None),
    ("ghcr.io/o/app:main", "ghcr.io/o/app", "main"),
])
def test_repository_and_tag_of_a_container_image_reference(ref, repo, tag):
    assert (repository_of(ref), tag_of(ref)) == (repo, tag)


@pytest.mark.parametrize("api", ["1.41", "1.45"])
def test_a_start_first_plan_holds_the_aliases_back_and_keeps_them_for_later(api: str) -> None:
    full = plan(api=api)
    hidden = without_aliases(full)
    assert not any(ep.get("Aliases") for _, ep in endpoints_of(hidden))
    assert [net for net, _ in endpoints_of(hidden)] == [net for net, _ in endpoints_of(full)]
    assert any(ep.get("Aliases") for _, ep in endpoints_of(full))  # what Expose restores
    assert full.body == plan(api=api).body  # the full plan was not changed
