"""The URL settings checked at load, on the URL as httpx parses it (``httpx.URL``): what
passes here is what a request will be sent to, never an ``InvalidURL`` mid-deploy.

``TWILIGHT_HEALTH_URL`` and ``TWILIGHT_WEBHOOK_URL``: http(s), no control character or
space, a host httpx accepts. ``TWILIGHT_REGISTRY_URL`` more strictly, its host being the
one checked: ``http://evil.example#@127.0.0.1:5000`` reads like loopback but goes to
``evil.example``. A registry URL has no user-info (credentials come from
``TWILIGHT_REGISTRY_USERNAME`` and the token file), no query or fragment, and no control
character or space; plain ``http://`` only to a loopback host (a token or a PAT would
cross the network in clear text otherwise). Each is a one-line ``ValueError``.
"""

from __future__ import annotations

import httpx

from twilight_agent.core.destinations import is_loopback_host, parse_auth_hosts, printable

WHAT = "TWILIGHT_REGISTRY_URL"


def check_http_url(name: str, url: str) -> None:
    """``ValueError`` naming ``TWILIGHT_<NAME>`` unless ``url`` is an http(s) URL httpx sends
    a request to (``{address}``, the new container's address, stands for an IP)."""
    what = f"TWILIGHT_{name.upper()}"
    if not url.startswith(("http://", "https://")) or any(c <= " " or c == "\x7f"
                                                          for c in url):
        raise ValueError(f"{what} must be an http:// or https:// URL (no space or control "
                         "character)")
    try:
        if not httpx.URL(url.replace("{address}", "127.0.0.1")).host:
            raise ValueError("no host")
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"{what}: not a URL ({printable(exc, 80)})") from None


def check_registry_transport(url: str, auth_hosts: str) -> None:
    """``ValueError`` naming the setting for a registry URL or auth host list to refuse."""
    if url:
        _check_url(url)
    try:
        parse_auth_hosts(auth_hosts)
    except ValueError as exc:
        raise ValueError(f"TWILIGHT_REGISTRY_AUTH_HOSTS: {exc}") from None


def _check_url(url: str) -> None:
    if any(c <= " " or c == "\x7f" for c in url):
        raise ValueError(f"{WHAT}: {printable(url, 80)!r} holds a control character or a "
                         "space")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"{WHAT}: not a URL ({printable(exc, 80)})") from None
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{WHAT} must start with http:// or https://")
    try:  # the host as sent (IDNA-encoded), a name or an address
        if not parse_auth_hosts(parsed.raw_host.decode("ascii")):
            raise ValueError("no host")
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{WHAT}: {printable(parsed.host, 60)!r} is not a host name") from None
    if parsed.scheme == "http" and not is_loopback_host(parsed.host):
        raise ValueError(f"{WHAT}: plain http:// is allowed only for a loopback address "
                         f"(127.0.0.1, ::1, localhost), not {printable(parsed.host, 60)!r}; "
                         "use https://")
    if parsed.userinfo:
        raise ValueError(f"{WHAT}: no user or password in the URL (it would send requests "
                         f"to {printable(parsed.host, 60)!r}); set TWILIGHT_REGISTRY_USERNAME "
                         "and TWILIGHT_REGISTRY_PASSWORD_FILE")
    if parsed.query or parsed.fragment:
        raise ValueError(f"{WHAT}: no ? or # in the URL (its host is "
                         f"{printable(parsed.host, 60)!r}, whatever follows)")
