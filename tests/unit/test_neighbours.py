"""The host neighbour refresh after a container starts on a published port: which entries,
which bridge, and that a refusal is said once and never raised."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from twilight_agent.adapters import neighbours
from twilight_agent.adapters.neighbours import Entry, Neighbours, bridge_device, entries_of
from twilight_agent.errors import RuntimeError_

NETS = {
    "n-default": {"Driver": "bridge", "Id": "n-default",
                  "Options": {"com.docker.network.bridge.name": "docker0"}},
    "0123456789abcdef": {"Driver": "bridge", "Id": "0123456789abcdef", "Options": {}},
    "n-overlay": {"Driver": "overlay", "Id": "n-overlay"},
}


def container(published: bool = True) -> dict[str, Any]:
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


class Ip:
    def __init__(self, rc: int = 0, stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.rc, self.stderr = rc, stderr

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, self.rc, "", self.stderr)


@pytest.fixture(autouse=True)
def ip_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbours.shutil, "which", lambda *a, **k: "/usr/sbin/ip")


def test_bridge_device_named_default_and_not_a_bridge() -> None:
    assert bridge_device(NETS["n-default"]) == "docker0"
    assert bridge_device(NETS["0123456789abcdef"]) == "br-0123456789ab"
    assert bridge_device(NETS["n-overlay"]) is None


def test_entries_cover_each_bridge_address_and_skip_other_drivers() -> None:
    found = entries_of(container(), lambda nid: bridge_device(NETS[nid]))
    assert found == [Entry("172.17.0.2", "02:42:ac:11:00:02", "docker0"),
                     Entry("172.20.0.3", "02:42:ac:14:00:03", "br-0123456789ab"),
                     Entry("fd00::3", "02:42:ac:14:00:03", "br-0123456789ab")]


def test_refresh_replaces_each_entry_as_stale_and_inspects_a_network_once() -> None:
    ip, asked = Ip(), []

    def inspect(nid: str) -> dict[str, Any]:
        asked.append(nid)
        return NETS[nid]

    n = Neighbours(run=ip)
    n.refresh(container(), inspect)
    n.refresh(container(), inspect)
    assert ip.calls[0] == ["/usr/sbin/ip", "neigh", "replace", "172.17.0.2", "lladdr",
                           "02:42:ac:11:00:02", "dev", "docker0", "nud", "stale"]
    assert len(ip.calls) == 6 and sorted(asked) == sorted(NETS)


def test_no_published_port_no_refresh() -> None:
    ip = Ip()
    Neighbours(run=ip).refresh(container(published=False), lambda nid: NETS[nid])
    Neighbours(run=ip).refresh(None, lambda nid: NETS[nid])
    assert ip.calls == []


def test_a_refusal_is_warned_once_and_never_raised(capsys: pytest.CaptureFixture[str]) -> None:
    ip = Ip(rc=2, stderr="RTNETLINK answers: Operation not permitted\n")
    n = Neighbours(run=ip)
    n.refresh(container(), lambda nid: NETS[nid])
    n.refresh(container(), lambda nid: NETS[nid])
    out = capsys.readouterr()
    text = out.out + out.err
    assert text.count("could not point the host's neighbour entry") == 1
    assert "Operation not permitted" in text
    assert len(ip.calls) == 2  # stops at the first refusal of each refresh


def test_engine_error_and_missing_ip_are_warnings(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def gone(nid: str) -> dict[str, Any]:
        raise RuntimeError_("network not found")

    Neighbours(run=Ip()).refresh(container(), gone)
    monkeypatch.setattr(neighbours.shutil, "which", lambda *a, **k: None)
    ip = Ip()
    Neighbours(run=ip).refresh(container(), lambda nid: NETS[nid])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "network not found" in text and "is not installed" in text and ip.calls == []
