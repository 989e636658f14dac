"""Composition root: settings -> adapters -> agent. The only place adapters are wired."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twilight_agent.settings import Settings

if TYPE_CHECKING:
    from twilight_agent.adapters.registry import HttpRegistry


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
