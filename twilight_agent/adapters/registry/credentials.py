"""Where the registry credentials come from, strongest first.

1. The systemd credential ``registry-token`` or ``TWILIGHT_REGISTRY_PASSWORD_FILE``, with
   ``TWILIGHT_REGISTRY_USERNAME`` (the ``CredentialSource`` that ``app.py`` builds reads
   the files when asked).
2. The docker ``config.json`` entry for the registry host (docker-py's ``docker.auth``).
3. Nothing: anonymous.

The password stays a ``SecretStr``: it is never part of ``repr()`` or a log line. The
credentials carry the other hostnames they may be sent to as a token realm
(``TWILIGHT_REGISTRY_AUTH_HOSTS``); the registry's own host is always allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker.auth
import docker.errors
from pydantic import SecretStr

from twilight_agent.errors import ConfigError
from twilight_agent.logs import get_logger

log = get_logger("twilight.credentials")


@dataclass(frozen=True)
class Credentials:
    """A user and a token (PAT) for Basic auth at the token endpoint."""

    username: str
    password: SecretStr
    source: str  # "token file" | "docker config" - for messages, never the secret
    auth_hosts: frozenset[str] = frozenset()  # realm hosts besides the registry's own

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, source={self.source!r})"

    def auth_config(self) -> dict[str, str]:
        """The docker-style ``auth_config`` the engine wants for a pull."""
        return {"username": self.username, "password": self.password.get_secret_value()}


def _no_token() -> SecretStr | None:
    return None


@dataclass(frozen=True)
class CredentialSource:
    """Where the credentials for one registry come from (``app.credential_source``)."""

    host: str  # the registry's host, as docker's config.json names it
    username: str = ""
    token: Callable[[], SecretStr | None] = field(default=_no_token, repr=False)
    auth_hosts: frozenset[str] = frozenset()  # realm hosts besides the registry's own


def find_credentials(source: CredentialSource,
                     docker_config: Path | None = None) -> Credentials | None:
    """Credentials for the source's registry, or None for anonymous."""
    password = source.token()
    if password is not None:
        if not source.username:
            raise ConfigError("TWILIGHT_REGISTRY_USERNAME is required with a registry token")
        return Credentials(source.username, password, "token file", source.auth_hosts)
    found = from_docker_config(source.host, docker_config)
    return replace(found, auth_hosts=source.auth_hosts) if found else None


def from_docker_config(host: str, config_path: Path | None = None) -> Credentials | None:
    """The ``config.json`` entry for ``host`` (auths, credsStore or credHelpers), if any."""
    try:
        config = docker.auth.load_config(str(config_path) if config_path else None)
        entry: dict[str, Any] | None = docker.auth.resolve_authconfig(config, registry=host)
    except (docker.errors.DockerException, OSError, ValueError) as exc:
        log.warning("docker_config_unusable", host=host, error=str(exc)[:200])
        return None
    if not entry:
        return None
    username = entry.get("username") or entry.get("Username")
    password = entry.get("password") or entry.get("Password")
    if not username or not password:
        if entry.get("IdentityToken"):
            log.warning("docker_config_identity_token_unsupported", host=host)
        return None
    return Credentials(str(username), SecretStr(str(password)), "docker config")
