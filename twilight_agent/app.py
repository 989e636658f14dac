"""Composition root: settings -> adapters -> agent. The only place adapters are wired."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twilight_agent.settings import Settings

if TYPE_CHECKING:
    from twilight_agent.adapters.docker_runtime import DockerRuntime
    from twilight_agent.adapters.health import HealthGate
    from twilight_agent.adapters.registry import HttpRegistry
    from twilight_agent.adapters.store import Store
    from twilight_agent.agent import Agent
    from twilight_agent.core.ports import EventSink


def build_registry(settings: Settings, platform: tuple[str, ...] | str = ("linux", "amd64"),
                   **options: Any) -> HttpRegistry:
    """The registry client for ``settings.image``, with the credentials found for it.

    ``platform`` is the engine's os/arch (the caller asks the engine); ``options`` go to
    ``HttpRegistry`` (timeouts, retry counts, an injected ``sleep`` or ``transport``).
    """
    from twilight_agent.adapters.credentials import find_credentials
    from twilight_agent.adapters.registry import HttpRegistry

    return HttpRegistry(settings.registry_base, settings.image_ref.repository,
                        credentials=find_credentials(settings),
                        tag_pattern=settings.tag_pattern, platform=platform, **options)


def registry_auth(settings: Settings) -> dict[str, str] | None:
    """Docker-style ``auth_config`` ``{username, password}`` for engine pulls; None = anonymous."""
    from twilight_agent.adapters.credentials import find_credentials

    creds = find_credentials(settings)
    return creds.auth_config() if creds else None


def build_runtime(settings: Settings) -> DockerRuntime:
    """The Docker engine adapter for the target container; connects on first use."""
    from twilight_agent.adapters.docker_runtime import DockerRuntime

    return DockerRuntime(settings.docker_host, container=settings.container,
                         compose_project=settings.compose_project, service=settings.service,
                         repository=str(settings.image_ref))


def build_store(settings: Settings) -> Store:
    """The sqlite state store (journal, history, quarantine) in ``settings.state_dir``."""
    from twilight_agent.adapters.store import Store

    return Store(settings.state_dir)


def build_agent(settings: Settings, sinks: list[EventSink] | None = None) -> Agent:
    """The deploy agent with every adapter wired from ``settings``; nothing connects yet."""
    from twilight_agent.agent import Agent

    runtime = build_runtime(settings)
    return Agent(settings, build_registry(settings), runtime, build_health(settings, runtime),
                 build_store(settings), list(sinks or []),
                 auth=lambda: registry_auth(settings))


def build_health(settings: Settings, runtime: DockerRuntime) -> HealthGate:
    """The health gate over ``runtime``'s container state and an HTTP probe.

    Timeout, interval and soak are per call (``settings.health_*``), not fixed here.
    """
    from twilight_agent.adapters.health import HealthGate

    return HealthGate(runtime)


def build_sinks(settings: Settings) -> list[EventSink]:
    """Optional event sinks: the metrics textfile and the webhook, each when configured.

    The webhook delivers from a thread: call its ``close()`` at shutdown.
    """
    from twilight_agent.adapters.metrics import MetricsFile
    from twilight_agent.adapters.webhook import Webhook

    sinks: list[EventSink] = []
    if settings.metrics_file is not None:
        sinks.append(MetricsFile(settings.metrics_file))
    if settings.webhook_url:
        sinks.append(Webhook(settings.webhook_url, settings.image))
    return sinks
