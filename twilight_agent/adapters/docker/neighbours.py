"""Pointing the host's neighbour table at a container that just started on a published port.

Stop-first swaps re-use the old container's address: the engine frees it at the stop and
hands it to the new container at the start. A client that reaches the published port while
the engine is still starting the new container (the port's proxy already listens, the
container's interface is not up yet) leaves the host's neighbour entry for that address
``INCOMPLETE``, with the client's packets queued behind an ARP request nobody answered. The
kernel asks again only after the bridge's ``retrans_time_ms`` (1 s by default), so every
request of that moment waits ~1 s, and the swap's gap is ~1 s longer than stop + start + boot.
Engines 28 and later announce a container's address when they bring its interface up (an
unsolicited ARP, moby#48808), which should spare them the stall (not measured: Debian 12 and
13 ship 20.10 and 26); for every engine the agent does the host's half of it:

    ip neigh replace ADDRESS lladdr MAC dev BRIDGE nud stale

with the address and MAC the engine reports for the started container. The entry becomes
valid at once and the queued packets leave; ``stale`` lets the kernel confirm the entry the
next time it is used, as for one it learnt itself. Only bridge networks, only containers
that publish a port (nothing on the host talks to the others).

Only for an engine on this host's unix socket that is not rootless: the bridges of a
remote engine (``tcp://``, ``ssh://``) or of rootless Docker (inside its own network
namespace) are not this host's interfaces, and an entry written on a local bridge of the same
name would misdirect the host's traffic to a local container with that address.

This needs ``CAP_NET_ADMIN`` (the shipped unit grants only that). Without it, or without
``ip``, the agent says so once and the swap goes on as before: this only shortens the gap.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from twilight_agent.adapters.docker.create_config import binds_host_ports
from twilight_agent.adapters.docker.errors import engine_errors
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import TwilightError
from twilight_agent.logs import get_logger

log = get_logger("twilight.neighbours")

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
SBIN = "/usr/sbin:/sbin"  # where iproute2 puts `ip`, whatever PATH the agent was given


class Engine(Protocol):
    """What is asked of the engine (docker-py's ``APIClient``)."""

    def inspect_container(self, container: str) -> Mapping[str, Any]: ...

    def inspect_network(self, net_id: str) -> Mapping[str, Any]: ...

    def info(self) -> Mapping[str, Any]: ...


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

    def __init__(self, base_url: str, run: Callable[..., Any] = subprocess.run) -> None:
        self._run = run
        self._local: bool | None = None if base_url.startswith(("unix://", "/")) else False
        self._devices: dict[str, str | None] = {}
        self._warned = False

    def refresh(self, engine: Engine, container_id: str) -> None:
        """Best effort, for a container just started: a failure is logged (once), never
        raised."""
        try:
            with engine_errors(f"inspecting container {container_id[:12]}"):
                info = engine.inspect_container(container_id)
            if not binds_host_ports(info) or not self._on_this_host(engine):
                return
            found = entries_of(info, lambda nid: self._device(engine, nid))
        except TwilightError as exc:
            self._warn(f"the engine did not describe the container's networks: {exc}")
            return
        self._replace(found)

    def _on_this_host(self, engine: Engine) -> bool:
        if self._local is None:
            with engine_errors("asking the engine whether it is rootless"):
                options = engine.info().get("SecurityOptions") or []
            self._local = not any("name=rootless" in str(o) for o in options)
        return self._local

    def _device(self, engine: Engine, network_id: str) -> str | None:
        if network_id not in self._devices:
            with engine_errors(f"inspecting network {network_id[:12]}"):
                network = engine.inspect_network(network_id)
            self._devices[network_id] = bridge_device(network)
        return self._devices[network_id]

    def _replace(self, found: list[Entry]) -> None:
        if not found:
            return
        ip = shutil.which("ip") or shutil.which("ip", path=SBIN)
        if ip is None:
            self._warn("`ip` (iproute2) is not installed")
            return
        for entry in found:
            try:
                done = self._run(neigh_argv(ip, entry), capture_output=True, text=True,
                                 timeout=DEFAULT.ip_timeout_s, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                self._warn(f"`ip` could not run: {exc}")
                return
            if done.returncode != 0:
                lines = str(done.stderr or done.stdout or "").strip().splitlines()
                self._warn(lines[-1] if lines else f"`ip` exited {done.returncode}")
                return
            log.info("neighbour_refreshed", address=entry.address, mac=entry.mac,
                     device=entry.device)

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("neighbour_refresh_failed", reason=reason,
                        effect="clients of a published port may wait ~1 s after a stop-first "
                               "swap (needs CAP_NET_ADMIN and `ip`)")
