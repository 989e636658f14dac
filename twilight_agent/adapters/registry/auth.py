"""An authenticated, retrying HTTP session to one repository of one registry (httpx).

* Auth: a 401 with ``WWW-Authenticate: Bearer realm,service[,scope]`` sends us to the realm
  for a token (anonymous, or Basic ``user:PAT``); the answer is ``{"token"}`` or
  ``{"access_token"}``. Tokens are cached per scope; a 401 with a cached token fetches once
  more. The scope is built from the repository, never copied from a challenge (ghcr.io's
  ``/v2/`` names a placeholder repository there).
* Credentials go only where they belong. The registry token (Bearer) goes only to the
  registry's own origin: a blob redirect to another host is requested without it. The
  Basic user:PAT goes to a token realm only on the registry's own hostname (any port) or
  on one listed in ``TWILIGHT_REGISTRY_AUTH_HOSTS``; a realm elsewhere is refused with
  credentials (anonymous pulls may still use it, nothing secret is sent). A Basic
  challenge (the PAT on every request) is refused from ghcr.io, which never asks for one.
  A realm on a link-local, metadata or (for a registry not on loopback) loopback address
  is refused outright.
* Bounds: every answer is read as a stream with a size cap, and every public operation
  of ``HttpRegistry`` runs under one overall deadline (``operation()``) that caps each
  socket read, each backoff sleep and the whole: a server dripping bytes cannot hold a
  check or a deploy.
* Retries: 429, 5xx, timeouts and connection errors back off exponentially with jitter
  (or as long as the registry asks, up to the cap), a bounded number of times, then
  ``RegistryUnavailable``. No httpx exception leaves this module.
* ``requests`` counts every HTTP request sent (token requests included).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from twilight_agent import __version__
from twilight_agent.adapters.registry.credentials import Credentials
from twilight_agent.adapters.registry.deadline import deadline_transport
from twilight_agent.core.clock import SYSTEM, Clock, utc
from twilight_agent.core.destinations import (
    credential_host_allowed,
    destination_refusal,
    is_loopback_host,
    normal_host,
    printable,
)
from twilight_agent.core.registry_rules import (
    GHCR_HOSTS,
    Challenge,
    backoff_delay,
    finite_number,
    is_retryable_status,
    jwt_expiry,
    media_type,
    parse_challenge,
    retry_hint,
)
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import RegistryAuthError, RegistryProtocolError, RegistryUnavailable
from twilight_agent.logs import get_logger

log = get_logger("twilight.registry")

MAX_BODY = 8 * 1024 * 1024  # manifests and tag pages are far smaller; garbage is not


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, read in full (bounded)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def content_type(self) -> str:
        return media_type(self.headers.get("content-type"))

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RegistryProtocolError(f"{what}: the registry answered malformed JSON "
                                        f"({exc.__class__.__name__})") from exc


class _Transient(Exception):
    """A timeout or connection error worth retrying."""


@dataclass
class _Token:
    value: str
    expires_at: float | None


def _basic(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password.get_secret_value()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    return u.scheme, u.host, u.port


class RegistrySession:
    """HTTP to one repository: auth, retries, a request counter. Cheap to construct."""

    def __init__(self, base_url: str, scope: str, credentials: Credentials | None = None, *,
                 timeout: float = 10.0, attempts: int = 4, backoff_base: float = 0.5,
                 backoff_cap: float = 30.0, rand: Callable[[], float] = random.random,
                 clock: Clock = SYSTEM,
                 transport: httpx.BaseTransport | None = None,
                 operation_timeout: float = DEFAULT.registry_operation_s) -> None:
        self.base = base_url.rstrip("/")
        self.scope = scope
        self.requests = 0
        self._creds = credentials
        self._host = httpx.URL(self.base).host
        self._auth_hosts = frozenset(normal_host(h) for h in credentials.auth_hosts) \
            if credentials else frozenset()
        self._op_timeout = operation_timeout
        self._deadline: float | None = None
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._base_delay, self._cap = backoff_base, backoff_cap
        self._rand, self._clock = rand, clock  # deadlines, token expiry, backoff sleeps
        self._tokens: dict[str, _Token] = {}
        self._basic = False
        self._challenge: Challenge | None = None
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport or deadline_transport(self._remaining),
            follow_redirects=False, trust_env=False,
            headers={"User-Agent": f"twilight-agent/{__version__}"},
            event_hooks={"request": [self._count]})

    def _count(self, _request: httpx.Request) -> None:
        self.requests += 1

    def close(self) -> None:
        self._client.close()

    # ----------------------------------------------------------------------- deadline
    @contextmanager
    def operation(self) -> Iterator[None]:
        """Run the block under one overall deadline (``operation_timeout``); nested calls
        keep the outer deadline. Past it: ``RegistryUnavailable``."""
        if self._deadline is not None:
            yield
            return
        self._deadline = self._clock.now() + self._op_timeout
        try:
            yield
        finally:
            self._deadline = None

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock.now()

    def _check_deadline(self, what: str) -> None:
        left = self._remaining()
        if left is not None and left <= 0:
            raise RegistryUnavailable(f"{what}: the registry did not finish within "
                                      f"{self._op_timeout:g}s")

    # ----------------------------------------------------------------------- public
    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                authed: bool = True, what: str = "", content: bytes | None = None) -> Reply:
        """Send with auth (registry origin only) and retries; any status comes back except
        401/403 (``RegistryAuthError``) and exhausted 429/5xx (``RegistryUnavailable``)."""
        what = printable(what or f"{method} {httpx.URL(url).path}", 120)
        authed = authed and _origin(url) == _origin(self.base)
        with self.operation():
            reply = self._retrying(
                lambda: self._exchange(method, url, dict(headers or {}), authed, content),
                what)
        if reply.status in (401, 403):
            raise RegistryAuthError(f"{what}: the registry refused access to {self.scope} "
                                    f"(HTTP {reply.status}){self._who()}")
        return reply

    # ----------------------------------------------------------------------- auth
    def _who(self) -> str:
        if self._creds is None:
            return " as an anonymous user; set TWILIGHT_REGISTRY_USERNAME and a token"
        return f" with the credentials of {self._creds.username} ({self._creds.source})"

    def _authorization(self) -> str | None:
        if self._basic and self._creds is not None:
            return _basic(self._creds)
        token = self._tokens.get(self.scope)
        if token is None:
            return None
        if token.expires_at is not None and self._clock.now() >= token.expires_at:
            del self._tokens[self.scope]
            return None
        return f"Bearer {token.value}"

    def _exchange(self, method: str, url: str, headers: dict[str, str], authed: bool,
                  content: bytes | None = None) -> Reply:
        if not authed:
            return self._send(method, url, headers, content)
        auth = self._authorization()
        if auth is None and self._challenge is not None:  # expired: renew before asking
            self._authenticate(self._challenge)
            auth = self._authorization()
        reply = self._send(method, url, {**headers, **({"Authorization": auth} if auth else {})},
                           content)
        if reply.status != 401:
            return reply
        self._tokens.pop(self.scope, None)
        self._challenge = parse_challenge(reply.headers.get("www-authenticate", ""))
        self._authenticate(self._challenge)
        auth = self._authorization()
        return self._send(method, url, {**headers, **({"Authorization": auth} if auth else {})},
                          content)

    def _authenticate(self, challenge: Challenge) -> None:
        if challenge.scheme == "basic" and self._creds is not None:
            self._allow_basic()
            self._basic = True
            return
        if challenge.scheme != "bearer" or not challenge.realm:
            raise RegistryAuthError(f"the registry asks for "
                                    f"{printable(challenge.scheme or 'unknown', 40)} "
                                    f"auth without a token realm{self._who()}")
        self._tokens[self.scope] = self._fetch_token(challenge)

    def _allow_basic(self) -> None:
        """Basic auth sends the PAT with every request: only to the registry's own origin
        (``request`` sees to that), never in clear text, never for ghcr.io (which only
        issues Bearer tokens: a Basic challenge there is not ghcr.io talking)."""
        if normal_host(self._host) in GHCR_HOSTS:
            raise RegistryProtocolError(f"{self._host} asked for Basic auth, which it never "
                                        "does; refusing to send the token with every request")
        if httpx.URL(self.base).scheme != "https" and not is_loopback_host(self._host):
            raise RegistryProtocolError("the registry asks for Basic auth over plain http; "
                                        "refusing to send the token in clear text")

    def _token_url(self, challenge: Challenge) -> httpx.URL:
        try:
            realm = httpx.URL(challenge.realm)
        except httpx.InvalidURL as exc:
            raise RegistryProtocolError("the registry named an invalid token realm") from exc
        shown = printable(challenge.realm, 80)
        if realm.scheme not in ("http", "https") or not realm.host:
            raise RegistryProtocolError(f"token realm {shown!r} is not http(s)")
        if httpx.URL(self.base).scheme == "https" and realm.scheme != "https":
            raise RegistryProtocolError("the registry is https but its token realm is http; "
                                        "refusing to send credentials in clear text")
        refusal = destination_refusal(realm.scheme, realm.host,
                                      from_scheme=httpx.URL(self.base).scheme,
                                      registry_host=self._host)
        if refusal:
            raise RegistryProtocolError(f"token realm {shown!r} refused: {refusal}")
        if self._creds is not None and not credential_host_allowed(
                realm.host, self._host, self._auth_hosts):
            raise RegistryAuthError(
                f"the registry names the token realm host {printable(realm.host, 80)}, not "
                f"its own host {self._host}; the credentials of {self._creds.username} are "
                "not sent there. If that host is the registry's real token service, add it "
                "to TWILIGHT_REGISTRY_AUTH_HOSTS")
        params = {"scope": self.scope, **({"service": challenge.service}
                                          if challenge.service else {})}
        return realm.copy_merge_params(params)

    def _fetch_token(self, challenge: Challenge) -> _Token:
        url = self._token_url(challenge)
        headers: dict[str, str] = {}
        if self._creds is not None:
            headers["Authorization"] = _basic(self._creds)
        what = f"token endpoint {printable(url.host, 80)}"
        reply = self._retrying(lambda: self._send("GET", str(url), headers), what)
        if reply.status in (401, 403):
            raise RegistryAuthError(f"{what} refused a pull token for {self.scope} "
                                    f"(HTTP {reply.status}){self._who()}")
        if reply.status != 200:
            raise RegistryProtocolError(f"{what} answered HTTP {reply.status}")
        return self._parse_token(reply, what)

    def _parse_token(self, reply: Reply, what: str) -> _Token:
        doc = reply.json(what)
        value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise RegistryProtocolError(f"{what} answered no token")
        if not value.strip().isascii() or not value.strip().isprintable():  # a header value
            raise RegistryProtocolError(f"{what} answered a token that is not printable ASCII")
        expires = finite_number(doc.get("expires_in"))
        if expires is None or expires <= 0:
            exp = jwt_expiry(value)
            expires = exp - self._clock.wall() if exp is not None else None
        expires_at = None if expires is None else self._clock.now() + max(1.0, expires - 10.0)
        log.debug("registry_token", scope=self.scope, anonymous=self._creds is None)
        return _Token(value.strip(), expires_at)

    # ----------------------------------------------------------------------- transport
    def _send(self, method: str, url: str, headers: Mapping[str, str],
              content: bytes | None = None) -> Reply:
        self._check_deadline(f"{method} {printable(httpx.URL(url).path, 80)}")
        try:
            request = self._client.build_request(method, url, headers=headers, content=content,
                                                 timeout=self._request_timeout())
            response = self._client.send(request, stream=True)
            try:
                body = self._read(response)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise _Transient(f"timed out ({exc.__class__.__name__})") from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Transient(f"connection failed ({exc.__class__.__name__})") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RegistryProtocolError(f"{method} {printable(url, 120)}: "
                                        f"{exc.__class__.__name__}: {printable(exc, 120)}"
                                        ) from exc
        return Reply(response.status_code, response.headers, body, str(response.url))

    def _request_timeout(self) -> httpx.Timeout:
        left = self._remaining()
        per_op = self._timeout if left is None else max(0.001, min(self._timeout, left))
        return httpx.Timeout(per_op, connect=min(per_op, 5.0))

    def _read(self, response: httpx.Response) -> bytes:
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            self._check_deadline(f"{response.request.method} {response.request.url.path}")
            size += len(chunk)
            if size > MAX_BODY:
                raise RegistryProtocolError(f"{response.request.method} "
                                            f"{response.request.url.path}: answer is larger "
                                            f"than {MAX_BODY // (1024 * 1024)} MiB")
            chunks.append(chunk)
        return b"".join(chunks)

    def _retrying(self, attempt_fn: Callable[[], Reply], what: str) -> Reply:
        reason = "no attempt"
        cause: Exception | None = None
        for attempt in range(self._attempts):
            try:
                reply = attempt_fn()
            except _Transient as exc:
                reason, hint, cause = str(exc), None, exc
            else:
                if not is_retryable_status(reply.status):
                    return reply
                reason = f"HTTP {reply.status}"
                hint = retry_hint(reply.headers.get("retry-after"), reply.text,
                                  utc(self._clock))
            if attempt + 1 >= self._attempts:
                break
            delay = hint if hint is not None else backoff_delay(
                attempt, self._base_delay, self._cap, self._rand())
            if delay > self._cap:
                raise RegistryUnavailable(f"{what}: {reason}; the registry asks to wait "
                                          f"{delay:.0f}s (more than {self._cap:.0f}s)")
            left = self._remaining()
            if left is not None and delay >= left:
                raise RegistryUnavailable(f"{what}: {reason}; no time left to retry within "
                                          f"{self._op_timeout:g}s") from cause
            # Debug, not info: the daemon polls a down registry every interval, and its
            # log carries one registry_error line per change of state, not per attempt.
            log.debug("registry_retry", what=what, reason=reason, attempt=attempt + 1,
                     delay_s=round(delay, 3))
            self._clock.sleep(delay)
        raise RegistryUnavailable(f"{what}: {reason} after {self._attempts} attempts") from cause
