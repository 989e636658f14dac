"""The new container's create request, rebuilt from the old container. Pure: no Docker calls.

Input: the old container's inspect, its image's inspect, the new image's inspect and the
engine's API version. Output: a ``CreatePlan`` whose ``body`` is posted to
``/containers/create`` as is, plus the networks to connect before start when the engine
takes only one network at create time (API < 1.44).

What the old container holds merely because the OLD image said so is dropped, so that the
new image's values apply: env entries and labels present verbatim in the old image,
cmd/entrypoint/workdir/user/healthcheck/stop signal equal to the old image's, and the
image's volumes and exposed ports. Everything the operator set is kept: host config,
networks with their aliases, run-time env and labels, compose labels. Anonymous volumes
are reattached by name so their data survives. Engine-generated values (hostname equal to
the short id, MAC addresses, endpoint ids, addresses) are never copied.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

COMPOSE_LABEL_PREFIX = "com.docker.compose."
MULTI_NETWORK_API = (1, 44)  # first API version that takes several networks at create
# Config fields that only ever come from the image unless the operator overrides them.
IMAGE_FIELDS = ("Cmd", "Entrypoint", "WorkingDir", "User", "Healthcheck", "StopSignal", "Shell")
# Config fields that describe the old run, not what to create.
RUNTIME_CONFIG_FIELDS = ("Image", "ArgsEscaped", "OnBuild", "MacAddress")
# HostConfig lists the engine fills with its own defaults; it recomputes them from SecurityOpt.
ENGINE_DEFAULT_HOST_FIELDS = ("MaskedPaths", "ReadonlyPaths")
# Endpoint settings an operator can set; the rest (ids, addresses, DNSNames) is runtime.
ENDPOINT_FIELDS = ("IPAMConfig", "Links", "Aliases", "DriverOpts", "GwPriority")
_ANON_VOLUME = re.compile(r"^[0-9a-f]{64}$")
_NO_ENDPOINT_MODES = ("host", "none")


@dataclass(frozen=True)
class CreatePlan:
    """What to send to the engine to create the new container."""

    name: str
    body: dict[str, Any]  # Config fields + HostConfig + NetworkingConfig
    connect_after: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was dropped or reattached, for logs
    image_id: str = ""  # the new image's id, as the engine has it


def endpoints_of(plan: CreatePlan) -> list[tuple[str, dict[str, Any]]]:
    """Every network endpoint of a plan: those sent at create, then those connected after."""
    at_create = (plan.body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    return [*at_create.items(), *plan.connect_after]


def without_aliases(plan: CreatePlan) -> CreatePlan:
    """The same plan, reachable on its networks by address only: a start-first container
    gets the aliases (the name a proxy resolves) only after its gate (``endpoints_of`` of
    the full plan, at the cutover)."""
    body = copy.deepcopy(plan.body)
    for endpoint in ((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}).values():
        endpoint.pop("Aliases", None)
    after = [(net, {k: v for k, v in ep.items() if k != "Aliases"})
             for net, ep in plan.connect_after]
    notes = [*plan.notes, "network aliases held back until the gate passed"]
    return dataclasses.replace(plan, body=body, connect_after=after, notes=notes)


def parse_api_version(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


def build_create_plan(container: Mapping[str, Any], old_image: Mapping[str, Any],
                      new_image: Mapping[str, Any], image: str, name: str,
                      api_version: str) -> CreatePlan:
    """The create request for ``image`` under ``name``, from the old container's inspect."""
    notes: list[str] = []
    old_cfg = container.get("Config") or {}
    img_cfg = old_image.get("Config") or {}
    host = _host_config(container)
    config = _config(container, img_cfg, host, notes)
    config["Image"] = image
    _keep_bound_ports(config, host)
    _reattach_anonymous_volumes(container, img_cfg, new_image.get("Config") or {}, host,
                                config, notes)
    endpoints = _endpoints(container, notes)
    primary = _primary_network(host, endpoints)
    multi = parse_api_version(api_version) >= MULTI_NETWORK_API
    mac = old_cfg.get("MacAddress") or ""
    if mac and primary and multi:
        endpoints[primary]["MacAddress"] = mac
    elif mac:
        config["MacAddress"] = mac
    at_create, after = _split_networks(endpoints, primary, multi)
    body = dict(config)
    body["HostConfig"] = host
    if at_create:
        body["NetworkingConfig"] = {"EndpointsConfig": at_create}
    return CreatePlan(name=name, body=body, connect_after=after, notes=notes,
                      image_id=str(new_image.get("Id") or ""))


# ----------------------------------------------------------------------------- Config
def _config(container: Mapping[str, Any], img_cfg: Mapping[str, Any],
            host: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    config = copy.deepcopy(dict(container.get("Config") or {}))
    for key in RUNTIME_CONFIG_FIELDS:
        config.pop(key, None)
    _drop_generated_hostname(config, container, host, notes)
    config["Env"] = _own_env(config.get("Env"), img_cfg.get("Env"))
    config["Labels"] = _own_labels(config.get("Labels"), img_cfg.get("Labels"))
    for key in IMAGE_FIELDS:
        if key in config and config[key] == img_cfg.get(key):
            config.pop(key)
    config["Volumes"] = _minus(config.get("Volumes"), img_cfg.get("Volumes")) or None
    config["ExposedPorts"] = _minus(config.get("ExposedPorts"), img_cfg.get("ExposedPorts"))
    return config


def _drop_generated_hostname(config: dict[str, Any], container: Mapping[str, Any],
                             host: Mapping[str, Any], notes: list[str]) -> None:
    hostname = config.get("Hostname") or ""
    short_id = str(container.get("Id", ""))[:12]
    mode = str(host.get("NetworkMode") or "")
    if hostname == short_id or mode.startswith("container:") or mode == "host":
        config.pop("Hostname", None)
        if hostname:
            notes.append(f"hostname {hostname} not copied (engine-generated)")


def _own_env(env: list[str] | None, image_env: list[str] | None) -> list[str]:
    inherited = set(image_env or [])
    return [e for e in env or [] if e not in inherited]


def _own_labels(labels: Mapping[str, str] | None,
                image_labels: Mapping[str, str] | None) -> dict[str, str]:
    inherited = image_labels or {}
    return {k: v for k, v in (labels or {}).items()
            if k.startswith(COMPOSE_LABEL_PREFIX) or inherited.get(k) != v}


def _minus(mine: Mapping[str, Any] | None, image: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (mine or {}).items() if k not in (image or {})}


def _keep_bound_ports(config: dict[str, Any], host: Mapping[str, Any]) -> None:
    """A published port stays exposed even when only the old image exposed it."""
    exposed = dict(config.get("ExposedPorts") or {})
    for port in host.get("PortBindings") or {}:
        exposed.setdefault(port, {})
    config["ExposedPorts"] = exposed or None


# ----------------------------------------------------------------------------- HostConfig
def _host_config(container: Mapping[str, Any]) -> dict[str, Any]:
    host = copy.deepcopy(dict(container.get("HostConfig") or {}))
    for key in ENGINE_DEFAULT_HOST_FIELDS:
        host.pop(key, None)
    return host


def _mounted_destinations(host: Mapping[str, Any]) -> set[str]:
    dests = set()
    for bind in host.get("Binds") or []:
        parts = str(bind).split(":")
        if len(parts) >= 2:
            dests.add(parts[1])
    for mount in host.get("Mounts") or []:
        dests.add(str(mount.get("Target", "")))
    return dests


def _reattach_anonymous_volumes(container: Mapping[str, Any], old_img_cfg: Mapping[str, Any],
                                new_img_cfg: Mapping[str, Any], host: dict[str, Any],
                                config: dict[str, Any], notes: list[str]) -> None:
    """Mount the old container's anonymous volumes by name, so their data carries over."""
    mounted = _mounted_destinations(host)
    binds = list(host.get("Binds") or [])
    for mount in container.get("Mounts") or []:
        name, dest = str(mount.get("Name") or ""), str(mount.get("Destination") or "")
        if mount.get("Type") != "volume" or not _ANON_VOLUME.match(name) or dest in mounted:
            continue
        binds.append(f"{name}:{dest}" + ("" if mount.get("RW", True) else ":ro"))
        mounted.add(dest)
        gone = dest in (old_img_cfg.get("Volumes") or {}) and \
            dest not in (new_img_cfg.get("Volumes") or {})
        notes.append(f"anonymous volume {name[:12]} reattached at {dest}"
                     + (" (the new image no longer declares it)" if gone else ""))
    if binds:
        host["Binds"] = binds
    volumes = {k: v for k, v in (config.get("Volumes") or {}).items() if k not in mounted}
    config["Volumes"] = volumes or None


# ----------------------------------------------------------------------------- networks
def _endpoints(container: Mapping[str, Any], notes: list[str]) -> dict[str, dict[str, Any]]:
    cid = str(container.get("Id", ""))
    own = {cid, cid[:12]}
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode in _NO_ENDPOINT_MODES or mode.startswith("container:"):
        return {}
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    out: dict[str, dict[str, Any]] = {}
    for net, settings in networks.items():
        endpoint = {k: copy.deepcopy(settings[k]) for k in ENDPOINT_FIELDS if settings.get(k)}
        aliases = [a for a in endpoint.get("Aliases") or [] if a not in own]
        if aliases:
            endpoint["Aliases"] = aliases
        else:
            endpoint.pop("Aliases", None)
        out[net] = endpoint
    return out


def _primary_network(host: Mapping[str, Any], endpoints: Mapping[str, Any]) -> str | None:
    mode = str(host.get("NetworkMode") or "")
    if mode == "default":
        mode = "bridge"
    if mode in endpoints:
        return mode
    return next(iter(endpoints), None)


def _split_networks(endpoints: dict[str, dict[str, Any]], primary: str | None, multi: bool,
                    ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    """Networks passed at create, and those to connect before start (API < 1.44)."""
    if multi or primary is None:
        return endpoints, []
    others = [(net, ep) for net, ep in endpoints.items() if net != primary]
    return {primary: endpoints[primary]}, others
def _port_number(key: str) -> int:
    number = key.split("/", 1)[0]
    return int(number) if number.isdigit() else 0


def binds_host_ports(info: Mapping[str, Any]) -> bool:
    """Whether a container's inspect binds any of its ports on the host."""
    bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
    return any(bindings.values())


def published_url_from(ports: Mapping[str, Any], path: str = "/healthz") -> str | None:
    """``http://<host>:<port><path>`` for the first published tcp port, lowest port first."""
    for key in sorted((k for k in ports if k.endswith("/tcp")), key=_port_number):
        for binding in ports.get(key) or []:
            host_port = str(binding.get("HostPort") or "")
            if host_port:
                return f"http://{_url_host(str(binding.get('HostIp') or ''))}:{host_port}{path}"
    return None


def _url_host(host_ip: str) -> str:
    if host_ip in ("", "0.0.0.0", "::", "127.0.0.1"):
        return "127.0.0.1"
    return f"[{host_ip}]" if ":" in host_ip else host_ip
