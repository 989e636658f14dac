"""The kinds of target the agent deploys into, one ``TargetKind`` record each.

A record says everything the rest of the code needs to know about a kind: the settings
that select it, how its port is built, how another config file's target is compared
with it (instances), what ``check`` calls it, and which settings it cannot be combined
with. Nothing outside this module and the adapters branches on a kind's setting
(``tests/unit/test_target_kinds.py`` counts the places): a new kind is its adapter, its
settings fields and one record in ``KINDS``.

The adapters load on first use (``lazy.py``): ``settings.py`` checks the records, and
``--help`` must not load the docker SDK.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twilight_agent.core.clock import Clock
from twilight_agent.lazy import lazy_module

if TYPE_CHECKING:
    from twilight_agent.core.ports import TargetPort

SWARM_SERVICE_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")  # swarm's name rule

container_target = lazy_module("twilight_agent.adapters.docker.container_target")
swarm_target = lazy_module("twilight_agent.adapters.docker.swarm_target")

SERVICE_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # compose's own rule
# A config file's settings, ``TWILIGHT_`` dropped, upper case (``CONTAINER``, ...).
Values = Mapping[str, str]
# The engine's pull credentials, asked when needed (None: anonymous).
PullAuth = Callable[[], "Mapping[str, str] | None"]
Builder = Callable[[Any, Any, Clock, PullAuth], "TargetPort"]


def _no_rules(settings: Any) -> None:
    """A kind whose settings need no rule beyond their exclusivity."""


@dataclass(frozen=True)
class TargetKind:
    """One kind of target; ``settings`` below is ``Settings`` (or a test's subclass)."""

    name: str  # the kind in an instance key: two configs of one kind and name overlap
    label: str  # what ``check`` calls what runs (the JSON ``kind``)
    selects: tuple[str, ...]  # the settings fields that select it (any one set)
    fields: tuple[str, ...]  # every setting naming its target (read from other configs)
    build: Builder  # (settings, runtime, clock, pull auth) -> its TargetPort
    key: Callable[[Values], tuple[str, frozenset[str]]]  # name and services in a config
    excludes: tuple[str, ...] = ()  # settings it cannot be combined with
    clash: str = ""  # the error when one is set: ``{env}`` names it
    rules: Callable[[Any], None] = _no_rules  # its own settings' rules, always checked

    def selected(self, settings: Any) -> bool:
        return any(getattr(settings, f, "") for f in self.selects)

    def in_values(self, values: Values) -> bool:
        return any(values.get(f.upper()) for f in self.selects)

    def check(self, settings: Any) -> None:
        """Raise ``ValueError`` (one line) when the settings break this kind's rules."""
        if self.selected(settings):
            for name in self.excludes:
                if getattr(settings, name, ""):
                    raise ValueError(self.clash.format(env=f"TWILIGHT_{name.upper()}"))
        self.rules(settings)


# -- a single container ---------------------------------------------------------------
def _build_container(settings: Any, runtime: Any, clock: Clock,
                     auth: PullAuth) -> TargetPort:
    target: TargetPort = container_target.ContainerTarget(
        runtime, name=settings.container, health_url=settings.health_url,
        env_file=settings.env_file, docker_host=settings.docker_host)
    return target


CONTAINER = TargetKind(
    name="container", label="container", selects=("container",), fields=("container",),
    build=_build_container, key=lambda v: (v["CONTAINER"], frozenset()),
    excludes=("compose_project", "service", "services"),
    clash="set TWILIGHT_CONTAINER or TWILIGHT_COMPOSE_PROJECT (+ TWILIGHT_SERVICE or "
          "TWILIGHT_SERVICES), not both")


# -- a compose service group ------------------------------------------------------------
def _build_compose(settings: Any, runtime: Any, clock: Clock,
                   auth: PullAuth) -> TargetPort:
    target: TargetPort = container_target.ComposeGroupTarget(
        runtime, project=settings.compose_project, services=settings.service_list,
        image=str(settings.image_ref), health_url=settings.health_url,
        env_file=settings.env_file, docker_host=settings.docker_host)
    return target


def _compose_key(values: Values) -> tuple[str, frozenset[str]]:
    listed = values.get("SERVICES") or values.get("SERVICE") or ""
    return values["COMPOSE_PROJECT"], frozenset(s.strip() for s in listed.split(",")
                                                 if s.strip())


def _compose_rules(settings: Any) -> None:
    if (settings.service or settings.services) and not settings.compose_project:
        raise ValueError("TWILIGHT_SERVICE and TWILIGHT_SERVICES need "
                         "TWILIGHT_COMPOSE_PROJECT")
    if settings.service and settings.services:
        raise ValueError("set TWILIGHT_SERVICE or TWILIGHT_SERVICES, not both")
    for name in settings.service_list:
        if not SERVICE_RE.fullmatch(name):
            raise ValueError(f"TWILIGHT_SERVICES: {name[:40]!r} is not a service name")


COMPOSE = TargetKind(
    name="compose", label="container", selects=("compose_project",),
    fields=("compose_project", "service", "services"), build=_build_compose,
    key=_compose_key, rules=_compose_rules)


# -- a swarm service ---------------------------------------------------------------------
def _build_swarm(settings: Any, runtime: Any, clock: Clock,
                 auth: PullAuth) -> TargetPort:
    target: TargetPort = swarm_target.SwarmTarget(
        runtime, service=settings.swarm_service, health_url=settings.health_url,
        auth=auth, registry_host=settings.image_ref.host,
        order=settings.swarm_order, parallelism=settings.swarm_parallelism,
        monitor_s=settings.swarm_monitor,
        gate_s=settings.health_timeout + settings.health_soak, clock=clock)
    return target


def _swarm_rules(settings: Any) -> None:
    if not settings.swarm_service:
        if settings.swarm_order or settings.swarm_parallelism is not None \
                or settings.swarm_monitor:
            raise ValueError("TWILIGHT_SWARM_ORDER, _PARALLELISM and _MONITOR need "
                             "TWILIGHT_SWARM_SERVICE")
        return
    if not SWARM_SERVICE_RE.fullmatch(settings.swarm_service):
        raise ValueError(f"TWILIGHT_SWARM_SERVICE: {settings.swarm_service[:40]!r} is not "
                         "a service name")
    if settings.swap != "auto":
        raise ValueError("TWILIGHT_SWAP does not apply to a swarm service: set "
                         "TWILIGHT_SWARM_ORDER (start-first or stop-first)")
    if settings.swarm_monitor < 0 or settings.swarm_monitor > 86400:
        raise ValueError("TWILIGHT_SWARM_MONITOR must be >= 0 and at most 24h")


SWARM = TargetKind(
    name="swarm service", label="service", selects=("swarm_service",),
    fields=("swarm_service",), build=_build_swarm,
    key=lambda v: (v["SWARM_SERVICE"], frozenset()),
    # a step a swarm service has no place for is a clash too
    excludes=("container", "compose_project", "service", "services", "pre_deploy"),
    clash="set TWILIGHT_SWARM_SERVICE or {env}, not both", rules=_swarm_rules)


# In this order an instance key is read from another config file; the first is the
# kind of a config that selects none.
KINDS: tuple[TargetKind, ...] = (CONTAINER, SWARM, COMPOSE)


def kind_of(settings: Any) -> TargetKind:
    """The kind the settings select (valid settings select at most one)."""
    return next((k for k in KINDS if k.selected(settings)), KINDS[0])


def has_target(settings: Any) -> bool:
    return any(k.selected(settings) for k in KINDS)


def check_settings(settings: Any) -> None:
    """Every kind's exclusivity and rules; raises ``ValueError`` with one line."""
    for kind in KINDS:
        kind.check(settings)


def build_target(settings: Any, runtime: Any, clock: Clock, auth: PullAuth) -> TargetPort:
    return kind_of(settings).build(settings, runtime, clock, auth)


def instance_key(values: Values) -> tuple[str, str, frozenset[str]] | None:
    """``(kind name, target name, services)`` of a config's values; None: no target."""
    for kind in KINDS:
        if kind.in_values(values):
            return (kind.name, *kind.key(values))
    return None


def target_values(settings: Any) -> dict[str, str]:
    """The settings naming the target, as a config file spells them (``instance_key``)."""
    return {f.upper(): str(getattr(settings, f, "") or "") for k in KINDS for f in k.fields}
