"""The host neighbour refresh after a container starts on a published port: which entries,
which bridge, only for a rootful engine on this host, and that a refusal is said once and
never raised."""

from __future__ import annotations

import subprocess
from typing import Any

import docker.errors
import pytest

from twilight_agent.adapters.docker.neighbours import Entry, Neighbours, bridge_device, entries_of

NETS: dict[str, dict[str, Any]] = {
    "n-default": {"Driver": "bridge", "Id": "n-default",
                  "Options": {"com.docker.network.bridge.name": "docker0"}},
    "0123456789abcdef": {"Driver": "bridge", "Id": "0123456789abcdef", "Options": {}},
    "n-overlay": {"Driver": "overlay", "Id": "n-overlay"},
}


def container_info(published: bool = True) -> dict[str, Any]:
    return {
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "8080"}]} if published
                       else {}},
        "NetworkSettings": {"Networks": {
            "bridge": {"NetworkID": "n-default", "IPAddress": "172.17.0.2",
                       "MacAddress": "02:42:ac:11:00:02"},
            "app_default": {"NetworkID": "0123456789abcdef", "IPAddress": "172.20.0.3",
                            "GlobalIPv6Address": "fd00::3", "MacAddress": "02:42:ac:14:00:03"},
            "mesh": {"NetworkID": "n-overlay", "IPAddress": "10.0.0.5",
                     "MacAddress": "02:42:0a:00:00:05"},
        }},
    }


class Engine:
    """docker-py's APIClient as the refresh uses it: network inspects and ``info``."""

    def __init__(self, rootless: bool = False, networks: dict[str, Any] | None = None,
                 published: bool = True) -> None:
        self.rootless, self.published = rootless, published
        self.networks = NETS if networks is None else networks
        self.asked: list[str] = []

    def inspect_container(self, container: str) -> dict[str, Any]:
        if container != "c1":
            raise docker.errors.NotFound(f"No such container: {container}")
        return container_info(self.published)

    def inspect_network(self, net_id: str) -> dict[str, Any]:
        self.asked.append(net_id)
        if net_id not in self.networks:
            raise docker.errors.NotFound(f"network {net_id} not found")
        return dict(self.networks[net_id])

    def info(self) -> dict[str, Any]:
        self.asked.append("info")
        return {"SecurityOptions": ["name=seccomp,profile=builtin"] +
                (["name=rootless"] if self.rootless else [])}


LOCAL = "unix:///var/run/docker.sock"
WHICH = "twilight_agent.adapters.docker.neighbours.shutil.which"


class Ip:
    def __init__(self, rc: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.rc, self.stderr = rc, stderr

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.rc, "", self.stderr)


@pytest.fixture(autouse=True)
def ip_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WHICH, lambda *a, **k: "/usr/sbin/ip")


def test_bridge_device_named_default_and_not_a_bridge() -> None:
    assert bridge_device(NETS["n-default"]) == "docker0"
    assert bridge_device(NETS["0123456789abcdef"]) == "br-0123456789ab"
    assert bridge_device(NETS["n-overlay"]) is None


def test_entries_cover_each_bridge_address_and_skip_other_drivers() -> None:
    found = entries_of(container_info(), lambda nid: bridge_device(NETS[nid]))
    assert found == [Entry("172.17.0.2", "02:42:ac:11:00:02", "docker0"),
                     Entry("172.20.0.3", "02:42:ac:14:00:03", "br-0123456789ab"),
                     Entry("fd00::3", "02:42:ac:14:00:03", "br-0123456789ab")]


def test_refresh_replaces_each_entry_as_stale_and_asks_the_engine_once() -> None:
    ip, engine = Ip(), Engine()
    n = Neighbours(LOCAL, run=ip)
    n.refresh(engine, "c1")
    n.refresh(engine, "c1")
    assert ip.calls[0] == ["/usr/sbin/ip", "neigh", "replace", "172.17.0.2", "lladdr",
                           "02:42:ac:11:00:02", "dev", "docker0", "nud", "stale"]
    assert len(ip.calls) == 6 and sorted(engine.asked) == sorted([*NETS, "info"])


def test_no_published_port_no_refresh() -> None:
    ip = Ip()
    Neighbours(LOCAL, run=ip).refresh(Engine(published=False), "c1")
    assert ip.calls == []


@pytest.mark.parametrize("url,rootless", [("tcp://10.0.0.5:2376", False),
                                          ("ssh://deploy@app-1", False), (LOCAL, True)])
def test_a_remote_or_rootless_engine_bridges_are_not_this_hosts(url: str,
                                                                rootless: bool) -> None:
    ip = Ip()
    Neighbours(url, run=ip).refresh(Engine(rootless=rootless), "c1")
    assert ip.calls == []


def test_a_refusal_is_warned_once_and_never_raised(capsys: pytest.CaptureFixture[str]) -> None:
    ip = Ip(rc=2, stderr="RTNETLINK answers: Operation not permitted\n")
    n = Neighbours(LOCAL, run=ip)
    n.refresh(Engine(), "c1")
    n.refresh(Engine(), "c1")
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("neighbour_refresh_failed") == 1
    assert "Operation not permitted" in text
    assert len(ip.calls) == 2  # stops at the first refusal of each refresh


def test_engine_error_and_missing_ip_are_warnings(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    Neighbours(LOCAL, run=Ip()).refresh(Engine(networks={}), "c1")
    monkeypatch.setattr(WHICH, lambda *a, **k: None)
    ip = Ip()
    Neighbours(LOCAL, run=ip).refresh(Engine(), "c1")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "not found" in text and "is not installed" in text and ip.calls == []


def test_a_container_gone_at_once_is_a_warning_not_an_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    ip = Ip()
    Neighbours(LOCAL, run=ip).refresh(Engine(), "gone")
    out = capsys.readouterr()
    assert "No such container" in out.out + out.err and ip.calls == []
