"""What the health gate and the watch share: the HTTP probe (one overall deadline, a capped
body) and the container states that fail at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from twilight_agent.adapters.registry.deadline import deadline_transport
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.ports import ContainerState

MAX_PROBE_BODY = 64 * 1024  # the status decides; the body is read only to reuse the socket


class StateSource(Protocol):
    """The part of the engine (``DockerRuntime``, or a target) the gate needs."""

    def state(self, container_id: str) -> ContainerState: ...


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    text: str  # "http 200", "http 500", "connection refused", "read timeout", ...
    status: int = 0  # the HTTP status; 0 when there was no answer

    @property
    def server_error(self) -> bool:
        """The app answered, with a 5xx: it is up and broken, not slow."""
        return 500 <= self.status < 600


Probe = Callable[[str, float], ProbeResult]  # (url, timeout) -> result; never raises


class HttpProbe:
    """GET ``url``; 2xx is ok. One httpx client, closed with ``close()``.

    ``timeout`` bounds the whole probe (connect, headers, body), not each socket read;
    at most ``MAX_PROBE_BODY`` bytes of the body are read. ``transport`` and ``clock`` are
    for tests.
    """

    def __init__(self, transport: httpx.BaseTransport | None = None,
                 clock: Clock = SYSTEM) -> None:
        self._clock = clock.now
        self._deadline = threading.local()
        self._client = httpx.Client(follow_redirects=False, trust_env=False,
                                    transport=transport or deadline_transport(self._remaining))

    def _remaining(self) -> float | None:
        deadline = getattr(self._deadline, "at", None)
        return None if deadline is None else deadline - self._clock()

    def __call__(self, url: str, timeout: float) -> ProbeResult:
        self._deadline.at = self._clock() + timeout
        try:
            return self._get(url, timeout)
        finally:
            self._deadline.at = None

    def _get(self, url: str, timeout: float) -> ProbeResult:
        try:
            with self._client.stream("GET", url, timeout=timeout) as r:
                if not self._drain(r):
                    return ProbeResult(False, "read timeout")
        except httpx.ConnectError as exc:
            refused = "refused" in str(exc).lower()
            return ProbeResult(False, "connection refused" if refused else f"connect error: {exc}")
        except httpx.ConnectTimeout:
            return ProbeResult(False, "connect timeout")
        except httpx.ReadTimeout:
            return ProbeResult(False, "read timeout")
        except httpx.ReadError as exc:
            reset = "reset" in str(exc).lower()
            return ProbeResult(False, "connection reset" if reset else f"read error: {exc}")
        except httpx.RemoteProtocolError:
            return ProbeResult(False, "connection closed without a response")
        except httpx.HTTPError as exc:
            return ProbeResult(False, f"{type(exc).__name__}: {exc}")
        return ProbeResult(200 <= r.status_code < 300, f"http {r.status_code}", r.status_code)

    def _drain(self, response: httpx.Response) -> bool:
        """Read up to ``MAX_PROBE_BODY`` bytes; False if the deadline passed meanwhile."""
        size = 0
        if response.is_stream_consumed:  # already in memory (a test transport)
            return True
        for chunk in response.iter_raw():
            size += len(chunk)
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return False
            if size >= MAX_PROBE_BODY:
                break
        return True

    def close(self) -> None:
        self._client.close()


def state_failure(st: ContainerState, baseline_restarts: int) -> str | None:
    """Why this state fails the gate at once, or None."""
    if st.status == "missing":
        return "container disappeared"
    if st.oom_killed:
        return "oom killed"
    if st.status in ("exited", "dead"):
        return f"exited with code {st.exit_code}" if st.exit_code is not None else st.status
    if st.status == "restarting" or st.restart_count > baseline_restarts:
        return f"restarting (restart count {st.restart_count})"
    if st.health == "unhealthy":
        return "docker healthcheck unhealthy"
    return None
