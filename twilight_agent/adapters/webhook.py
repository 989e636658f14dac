"""Notifications: a generic JSON POST to ``TWILIGHT_WEBHOOK_URL`` on deploy, rollback, halt.

``emit`` only puts the message on a bounded queue; one background thread delivers it with
short timeouts and up to three attempts (backoff 1 s, 2 s), so a webhook that is down or
slow never delays or fails a deploy. Sent for:

- ``DeployFinished`` with outcome ``deployed`` -> ``"event": "deployed"``,
  ``rolled_back`` -> ``"rollback"``, ``halted`` -> ``"halted"``, ``untrusted`` (the
  signature did not verify; nothing pulled, the reason says why) -> ``"untrusted"``;
- ``HaltedAlert`` -> ``"halted"`` (it comes first, so the operator hears at once).

One message per ``(deploy_id, event)``: the first of the events that name it wins. The body::

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
is never logged.
The reply is never read whole: its status is the answer, at most ``REPLY_CAP`` bytes of
its body are read, then the connection is closed. The client reads no proxy settings from
the environment (``trust_env=False``), like the registry's and the probe's.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import httpx

from twilight_agent import __version__
from twilight_agent.core.clock import utcnow
from twilight_agent.core.events import (
    HELD_DOWNGRADE,
    DeployFinished,
    DeployRef,
    Event,
    HaltedAlert,
    Held,
)
from twilight_agent.core.models import Release
from twilight_agent.core.scrub import scrub
from twilight_agent.logs import get_logger

log = get_logger("twilight.webhook")

ATTEMPTS = 3
BACKOFF_S = (1.0, 2.0)
TIMEOUT_S = 5.0
QUEUE_SIZE = 100
IDLE_S = 60.0  # the delivery thread ends after this long without a message
LOG_TAIL_CHARS = 4000
REPLY_CAP = 4 * 1024  # bytes of a reply read (and dropped): the status is the answer
_KINDS = {"deployed": "deployed", "rolled_back": "rollback", "halted": "halted",
          "untrusted": "untrusted"}
_STOP = object()


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


def message_kind(event: Event) -> str | None:
    """The ``event`` of the webhook body for an agent event, or None when none is sent."""
    if isinstance(event, DeployFinished):
        return _KINDS.get(event.outcome.value)
    if isinstance(event, HaltedAlert):
        return "halted"
    if isinstance(event, Held) and event.kind == HELD_DOWNGRADE:
        return "downgrade"
    return None


def _release(r: Release | None) -> dict[str, str | None]:
    return {"tag": r.tag or None, "digest": str(r.digest)} if r else {"tag": None,
                                                                      "digest": None}


def tail_lines(text: str, lines: int, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text`` (at most ``chars`` characters); 0: none."""
    if lines <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])[-chars:]


def build_body(kind: str, event: DeployFinished | HaltedAlert | Held, host: str,
               image: str, log_lines: int = 50) -> dict[str, Any]:
    """The JSON body, from a fixed set of keys only."""
    if isinstance(event, Held):  # nothing ran: the track moved back and was not followed
        ref = DeployRef(f"held-{event.build.digest.short}", event.running, event.build, "poll")
    else:
        ref = event.ref
    from_tag = ref.from_.tag if ref.from_ else "?"
    to_tag = ref.to.tag if ref.to else "?"
    reason = scrub(event.reason)
    tail = tail_lines(scrub(event.log_tail), log_lines) \
        if isinstance(event, DeployFinished) else ""
    if kind == "deployed":
        what = f"deployed {image} {from_tag or '?'} -> {to_tag or '?'}"
    elif kind == "rollback":
        what = f"rolled back {image} {to_tag or '?'} -> {from_tag or '?'}"
    elif kind == "downgrade":
        what = f"held {image} at {from_tag or '?'}: the track moved back to {to_tag or '?'}"
    else:
        what = f"HALTED {image} (operator needed)"
    outcome = event.outcome.value if isinstance(event, DeployFinished) else kind
    return {
        "event": kind, "host": host, "image": image, "deploy_id": ref.deploy_id,
        "timestamp": utcnow(), "outcome": outcome,
        "from": _release(ref.from_), "to": _release(ref.to),
        "reason": reason, "log_tail": tail,
        "text": f"{host}: {what}" + (f": {reason}" if reason else ""),
    }


class Webhook:
    """``EventSink`` POSTing deploy/rollback/halt messages from a background thread.

    The thread starts with a message and ends after ``idle`` seconds without one, so an
    instance dropped at a config reload leaves no thread behind; ``close()`` delivers what
    is queued (within its timeout) and stops it.
    """

    def __init__(self, url: str, image: str = "", *, host: str | None = None,
                 log_lines: int = 50,
                 attempts: int = ATTEMPTS, backoff: tuple[float, ...] = BACKOFF_S,
                 timeout: float = TIMEOUT_S, queue_size: int = QUEUE_SIZE, idle: float = IDLE_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self.image = image
        self.log_lines = log_lines
        self.host = host or socket.gethostname()
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self.idle = idle
        self._transport = transport
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._sent_keys: deque[tuple[str, str]] = deque(maxlen=256)
        self.delivered = 0  # messages a receiver accepted (2xx)
        self.dropped = 0  # messages given up on or not queued
        u = urlsplit(url)
        self._where = f"{u.scheme}://{u.hostname or ''}"  # never the path: it may hold a token

    # -- EventSink --------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        try:
            kind = message_kind(event)
            if kind is None or self._closed:
                return
            assert isinstance(event, (DeployFinished, HaltedAlert, Held))
            key = event.ref.deploy_id if not isinstance(event, Held) else str(event.build.digest)
            if not self._first(kind, key):
                return
            body = build_body(kind, event, self.host, self.image, self.log_lines)
            self._queue.put_nowait(body)
            self._ensure_thread()
        except queue.Full:
            self.dropped += 1
            log.warning("webhook_dropped", url=self._where, reason="queue full")
        except Exception as exc:  # a sink never raises into the agent
            self.dropped += 1
            log.warning("webhook_failed", url=self._where, error=f"{type(exc).__name__}: {exc}")

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            self._stopping.set()
            self._drain()
            self._queue.put_nowait(_STOP)
        thread.join(timeout)
        if thread.is_alive():  # cut the backoff short; at most one request still in flight
            self._stopping.set()
            thread.join(self.timeout + 1.0)

    def join(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message was delivered or given up on (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- internals --------------------------------------------------------------------
    def _first(self, kind: str, deploy_id: str) -> bool:
        if not deploy_id:
            return True
        key = (deploy_id, kind)
        with self._lock:
            if key in self._sent_keys:
                return False
            self._sent_keys.append(key)
        return True

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self.dropped += 1
            self._queue.task_done()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="twilight-webhook")
                self._thread.start()

    def _run(self) -> None:
        headers = {"User-Agent": f"twilight-agent/{__version__}"}
        with httpx.Client(timeout=self.timeout, headers=headers, transport=self._transport,
                          follow_redirects=False, trust_env=False) as client:
            while True:
                try:
                    body = self._queue.get(timeout=self.idle)
                except queue.Empty:
                    with self._lock:  # emit() puts first, then checks for a thread here
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                try:
                    if body is _STOP:
                        return
                    self._deliver(client, body)
                finally:
                    self._queue.task_done()

    def _deliver(self, client: httpx.Client, body: dict[str, Any]) -> None:
        error = ""
        for attempt in range(1, self.attempts + 1):
            if self._stopping.is_set():
                error = "shutting down"
                break
            try:
                response = _post(client, self.url, body)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            else:
                if response.is_success:
                    self.delivered += 1
                    log.info("webhook_sent", url=self._where, message=body["event"],
                             deploy_id=body["deploy_id"], attempt=attempt)
                    return
                error = f"http {response.status_code}"
                if response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the receiver refuses this message: retrying will not help
            if attempt < self.attempts:
                delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                if self._stopping.wait(delay):
                    error = "shutting down"
                    break
        self.dropped += 1
        log.warning("webhook_failed", url=self._where, message=body["event"],
                    deploy_id=body["deploy_id"], error=error, attempts=attempt)
