"""Notifications: a generic JSON POST to ``TWILIGHT_WEBHOOK_URL`` on deploy, rollback, halt.

``emit`` only puts the message on a bounded queue; one background thread delivers it with
short timeouts and up to three attempts (backoff 1 s, 2 s), so a webhook that is down or
slow never delays or fails a deploy (``delivery.QueuedSink``, shared with the Apprise
targets). The events, and one message per ``(deploy_id, event)``: ``message.py``. The body::

    {"event": "rollback", "host": "web-1", "image": "ghcr.io/acme/app",
     "deploy_id": "...", "timestamp": "2026-01-01T00:00:00Z", "outcome": "rolled_back",
     "from": {"tag": "sha-1111111", "digest": "sha256:..."},
     "to": {"tag": "sha-2222222", "digest": "sha256:..."},
     "reason": "health gate failed: http 500", "log_tail": "...",
     "text": "web-1: rollback ghcr.io/acme/app sha-2222222 -> sha-1111111: ..."}

``text`` makes it readable as-is by chat webhooks that show a ``text`` field. Only these
keys are sent, never settings or credentials; credentials inside the reason or log tail
are blanked (``core/scrub.py``: Authorization headers, URL passwords, ``password=``-style
pairs, GitHub, AWS, Google and Slack token shapes), and the URL (it often embeds a token)
is never logged. The reply is never read whole: its status is the answer, at most
``REPLY_CAP`` bytes of its body are read, then the connection is closed. The client reads
no proxy settings from the environment (``trust_env=False``), like the registry's and the
probe's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from twilight_agent import __version__
from twilight_agent.adapters.notify.delivery import (
    QUEUE_SIZE,
    QueuedSink,
    Refused,
)
from twilight_agent.adapters.notify.message import build_body, message_kind, tail_lines
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.tunables import DEFAULT

__all__ = ["REPLY_CAP", "Webhook", "build_body", "message_kind", "tail_lines"]
REPLY_CAP = 4 * 1024  # bytes of a reply read (and dropped): the status is the answer


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    """POST ``body``; of the reply, read at most ``REPLY_CAP`` bytes and drop them (a
    short reply leaves the connection reusable; a longer one is cut by closing it)."""
    with client.stream("POST", url, json=body) as response:
        size = 0
        for chunk in response.iter_raw():
            size += len(chunk)
            if size >= REPLY_CAP:
                break
    return response


class Webhook(QueuedSink):
    """``EventSink`` POSTing deploy/rollback/halt messages from a background thread."""

    kind = "webhook"

    def __init__(self, url: str, image: str = "", *, host: str | None = None,
                 log_lines: int = 50,
                 attempts: int = DEFAULT.webhook_attempts,
                 backoff: tuple[float, ...] = DEFAULT.webhook_backoff_s,
                 timeout: float = DEFAULT.webhook_timeout_s, queue_size: int = QUEUE_SIZE,
                 idle: float = DEFAULT.delivery_idle_s,
                 transport: httpx.BaseTransport | None = None, clock: Clock = SYSTEM) -> None:
        super().__init__(image, host=host, log_lines=log_lines, attempts=attempts,
                         backoff=backoff, timeout=timeout, queue_size=queue_size, idle=idle,
                         clock=clock)
        self.url = url
        self._transport = transport
        u = urlsplit(url)
        self._where = f"{u.scheme}://{u.hostname or ''}"  # never the path: it may hold a token

    def targets(self) -> Sequence[str]:
        return (self.url,)

    def where(self, index: int) -> str:
        return self._where

    @contextlib.contextmanager
    def _open(self) -> Iterator[httpx.Client]:
        headers = {"User-Agent": f"twilight-agent/{__version__}"}
        with httpx.Client(timeout=self.timeout, headers=headers, transport=self._transport,
                          follow_redirects=False, trust_env=False) as client:
            yield client

    def _send(self, session: Any, index: int, body: dict[str, Any]) -> str | None:
        try:
            response = _post(session, self.url, body)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if response.is_success:
            return None
        error = f"http {response.status_code}"
        if response.status_code < 500 and response.status_code not in (408, 429):
            raise Refused(error)  # the receiver refuses this message: retrying will not help
        return error
