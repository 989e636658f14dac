"""A small HTTP proxy in front of the bed's registry that misbehaves on demand.

It listens on ``127.0.0.1:<free port>`` and forwards to the registry (``127.0.0.1:5000``);
paths under ``/token`` go to the token server (``127.0.0.1:5001``), and the registry's
``WWW-Authenticate`` realm is rewritten to point at the proxy, so the token endpoint can
fail too. Point the agent at it with ``TWILIGHT_REGISTRY_URL``.

Faults (``proxy.set(kind, ...)``), each limited to paths containing ``only`` and to the
first ``count`` matching requests (then it passes again):

- ``pass``: forward as is.
- ``down``: accept and close the connection without a byte (``stop()`` refuses outright).
- ``slow``: wait ``delay`` seconds before forwarding (beyond the client's timeout).
- ``status``: answer ``status`` (429, 500, 503...) with ``Retry-After: retry_after`` and a
  GHCR-like JSON error body, without asking the registry.
- ``truncate``: forward, then send the first half of the body (with a matching length).
- ``cut``: forward, then announce the full length and close after half the body.
- ``corrupt``: forward, then replace the JSON body's punctuation with garbage.
- ``wrong_digest``: forward, with ``Docker-Content-Digest`` naming another sha256.
- ``wrong_body``: forward, with a body that parses but hashes to something else.
- ``throttle``: forward, then send the body at ``rate`` bytes per second (a slow link).
- ``stall``: forward, then send the first ``after`` bytes of the body and nothing more for
  ``delay`` seconds (a link that went silent), then close; a body no longer than ``after``
  passes whole.

dockerd treats a registry on 127.0.0.0/8 as insecure (plain HTTP), so an image named
``127.0.0.1:<proxy port>/<repo>`` is pulled by the engine itself through the proxy.

``requests`` records ``(monotonic time, method, path, status sent or kind)`` per request.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from testbed.services import REGISTRY_HOST, TOKEN_PORT

KINDS = ("pass", "down", "slow", "status", "truncate", "cut", "corrupt", "wrong_digest",
         "wrong_body", "throttle", "stall")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
        "te", "trailer", "host", "content-length"}


@dataclass
class Fault:
    kind: str = "pass"
    only: str = ""  # apply to paths containing this ("" = every path)
    count: int | None = None  # apply to this many matching requests, then pass
    delay: float = 0.0
    status: int = 503
    retry_after: str | None = None
    rate: float = 0.0  # throttle: bytes per second
    after: int = 0  # stall: bytes sent before the silence

    def matches(self, path: str) -> bool:
        return self.kind != "pass" and self.only in path and (self.count is None
                                                                 or self.count > 0)


@dataclass
class FaultProxy:
    """``with FaultProxy() as proxy: proxy.set("status", status=429, retry_after="1")``."""

    upstream: str = REGISTRY_HOST
    token_upstream: str = f"127.0.0.1:{TOKEN_PORT}"
    fault: Fault = field(default_factory=Fault)
    requests: list[tuple[float, str, str, str]] = field(default_factory=list)
    injected: int = 0  # requests a fault was applied to
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ control
    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, kind: str, **opts: object) -> FaultProxy:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(KINDS)}")
        with self._lock:
            self.fault = Fault(kind=kind, **opts)  # type: ignore[arg-type]
        return self

    def clear(self) -> FaultProxy:
        return self.set("pass")

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True, name=f"faultproxy-{self.port}").start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused from now on."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def hits(self, part: str = "") -> list[tuple[float, str, str, str]]:
        with self._lock:
            return [r for r in self.requests if part in r[2]]

    # ------------------------------------------------------------------ internals
    def _take(self, path: str) -> Fault:
        """The fault that applies to this request (and use one of its count)."""
        with self._lock:
            f = self.fault
            if not f.matches(path):
                return Fault()
            if f.count is not None:
                f.count -= 1
            self.injected += 1
            return Fault(f.kind, f.only, None, f.delay, f.status, f.retry_after, f.rate,
                         f.after)

    def _log(self, method: str, path: str, what: str) -> None:
        with self._lock:
            self.requests.append((time.monotonic(), method, path, what))


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        proxy = self.owner
        fault = proxy._take(self.path)
        kind = fault.kind
        if kind == "down":
            proxy._log(self.command, self.path, "down")
            self.close_connection = True
            self.connection.close()
            return
        if kind == "slow" and proxy._stopping.wait(fault.delay):
            return
        if kind == "status":
            body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS" if fault.status == 429
                                           else "UNAVAILABLE",
                                           "message": "injected by the fault proxy"}]}).encode()
            headers = {"Content-Type": "application/json"}
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            self._send(fault.status, headers, body, what=str(fault.status))
            return
        try:
            status, headers, body = self._forward()
        except OSError as exc:
            proxy._log(self.command, self.path, f"upstream error {exc}")
            self.send_error(502)
            return
        if kind == "wrong_digest" and "docker-content-digest" in headers:
            headers["docker-content-digest"] = (
                "sha256:" + hashlib.sha256(headers["docker-content-digest"].encode()).hexdigest())
        if kind == "wrong_body" and body.lstrip().startswith(b"{"):
            body = body + b"\n"
        if kind == "corrupt" and body:
            body = body.replace(b"{", b"<").replace(b"\"", b"'").replace(b":", b"=")
        if kind == "truncate" and body:
            body = body[: len(body) // 2]
        if kind in ("throttle", "stall") and len(body) > fault.after:
            self._trickle(status, headers, body, fault)
            return
        if kind == "cut" and body:
            self._send(status, headers, body[: len(body) // 2], length=len(body), what="cut")
            self.close_connection = True
            return
        self._send(status, headers, body, what=kind if kind != "pass" else str(status))

    def _forward(self) -> tuple[int, dict[str, str], bytes]:
        to_token = self.path.startswith("/token")
        host = self.owner.token_upstream if to_token else self.owner.upstream
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else None
        headers: dict[str, str] = {}
        for k, v in self.headers.items():  # dockerd sends one Accept header per media type
            if k.lower() not in _HOP:
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
        conn = http.client.HTTPConnection(host, timeout=60)
        try:
            conn.request(self.command, self.path, body=payload, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            out = {k.lower(): v for k, v in resp.getheaders() if k.lower() not in _HOP}
        finally:
            conn.close()
        if "www-authenticate" in out:
            out["www-authenticate"] = self._own_realm(out["www-authenticate"])
        if "location" in out and out["location"].startswith(f"http://{self.owner.upstream}"):
            out["location"] = out["location"].replace(f"http://{self.owner.upstream}",
                                                      self.owner.url, 1)
        return resp.status, out, body

    def _trickle(self, status: int, headers: dict[str, str], body: bytes,
                 fault: Fault) -> None:
        """``throttle``: the body at ``fault.rate`` bytes/s; ``stall``: ``fault.after``
        bytes, then silence for ``fault.delay`` seconds, then close."""
        self._send(status, headers, b"", length=len(body), what=fault.kind)
        stopping = self.owner._stopping
        try:
            if fault.kind == "stall":
                self.wfile.write(body[:fault.after])
                self.wfile.flush()
                stopping.wait(fault.delay)
                return
            chunk = max(int(fault.rate / 10), 1)
            for at in range(0, len(body), chunk):
                if stopping.wait(0.1):
                    return
                self.wfile.write(body[at:at + chunk])
                self.wfile.flush()
        except OSError:
            pass  # the client went away (the agent was restarted)
        finally:
            self.close_connection = True

    def _own_realm(self, challenge: str) -> str:
        token = f"http://{self.owner.token_upstream}"
        if token in challenge:
            return challenge.replace(token, self.owner.url)
        return challenge

    def _send(self, status: int, headers: dict[str, str], body: bytes, *,
              length: int | None = None, what: str) -> None:
        self.owner._log(self.command, self.path, what)
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass  # the client gave up (a timeout): nothing to answer
