"""Pointing the host's neighbour table at a container that just started on a published port.

Stop-first swaps re-use the old container's address: the engine frees it at the stop and
hands it to the new container at the start. A client that reaches the published port while
the engine is still starting the new container (the port's proxy already listens, the
container's interface is not up yet) leaves the host's neighbour entry for that address
``INCOMPLETE``, with the client's packets queued behind an ARP request nobody answered. The
kernel asks again only after the bridge's ``retrans_time_ms`` (1 s by default), so every
request of that moment waits ~1 s, and the swap's gap is ~1 s longer than stop + start + boot.
Engines 28 and later announce a container's address when they bring its interface up (an
unsolicited ARP, moby#48808); on older engines (Debian 12 and 13 ship 20.10 and 26) the
agent does the host's half of it:

    ip neigh replace ADDRESS lladdr MAC dev BRIDGE nud stale

with the address and MAC the engine reports for the started container. The entry becomes
valid at once and the queued packets leave; ``stale`` lets the kernel confirm the entry the
next time it is used, as for one it learnt itself. Only bridge networks, only containers
that publish a port (nothing on the host talks to the others).

This needs ``CAP_NET_ADMIN`` (the shipped unit grants only that). Without it, or without
``ip``, the agent says so once and the swap goes on as before: this only shortens the gap.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from twilight_agent.errors import TwilightError
from twilight_agent.logs import get_logger

log = get_logger("twilight.neighbours")

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
IP_TIMEOUT_S = 2.0
SBIN = "/usr/sbin:/sbin"  # where iproute2 puts `ip`, whatever PATH the agent was given


class Entry(NamedTuple):
    address: str
    mac: str
    device: str


def bridge_device(network: Mapping[str, Any]) -> str | None:
    """The host interface of a bridge network (``docker0``, ``br-<id>``), else ``None``."""
    if network.get("Driver") != "bridge":
        return None
    named = (network.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    return str(named) if named else f"br-{str(network.get('Id') or '')[:12]}"


def publishes(info: Mapping[str, Any]) -> bool:
    bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
    return any(bindings.values())


def entries_of(info: Mapping[str, Any], device_of: Callable[[str], str | None]) -> list[Entry]:
    """Every (address, MAC, bridge) of a running container's bridge networks."""
    found: list[Entry] = []
    for endpoint in ((info.get("NetworkSettings") or {}).get("Networks") or {}).values():
        mac, nid = endpoint.get("MacAddress"), endpoint.get("NetworkID")
        device = device_of(str(nid)) if mac and nid else None
        if device is None:
            continue
        for key in ("IPAddress", "GlobalIPv6Address"):
            if endpoint.get(key):
                found.append(Entry(str(endpoint[key]), str(mac), device))
    return found


def neigh_argv(ip: str, entry: Entry) -> list[str]:
    return [ip, "neigh", "replace", entry.address, "lladdr", entry.mac,
            "dev", entry.device, "nud", "stale"]


class Neighbours:
    """Refreshes the entries of started containers; remembers each network's bridge."""

    def __init__(self, run: Callable[..., Any] = subprocess.run) -> None:
        self._run = run
        self._devices: dict[str, str | None] = {}
        self._warned = False

    def refresh(self, info: Mapping[str, Any] | None,
                inspect_network: Callable[[str], Mapping[str, Any]]) -> None:
        """Best effort: a failure is logged (once), never raised."""
        if not info or not publishes(info):
            return
        try:
            found = entries_of(info, lambda nid: self._device(nid, inspect_network))
        except TwilightError as exc:
            self._warn(f"the engine did not describe the container's network: {exc}")
            return
        self._replace(found)

    def _device(self, network_id: str,
                inspect_network: Callable[[str], Mapping[str, Any]]) -> str | None:
        if network_id not in self._devices:
            self._devices[network_id] = bridge_device(inspect_network(network_id))
        return self._devices[network_id]

    def _replace(self, found: list[Entry]) -> None:
        ip = shutil.which("ip") or shutil.which("ip", path=SBIN)
        if found and ip is None:
            self._warn("`ip` (iproute2) is not installed")
            return
        for entry in found:
            assert ip is not None
            try:
                done = self._run(neigh_argv(ip, entry), capture_output=True, text=True,
                                 timeout=IP_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                self._warn(f"`ip` could not run: {exc}")
                return
            if done.returncode != 0:
                lines = str(done.stderr or done.stdout or "").strip().splitlines()
                self._warn(lines[-1] if lines else f"`ip` exited {done.returncode}")
                return
            log.info("neighbour entry refreshed", address=entry.address, mac=entry.mac,
                      device=entry.device)

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("could not point the host's neighbour entry at the new container; "
                        "clients of a published port may wait ~1 s after a stop-first swap "
                        "(needs CAP_NET_ADMIN and `ip`)", reason=reason)
