"""Bounded reads and typed errors (ISSUE 14): caps, an overall deadline per registry
operation, fullmatch on tags, digests and revisions, control characters out of messages,
RFC 3339 only for ``created``, and a property test that any answer ends in a typed error.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fakes import StepClock
from tests.unit.test_registry import REPO, FakeGhcr, sha
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.core import destinations
from twilight_agent.core import registry_rules as rr
from twilight_agent.errors import (
    InvalidTag,
    RegistryError,
    RegistryProtocolError,
    RegistryUnavailable,
)

BASE = "https://ghcr.io"


@pytest.fixture
def fake() -> FakeGhcr:
    return FakeGhcr()


@pytest.fixture
def clock() -> StepClock:
    return StepClock()  # the fake registry moves it forward too


@pytest.fixture
def make(fake: FakeGhcr, clock: StepClock) -> Iterator[Callable[..., HttpRegistry]]:
    clients: list[HttpRegistry] = []

    def build(**kw: Any) -> HttpRegistry:
        kw.setdefault("rand", lambda: 0.5)
        client = HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake), clock=clock,
                              **kw)
        clients.append(client)
        return client

    yield build
    for c in clients:
        c.close()


# ------------------------------------------------------------------------ caps
def test_total_tags_across_pages_are_capped(fake, make) -> None:
    fake.tags = [f"t{i}" for i in range(5000)]
    fake.page_size = 100  # 50 pages, each under the page cap
    with pytest.raises(RegistryProtocolError, match="more than 1000 tags"):
        list(make(page_size=100, max_pages=100, max_tags=1000).tags())


def test_one_huge_page_is_capped_too(fake, make) -> None:
    fake.tags = [f"t{i}" for i in range(3000)]
    fake.page_size = 3000  # the registry ignores n=100 and sends everything at once
    with pytest.raises(RegistryProtocolError, match="more than 1000 tags"):
        list(make(page_size=100, max_tags=1000).tags())


class Drip(httpx.SyncByteStream):
    """A body that sends one byte per chunk and lets ``step`` seconds pass for each."""

    def __init__(self, clock: StepClock, body: bytes, step: float) -> None:
        self.clock, self.body, self.step = clock, body, step
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self.body)):
            self.clock.t += self.step
            self.sent += 1
            yield self.body[i:i + 1]


def test_a_slow_drip_manifest_cannot_hold_an_operation(fake, make, clock) -> None:
    """1 byte every 5 s never trips a 10 s read timeout; the overall deadline stops it."""
    fake.image("main")
    body, mt = fake.manifests["main"]
    drips: list[Drip] = []

    def hook(request: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in request.url.path and request.headers.get("authorization"):
            drips.append(Drip(clock, body, 5.0))
            return httpx.Response(200, headers={"content-type": mt}, stream=drips[-1])
        return None

    fake.hook = hook
    start = clock.t
    with pytest.raises(RegistryUnavailable, match="did not finish within 60s") as info:
        make(operation_timeout=60).resolve_track("main")
    assert info.value.exit_code == 5
    assert clock.t - start <= 65 and drips[0].sent < len(body)


def test_retries_stop_at_the_operation_deadline(fake, make, clock) -> None:
    fake.image("v1.0.0")
    starts: list[float] = []

    def hook(request: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in request.url.path:
            starts.append(clock.t)
            clock.t += 20  # each attempt takes 20 s to fail (the mock cannot be cut short)
            return httpx.Response(503)
        return None

    fake.hook = hook
    start = clock.t
    with pytest.raises(RegistryUnavailable, match=r"no time left|did not finish"):
        make(attempts=100, backoff_cap=30, operation_timeout=90).track_digest("v1.0.0")
    assert len(starts) >= 3 and all(s < start + 90 for s in starts)
    assert clock.t - start <= 90 + 20  # no sleep and no request begins past the deadline


def test_each_public_call_gets_a_fresh_deadline(fake, make, clock) -> None:
    digest, *_ = fake.image("v1.0.0")
    reg = make(operation_timeout=60)
    for _ in range(5):
        clock.t += 50  # time passes between polls: never counted against the next one
        assert reg.track_digest("v1.0.0") == digest


# ------------------------------------------------------------------------ fullmatch
@pytest.mark.parametrize("tag", ["sha-abcdef0\n", "main\n", "v1.2.3\n"])
def test_tag_with_a_trailing_newline_is_refused_before_anything_is_sent(fake, make,
                                                                        tag) -> None:
    reg = make()
    with pytest.raises(InvalidTag):
        reg.resolve_tag(tag)
    assert fake.requests == []


def test_listed_tag_with_a_trailing_newline_is_never_chosen(fake, make) -> None:
    _, _, body, mt = fake.image("main", labels=False)
    fake.put("sha-abcdef0\n", body, mt)  # only this tag points at main
    with pytest.raises(RegistryProtocolError, match="no sha-\\* tag points at main"):
        make().resolve_track("main")
    assert not any("%0A" in str(r.url) or "\n" in r.url.path for r in fake.requests)


def test_revision_with_a_trailing_newline_counts_as_no_label(fake, make) -> None:
    revision = secrets.token_hex(20)
    digest, _, body, mt = fake.image("main", revision=revision + "\n")
    fake.put("sha-" + revision[:7], body, mt)
    release = make().resolve_track("main")
    assert release.revision is None  # found by the tag scan, not trusted from the label
    assert release.tag == "sha-" + revision[:7] and release.digest == digest


def test_digest_header_with_trailing_garbage_is_a_protocol_error(fake, make) -> None:
    digest, *_ = fake.image("v1.0.0")
    body, mt = fake.manifests["v1.0.0"]

    def hook(request: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in request.url.path and request.headers.get("authorization"):
            return httpx.Response(200, headers=[("content-type", mt),
                                                ("docker-content-digest", digest + "\n")],
                                  content=b"" if request.method == "HEAD" else body)
        return None

    fake.hook = hook
    with pytest.raises(RegistryProtocolError, match="no valid sha256 digest"):
        make().track_digest("v1.0.0")


# ------------------------------------------------------------------------ created
@pytest.mark.parametrize(("label", "config_created", "expected"), [
    ("2026-11-22T03:00:00Z", "2026-11-22T02:59:00Z", "2026-11-22T03:00:00Z"),
    ("2026-11-22T03:00:00.123456789+01:00", None, "2026-11-22T03:00:00.123456789+01:00"),
    ("yesterday", "2026-11-22T02:59:00Z", "2026-11-22T02:59:00Z"),
    ("2026-11-22 03:00:00", None, None),
    ("2026-02-30T03:00:00Z", None, None),
    ("2026-11-22T03:00:00Z\n", None, None),
    ("2026-11-22T03:00:00Z\x1b[2J", None, None),
    ("2026-11-22T25:00:00Z", None, None),
    (12345, None, None),
])
def test_created_is_accepted_only_as_rfc3339(label, config_created, expected) -> None:
    config = {"created": config_created,
              "config": {"Labels": {rr.CREATED_LABEL: label, rr.REVISION_LABEL: "a" * 40}}}
    assert rr.labels_of(config) == ("a" * 40, expected)


# ------------------------------------------------------------------------ control chars
ESC = "\x1b]0;pwned\x07\x1b[2J\r\n"


def test_control_characters_from_the_registry_never_reach_a_message(fake, make) -> None:
    fake.image("main")
    evil = json.dumps({"schemaVersion": 2, "mediaType": "application/x" + ESC}).encode()
    fake.manifests["main"] = (evil, rr.OCI_MANIFEST)
    fake.manifests[sha(evil)] = (evil, rr.OCI_MANIFEST)
    with pytest.raises(RegistryProtocolError) as info:
        make().resolve_track("main")
    assert "application/x" in str(info.value)
    assert not any(c in str(info.value) for c in "\x1b\x07\r\n")


def test_control_characters_in_a_challenge_never_reach_a_message(fake, make) -> None:
    fake.image("v1.0.0")
    fake.challenge = f'Negotiate{ESC.replace(" ", "")} x="y"'
    with pytest.raises(RegistryError) as info:
        make().track_digest("v1.0.0")
    assert not any(c in str(info.value) for c in "\x1b\x07\r\n")


def test_printable() -> None:
    assert destinations.printable("sha-abc\x1b[31mdef\n\u202egnp.exe") == "sha-abc?[31mdef??gnp.exe"
    assert destinations.printable("x" * 500, 10) == "x" * 10
    assert destinations.printable(b"\x00") == "b'\\x00'"


# ------------------------------------------------------------------------ property test
def _json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**30)
               | st.floats(allow_nan=False) | st.text(max_size=30)
               | st.sampled_from(["sha256:" + "a" * 64, rr.OCI_MANIFEST, rr.OCI_INDEX,
                                  "linux", "amd64", "unknown", "2026-11-22T03:00:00Z"]))
    keys = st.sampled_from(["mediaType", "manifests", "config", "digest", "platform", "os",
                            "architecture", "variant", "annotations", "Labels", "tags",
                            "token", "access_token", "expires_in", "created", "name",
                            rr.REVISION_LABEL, rr.CREATED_LABEL,
                            "vnd.docker.reference.type"]) | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(keys, inner, max_size=6), max_leaves=max_leaves)


def _deep(depth: int) -> bytes:
    return b'{"manifests":' + b"[" * depth + b"]" * depth + b"}"


BODIES = (
    _json_values().map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
    | st.integers(min_value=1000, max_value=200_000).map(_deep)
    | st.sampled_from([b"\xff\xfe{}", b'{"tags": "\xff"}', b"1" * 5000, b"1e999999",
                       b'{"expires_in": 1e400, "token": "x"}', b"[" * 100_000])
)
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
CONTENT_TYPES = st.sampled_from([*sorted(rr.MANIFEST_TYPES), "application/json", ""]) \
    | HEADER_TEXT
PARSERS = ["manifest", "index", "config", "token", "tags", "digest-header", "challenge",
           "link", "retry-after"]


class Hostile:
    """A registry whose answer for one kind of request is whatever hypothesis draws."""

    def __init__(self, fake: FakeGhcr, where: str, body: bytes, content_type: str,
                 header: str) -> None:
        self.fake, self.where, self.body = fake, where, body
        self.content_type, self.header = content_type, header
        self.digest, self.revision = self._publish()

    def _publish(self) -> tuple[str, str]:
        if self.where == "index":
            digest, revision = self.fake.index("main")
        else:
            digest, revision, _, _ = self.fake.image("main")
        self.fake.put("sha-" + revision[:7], *self.fake.manifests[digest])
        return digest, revision

    def __call__(self, request: httpx.Request) -> httpx.Response | None:
        path, authed = request.url.path, bool(request.headers.get("authorization"))
        w = self.where
        if w == "token" and path == "/token":
            return httpx.Response(200, content=self.body,
                                  headers={"content-type": self.content_type})
        if w == "challenge" and not authed and path.startswith("/v2/"):
            return httpx.Response(401, headers={"www-authenticate": self.header})
        if not authed:
            return None
        if w in ("manifest", "index") and path.endswith(f"/manifests/{self.digest}"):
            return httpx.Response(200, content=self.body, headers={
                "content-type": self.content_type})
        if w == "config" and "/blobs/" in path:
            return httpx.Response(200, content=self.body)
        if w == "digest-header" and "/manifests/" in path:
            return httpx.Response(200, content=b"", headers={
                "content-type": rr.OCI_MANIFEST, "docker-content-digest": self.header})
        if w in ("tags", "link") and path.endswith("/tags/list"):
            return httpx.Response(200, content=self.body if w == "tags" else b'{"tags":[]}',
                                  headers={"content-type": "application/json",
                                           "link": self.header})
        if w == "retry-after" and "/manifests/" in path:
            return httpx.Response(429, content=self.body, headers={"retry-after": self.header})
        return None


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(where=st.sampled_from(PARSERS), body=BODIES, content_type=CONTENT_TYPES,
       header=HEADER_TEXT)
def test_any_answer_ends_in_a_typed_registry_error(where, body, content_type, header) -> None:
    fake = FakeGhcr()
    hostile = Hostile(fake, where, body, content_type, header)
    fake.hook = hostile
    reg = HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake), clock=StepClock(),
                       rand=lambda: 0.5, attempts=2, page_size=10)
    with reg:
        try:
            if where in ("tags", "link"):
                list(reg.tags())
            else:
                reg.resolve_track("main")
        except RegistryError as exc:
            message = str(exc)
            assert not any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in message), message
            assert len(message) < 1000
        # Anything else (AttributeError, RecursionError, KeyError, TypeError, ...) fails.


def test_deeply_nested_json_is_a_protocol_error_not_a_recursion_error(fake, make) -> None:
    fake.put("main", b"[" * 200_000 + b"]" * 200_000, rr.OCI_MANIFEST)
    with pytest.raises(RegistryProtocolError, match="malformed JSON"):
        make().resolve_track("main")


def test_index_with_wrong_types_is_a_protocol_error(fake, make) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_INDEX, "manifests": [
        {"digest": "sha256:" + "a" * 64, "platform": "linux/amd64", "annotations": ["x"]},
        {"digest": "sha256:" + "b" * 64, "platform": {"os": "linux", "architecture": "amd64",
                                                      "variant": 7}, "annotations": "x"},
    ]}).encode()
    fake.put("main", body, rr.OCI_INDEX)
    with pytest.raises(RegistryError):
        make().resolve_track("main")


def test_a_huge_expires_in_is_not_an_overflow(fake, make) -> None:
    digest, *_ = fake.image("v1.0.0")

    def issue(request: httpx.Request) -> httpx.Response:
        fake.valid_tokens.add("t-1")
        return httpx.Response(200, content=b'{"token": "t-1", "expires_in": '
                              + b"9" * 400 + b"}")

    fake.token_answer = issue
    assert make().track_digest("v1.0.0") == digest


def test_a_token_that_is_not_printable_ascii_is_a_protocol_error(fake, make) -> None:
    """Found by ``test_any_answer_ends_in_a_typed_registry_error``: ``{"token": "\\u0080"}``
    ended in httpx's UnicodeEncodeError when the token went into the Authorization header."""
    fake.image("v1.0.0")

    def issue(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token": "\u0080abc"})

    fake.token_answer = issue
    with pytest.raises(RegistryProtocolError, match="not printable ASCII"):
        make().track_digest("v1.0.0")
