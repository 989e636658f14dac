"""An httpx transport whose every socket operation honours an overall deadline.

httpx's timeouts are per socket operation: a server that sends one byte every few seconds
(headers or body) never trips them and can hold a request for ever. This transport asks
``remaining()`` before each connect, read and write and gives the socket at most that
long; when nothing is left it raises the matching timeout, which httpx turns into
``httpx.ReadTimeout`` / ``WriteTimeout`` / ``ConnectTimeout`` as usual.

``remaining()`` returns seconds left, or None for no deadline; the owner (a registry
operation, one health probe) sets and clears it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

Remaining = Callable[[], "float | None"]


def _bounded(timeout: float | None, remaining: Remaining,
             error: type[httpcore.TimeoutException]) -> float | None:
    left = remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise error("the overall deadline has passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, remaining: Remaining) -> None:
        self._inner, self._remaining = inner, remaining

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, self._remaining,
                                                     httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, self._remaining, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      _bounded(timeout, self._remaining,
                                               httpcore.ConnectTimeout))
        return _Stream(inner, self._remaining)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, remaining: Remaining) -> None:
        self._inner, self._remaining = inner, remaining

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _bounded(timeout, self._remaining, httpcore.ConnectTimeout),
            local_address, socket_options)
        return _Stream(stream, self._remaining)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _bounded(timeout, self._remaining, httpcore.ConnectTimeout), socket_options)
        return _Stream(stream, self._remaining)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def deadline_transport(remaining: Remaining) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` (no proxies from the environment) bounded by ``remaining``.

    httpx has no public hook for the network backend, so this wraps the one its pool
    holds; if a future httpx moves it, this fails loudly here rather than silently
    dropping the deadline (tests/unit/test_bounded_http.py drips bytes over a real socket).
    """
    transport = httpx.HTTPTransport(trust_env=False)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):
        raise TypeError("httpx.HTTPTransport has no httpcore network backend to bound")
    pool._network_backend = _Backend(backend, remaining)  # type: ignore[union-attr]
    return transport
