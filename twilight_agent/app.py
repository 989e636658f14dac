"""Composition root: settings -> adapters -> agent. The only place adapters are wired.

Every builder takes the one ``Clock`` (the system's unless a test hands in a fake) and
passes it to each part that reads or waits on time: the registry session, the engine
adapter (prune cutoff, the pre-deploy task), the targets, the health gate, the keyless
root, the promoter, the metrics file and the notification sinks.

Adapters that pull in a heavy library (the docker SDK, httpx, prometheus-client) are
imported inside their builders so ``--help`` starts fast and the idle daemon loads only
what its settings turn on; never to dodge an import cycle.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from twilight_agent import target_kinds
from twilight_agent.adapters.notify.sinks import EventBus
from twilight_agent.adapters.state.lock import DeployLock
from twilight_agent.agent import Agent
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.tunables import DEFAULT, Tunables
from twilight_agent.errors import ConfigError
from twilight_agent.run.deploy_run import AgentConfig, RunConfig
from twilight_agent.settings import Settings

if TYPE_CHECKING:
    from twilight_agent.adapters.docker.health import HealthGate
    from twilight_agent.adapters.docker.probe import StateSource
    from twilight_agent.adapters.docker.runtime import DockerRuntime
    from twilight_agent.adapters.notify.delivery import QueuedSink
    from twilight_agent.adapters.registry.client import HttpRegistry
    from twilight_agent.adapters.registry.credentials import CredentialSource
    from twilight_agent.adapters.state.store import Store
    from twilight_agent.core.ports import (
        EventSink,
        HealthPort,
        RegistryPort,
        TargetPort,
    )
    from twilight_agent.core.signatures import SignaturePort
    from twilight_agent.promotion import Promoter


def build_registry(settings: Settings, platform: Any = ("linux", "amd64"),
                   clock: Clock = SYSTEM, **options: Any) -> HttpRegistry:
    """The registry client for ``settings.image``, with the credentials found for it.

    ``platform`` is the engine's os/arch, or a callable that asks the engine on first use;
    ``options`` go to ``HttpRegistry`` (timeouts, retry counts, ``transport``).
    """
    from twilight_agent.adapters.registry.client import HttpRegistry
    from twilight_agent.adapters.registry.credentials import find_credentials

    return HttpRegistry(settings.registry_base, settings.image_ref.repository,
                        credentials=find_credentials(credential_source(settings)),
                        tag_pattern=settings.tag_pattern, platform=platform, clock=clock,
                        **options)


def registry_auth(settings: Settings) -> dict[str, str] | None:
    """Docker-style ``auth_config`` ``{username, password}`` for engine pulls; None = anonymous."""
    from twilight_agent.adapters.registry.credentials import find_credentials

    creds = find_credentials(credential_source(settings))
    return creds.auth_config() if creds else None


def credential_source(settings: Settings) -> CredentialSource:
    """Where the registry credentials come from: the token file or systemd credential
    (read when asked) with the user, else docker's config.json for the image's host."""
    from twilight_agent.adapters.registry.credentials import CredentialSource

    return CredentialSource(settings.image_ref.host, settings.registry_username,
                            settings.registry_password, settings.auth_hosts)


def build_runtime(settings: Settings, clock: Clock = SYSTEM) -> DockerRuntime:
    """The Docker engine adapter for the target container; connects on first use."""
    from twilight_agent.adapters.docker.runtime import DockerRuntime

    return DockerRuntime(settings.docker_host, container=settings.container,
                         repository=str(settings.image_ref), clock=clock)


def build_store(settings: Settings, *, readonly: bool = False) -> Store:
    """The sqlite state store (journal, history, quarantine) in ``settings.state_dir``;
    ``readonly`` (``check``) reads what is there and creates nothing."""
    from twilight_agent.adapters.state.store import Store

    return Store(settings.state_dir, readonly=readonly)


def build_health(settings: Settings, runtime: StateSource, clock: Clock = SYSTEM,
                 tunables: Tunables = DEFAULT) -> HealthGate:
    """The health gate over the state ``runtime`` reports (the engine's, or the target's:
    a swarm service's update status) and an HTTP probe.

    Timeout, interval and soak are per call (``settings.health_*``), not fixed here.
    """
    from twilight_agent.adapters.docker.health import HealthGate

    return HealthGate(runtime, clock=clock, tick=tunables.health_tick_s)


def build_agent(settings: Settings, sinks: list[EventSink] | None = None, *,
                registry: RegistryPort | None = None, runtime: DockerRuntime | None = None,
                health: HealthPort | None = None, store: Any = None,
                lock: AbstractContextManager[Any] | None = None, clock: Clock = SYSTEM,
                tunables: Tunables = DEFAULT,
                signatures: SignaturePort | None = None) -> Agent:
    """The deploy agent with every adapter wired from ``settings``; nothing connects yet.

    Tests hand in fakes or instrumented adapters for any part; ``lock`` is a held lock
    when the caller (the CLI) took it already.
    """
    rt: Any = runtime if runtime is not None else build_runtime(settings, clock)
    reg = registry if registry is not None else build_registry(settings, rt.platform, clock)
    target, events = build_target(settings, rt, clock), EventBus(sinks or [])
    st = store if store is not None else build_store(settings)
    gate = health or build_health(settings, target, clock, tunables)
    promoter = build_promoter(settings, st, target, events, rt.platform, clock, gate)
    return Agent(
        agent_config(settings), reg, target, rt, gate,
        st, events, lock=lock or DeployLock(settings.state_dir), clock=clock,
        tunables=tunables, auth=lambda: registry_auth(settings),
        closers=_closers(reg, rt, gate, promoter),
        signatures=signatures or build_verifier(settings, reg, clock), promoter=promoter)


def agent_config(s: Settings) -> AgentConfig:
    """What the Agent needs of the settings (and its runs, ``RunConfig``)."""
    return AgentConfig(run=run_config(s), track=s.track, pin=s.pin, windows=s.windows,
                       min_age=s.min_age, verify_grace=s.verify_grace,
                       allow_downgrade=s.allow_downgrade)


def run_config(s: Settings) -> RunConfig:
    return RunConfig(image_ref=s.image_ref, env_file=s.env_file, tag_pattern=s.tag_pattern,
                     health_timeout=s.health_timeout, health_interval=s.health_interval,
                     health_soak=s.health_soak, prune_after=s.prune_after,
                     pre_deploy=s.pre_deploy_argv, pre_deploy_timeout=s.pre_deploy_timeout,
                     watch=s.watch, health_failures=s.health_failures, swap=s.swap,
                     drain=s.drain)


def build_promoter(settings: Settings, store: Any, target: Any, events: EventBus,
                   platform: Any, clock: Clock = SYSTEM,
                   gate: HealthPort | None = None) -> Promoter | None:
    """The canary's promoter (``TWILIGHT_PROMOTE_TO``); None when this host promotes
    nothing. Its registry client, with the push token, is built on first use; ``gate``
    asks whether the build is still healthy when its promotion is due."""
    if not settings.promote_to:
        return None
    from twilight_agent.promotion import PromoteConfig, Promoter

    def pusher() -> Any:
        from twilight_agent.adapters.registry.credentials import Credentials
        from twilight_agent.adapters.registry.push import TagPusher

        token = settings.promote_password()
        if token is None:
            raise ConfigError("the promote token is gone: TWILIGHT_PROMOTE_PASSWORD_FILE or "
                              "the systemd credential promote-token")
        creds = Credentials(settings.registry_username, token, "promote token",
                            settings.auth_hosts)
        return TagPusher(settings.registry_base, settings.image_ref.repository, creds,
                         tag_pattern=settings.tag_pattern, platform=platform, clock=clock)

    healthy = None if gate is None else functools.partial(
        gate.verify, timeout=settings.health_timeout, interval=settings.health_interval,
        soak=0, failures=settings.health_failures)
    return Promoter(PromoteConfig(settings.promote_to, settings.promote_after), store,
                    target, events, pusher, clock, healthy)


def build_verifier(settings: Settings, registry: Any,
                   clock: Clock = SYSTEM) -> SignaturePort | None:
    """The cosign check of ``TWILIGHT_VERIFY_KEY``, or the keyless one of
    ``TWILIGHT_VERIFY_IDENTITY`` (never both: settings refuse it), over ``registry``; None
    when neither is set. sigstore itself loads only when a candidate is checked."""
    rule = settings.identity_rule
    if rule is not None:
        from twilight_agent.adapters.verify.keyless import KeylessVerifier

        return KeylessVerifier(registry, rule, settings.verify_issuer, str(settings.image_ref),
                               trusted_root=settings.trusted_root_path,
                               state_dir=settings.state_dir, clock=clock)
    if not settings.verify_key_paths:
        return None
    from twilight_agent.adapters.verify.cosign import CosignVerifier
    from twilight_agent.adapters.verify.keys import load_keys

    return CosignVerifier(registry, load_keys(settings.verify_key_paths),
                          str(settings.image_ref), settings.required_annotations)


def build_target(settings: Settings, runtime: Any, clock: Clock = SYSTEM) -> TargetPort:
    """The target kind the settings select (``target_kinds.KINDS``): one container, a
    compose service group (``TWILIGHT_SERVICE`` with its replicas, ``TWILIGHT_SERVICES``,
    or every service of the project running the image), or a swarm service."""
    return target_kinds.build_target(settings, runtime, clock,
                                     lambda: registry_auth(settings))


def _closers(*parts: object) -> tuple[Any, ...]:
    """The ``close`` of every part that holds a connection (registry, engine, probe, the
    promoter's registry writer)."""
    return tuple(c for c in (getattr(p, "close", None) for p in parts) if callable(c))


def build_sinks(settings: Settings, tunables: Tunables = DEFAULT,
                clock: Clock = SYSTEM) -> list[EventSink]:
    """Optional event sinks: the metrics textfile, the webhook and the Apprise targets
    (``TWILIGHT_NOTIFY``), each when configured.

    Each module is imported only when its sink is on (prometheus-client, the webhook's
    thread; Apprise itself only when a message is sent). The webhook and the Apprise
    targets deliver from a thread: ``Agent.close()`` flushes them.
    """
    sinks: list[EventSink] = []
    if settings.metrics_file is not None:
        from twilight_agent.adapters.notify.metrics import MetricsFile, Schedule

        sinks.append(MetricsFile(settings.metrics_file, clock, schedule=Schedule(
            settings.poll_interval, settings.watch, settings.verify_grace)))
    return sinks + list(build_notifiers(settings, tunables, clock))


def build_notifiers(settings: Settings, tunables: Tunables = DEFAULT,
                    clock: Clock = SYSTEM) -> list[QueuedSink]:
    """The notification sinks: the webhook and the Apprise targets, each when set
    (``notify-test`` sends to exactly these)."""
    common: dict[str, Any] = {"log_lines": settings.webhook_log_lines,
                              "attempts": tunables.webhook_attempts,
                              "backoff": tunables.webhook_backoff_s,
                              "timeout": tunables.webhook_timeout_s, "clock": clock}
    out: list[QueuedSink] = []
    if settings.webhook_url:
        from twilight_agent.adapters.notify.webhook import Webhook

        out.append(Webhook(settings.webhook_url, settings.image, **common))
    urls = settings.notify_urls()
    if urls:
        from twilight_agent.adapters.notify.apprise_sink import AppriseSink

        out.append(AppriseSink(urls, settings.image, **common))
    return out
