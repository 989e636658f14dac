"""Notifications through Apprise (``TWILIGHT_NOTIFY``): chat, e-mail, push, MQTT.

The same events and the same scrubbed message as the webhook (``message.py``), rendered
as a title and a few lines (``chat_message``), delivered off the deploy path by the
webhook's queue and thread (``delivery.QueuedSink``): each URL is one target with its
own retries. Apprise itself is imported by ``apprise_send`` at the first message, never
by an idle daemon. A target is logged as ``scheme://host`` only (``where``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from twilight_agent.adapters.notify.delivery import QueuedSink, Refused
from twilight_agent.adapters.notify.message import chat_message
from twilight_agent.lazy import lazy_module

# Apprise (~40 MB with its plugins) is loaded when a message is sent (twilight_agent/lazy.py)
apprise_send = lazy_module("twilight_agent.adapters.notify.apprise_send")

# Apprise's own list rule: targets are separated by blanks, or by a comma that starts
# the next URL (a comma inside a URL, as in mailto's ?to=a@x,b@y, stays).
_SPLIT = re.compile(r"\s+|,(?=\s*[a-z][a-z0-9+.-]*://)", re.I)


def split_urls(text: str) -> list[str]:
    """The URLs in ``text``: blanks, newlines or ``,scheme://`` separate them; a line
    starting with ``#`` is a comment."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [u.strip() for u in _SPLIT.split("\n".join(lines)) if u.strip()]


def where(url: str) -> str:
    """``scheme://host`` when the host is a host name or an address; for the schemes
    whose first part is a token (``tgram://TOKEN/...``, ``slack://A/B/C``) only
    ``scheme://…``. Never a user, a password, a path or a query."""
    scheme, _, rest = url.partition("://")
    try:
        host = urlsplit(f"http://{rest}").hostname or ""
    except ValueError:
        host = ""
    named = "." in host or host == "localhost" or _is_address(host)
    return f"{scheme.lower()}://{host if named else '…'}"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AppriseSink(QueuedSink):
    """``EventSink`` sending each message to every Apprise URL from a background thread."""

    kind = "notify"

    def __init__(self, urls: Sequence[str], image: str = "", **options: Any) -> None:
        super().__init__(image, **options)
        self._urls = tuple(urls)

    def targets(self) -> Sequence[str]:
        return self._urls

    def where(self, index: int) -> str:
        return where(self._urls[index])

    def _send(self, session: Any, index: int, body: dict[str, Any]) -> str | None:
        title, text, level = chat_message(body)
        try:
            error: str | None = apprise_send.send(self._urls[index], title, text, level)
        except apprise_send.NotAccepted as exc:
            raise Refused(str(exc)) from exc
        return error
