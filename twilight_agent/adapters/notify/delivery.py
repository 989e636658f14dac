"""Delivery off the deploy path, shared by the webhook and the Apprise targets.

``QueuedSink.emit`` turns an agent event into one message (``message.py``), puts one item
per target on a bounded queue and returns; one background thread delivers them with up to
``attempts`` tries per target (backoff between them), so a receiver that is down or slow
never delays or fails a deploy. The backoff and ``join`` wait on the injected ``Clock``
(the backoff in steps of ``delivery_stop_tick_s``, so that ``close()`` cuts it short). One
message per ``(deploy_id, event)``: the first of the events that name it wins. A subclass
says how to reach one target (``_open``, ``_send``) and how to name it in a log line
without its secret (``where``).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from twilight_agent.adapters.notify.message import build_body, message_kind
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.events import DeployFinished, Event, HaltedAlert, Held
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.logs import get_logger

QUEUE_SIZE = 100
_STOP = object()


class Refused(Exception):
    """The receiver refused this message: trying again will not help."""


class QueuedSink:
    """``EventSink`` delivering each message to every target from a background thread.

    The thread starts with a message and ends after ``idle`` seconds without one, so an
    instance dropped at a config reload leaves no thread behind; ``close()`` delivers what
    is queued (within its timeout) and stops it.
    """

    kind = "sink"  # log events are ``<kind>_sent``, ``<kind>_failed``, ``<kind>_dropped``

    def __init__(self, image: str = "", *, host: str | None = None, log_lines: int = 50,
                 attempts: int = DEFAULT.webhook_attempts,
                 backoff: tuple[float, ...] = DEFAULT.webhook_backoff_s,
                 timeout: float = DEFAULT.webhook_timeout_s, queue_size: int = QUEUE_SIZE,
                 idle: float = DEFAULT.delivery_idle_s, clock: Clock = SYSTEM) -> None:
        self.image = image
        self.clock = clock  # the backoff between attempts, ``join``'s deadline
        self.log_lines = log_lines
        self.host = host or socket.gethostname()
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self.idle = idle
        self._log = get_logger(f"twilight.{self.kind}")
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._sent_keys: deque[tuple[str, str]] = deque(maxlen=256)
        self.delivered = 0  # messages a receiver accepted
        self.dropped = 0  # messages given up on or not queued

    # -- what a subclass provides -----------------------------------------------------
    def targets(self) -> Sequence[str]:
        """Where messages go (secrets included: never logged, see ``where``)."""
        raise NotImplementedError

    def where(self, index: int) -> str:
        """Target ``index`` as a log line may show it: no token, no password."""
        raise NotImplementedError

    @contextlib.contextmanager
    def _open(self) -> Iterator[Any]:
        """A session the delivery thread keeps while it runs (a connection pool)."""
        yield None

    def _send(self, session: Any, index: int, body: dict[str, Any]) -> str | None:
        """Deliver once: None when accepted, else why not (raise ``Refused`` to give up)."""
        raise NotImplementedError

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
            self.enqueue(build_body(kind, event, self.host, self.image, self.log_lines))
        except Exception as exc:  # a sink never raises into the agent
            self.dropped += 1
            self._log.warning(f"{self.kind}_failed", error=f"{type(exc).__name__}: {exc}")

    def enqueue(self, body: dict[str, Any]) -> None:
        """Queue ``body`` for every target; a full queue drops it (said, never blocks)."""
        for index in range(len(self.targets())):
            try:
                self._queue.put_nowait((index, body))
            except queue.Full:
                self.dropped += 1
                self._log.warning(f"{self.kind}_dropped", url=self.where(index),
                                  reason="queue full")
        self._ensure_thread()

    def send_now(self, body: dict[str, Any]) -> list[tuple[str, str | None]]:
        """Deliver ``body`` to each target once, here and now (``notify-test``):
        ``[(where, None or the error)]`` in target order."""
        out: list[tuple[str, str | None]] = []
        with self._open() as session:
            for index in range(len(self.targets())):
                try:
                    error = self._send(session, index, body)
                except Refused as exc:
                    error = str(exc)
                except Exception as exc:  # one broken target does not hide the others
                    error = type(exc).__name__
                out.append((self.where(index), error))
        return out

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
        deadline = self.clock.now() + timeout
        while self._queue.unfinished_tasks:
            if self.clock.now() > deadline:
                return False
            self.clock.sleep(0.01)
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

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` on the clock, in steps short enough for ``close()`` to cut the
        wait short; True when it did (stopping)."""
        end = self.clock.now() + seconds
        while not self._stopping.is_set():
            left = end - self.clock.now()
            if left <= 0:
                return False
            self.clock.sleep(min(left, DEFAULT.delivery_stop_tick_s))
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
                                                name=f"twilight-{self.kind}")
                self._thread.start()

    def _run(self) -> None:
        with self._open() as session:
            while True:
                try:
                    item = self._queue.get(timeout=self.idle)
                except queue.Empty:
                    with self._lock:  # emit() puts first, then checks for a thread here
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                try:
                    if item is _STOP:
                        return
                    self._deliver(session, *item)
                finally:
                    self._queue.task_done()

    def _deliver(self, session: Any, index: int, body: dict[str, Any]) -> None:
        error: str | None = ""
        for attempt in range(1, self.attempts + 1):
            if self._stopping.is_set():
                error = "shutting down"
                break
            try:
                error = self._send(session, index, body)
            except Refused as exc:
                error = str(exc)
                break
            except Exception as exc:  # a broken target never ends the delivery thread
                error = type(exc).__name__
            if error is None:
                self.delivered += 1
                self._log.info(f"{self.kind}_sent", url=self.where(index),
                               message=body["event"], deploy_id=body["deploy_id"],
                               attempt=attempt)
                return
            if attempt < self.attempts:
                delay = self.backoff[min(attempt - 1, len(self.backoff) - 1)]
                if self._pause(delay):
                    error = "shutting down"
                    break
        self.dropped += 1
        self._log.warning(f"{self.kind}_failed", url=self.where(index), message=body["event"],
                          deploy_id=body["deploy_id"], error=error, attempts=attempt)
