"""The registry adapter against a ghcr.io look-alike in httpx's MockTransport.

For what the bed's real registry cannot be made to do: 429 with both retry hints, 307 blob
redirects to another host, a placeholder scope on ``/v2/``, broken answers of every kind.
The happy paths run against the real registry in tests/integration/test_registry.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.unit.fakes import StepClock
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.registry.credentials import Credentials
from twilight_agent.core import registry_rules as rr
from twilight_agent.core.models import Release
from twilight_agent.errors import (
    InvalidTag,
    ManifestNotFound,
    RegistryAuthError,
    RegistryProtocolError,
    RegistryUnavailable,
)

REPO = "owner/app"
BASE = "https://ghcr.io"
BLOB_HOST = "pkg-containers.githubusercontent.com"
SECRET = "ghp_UnitTestSecret0123456789"
Hook = Callable[[httpx.Request], "httpx.Response | None"]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeGhcr:
    """Just enough of ghcr.io: token endpoint, manifests, blobs (307 to a blob host), tags."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.tags: list[str] = []
        self.requests: list[httpx.Request] = []
        self.valid_tokens: set[str] = set()
        self.token_answer: Callable[[httpx.Request], httpx.Response] = self._issue
        self.hook: Hook | None = None
        self.challenge = (f'Bearer realm="{BASE}/token",service="ghcr.io",'
                          'scope="repository:user/image:pull"')  # ghcr's placeholder
        self.page_size = 1000

    # -- content ---------------------------------------------------------------------
    def put(self, ref: str, body: bytes, media_type: str) -> str:
        digest = sha(body)
        self.manifests[digest] = (body, media_type)
        self.manifests[ref] = (body, media_type)
        if ref not in self.tags and not ref.startswith("sha256:"):
            self.tags.append(ref)
        return digest

    def image(self, *tags: str, revision: str | None = None, labels: bool = True,
              arch: str = "amd64") -> tuple[str, str, bytes, str]:
        """Publish an image under ``tags``; return (digest, revision, body, media type)."""
        revision = revision or secrets.token_hex(20)
        lab = {rr.REVISION_LABEL: revision, rr.CREATED_LABEL: "2026-11-22T03:00:00Z"}
        config = json.dumps({"architecture": arch, "os": "linux",
                             "created": "2026-11-22T02:59:00Z", "build": revision,
                             "config": {"Labels": lab if labels else None}}).encode()
        self.blobs[sha(config)] = config
        manifest = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": sha(config), "size": len(config)},
                               "layers": []}).encode()
        digest = sha(manifest)
        self.manifests[digest] = (manifest, rr.OCI_MANIFEST)
        for tag in tags:
            self.put(tag, manifest, rr.OCI_MANIFEST)
        return digest, revision, manifest, rr.OCI_MANIFEST

    def index(self, *tags: str, revision: str | None = None) -> tuple[str, str]:
        revision = revision or secrets.token_hex(20)
        amd = self.image(revision=revision)[0]
        arm = self.image(revision=revision, arch="arm64")[0]
        att = self.image(labels=False)[0]
        entries = [
            {"mediaType": rr.OCI_MANIFEST, "digest": att, "size": 1,
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            {"mediaType": rr.OCI_MANIFEST, "digest": arm, "size": 1,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": rr.OCI_MANIFEST, "digest": amd, "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
        body = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_INDEX,
                           "manifests": entries}).encode()
        digest = sha(body)
        self.manifests[digest] = (body, rr.OCI_INDEX)
        for tag in tags:
            self.put(tag, body, rr.OCI_INDEX)
        return digest, revision

    # -- serving ---------------------------------------------------------------------
    def _issue(self, request: httpx.Request) -> httpx.Response:
        token = "tok-" + secrets.token_hex(4)
        self.valid_tokens.add(token)
        return httpx.Response(200, json={"token": token})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.hook is not None and (answer := self.hook(request)) is not None:
            return answer
        if request.url.host == BLOB_HOST:
            return httpx.Response(200, content=self.blobs[request.url.path.rsplit("/", 1)[-1]])
        if request.url.path == "/token":
            return self.token_answer(request)
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid_tokens:
            return httpx.Response(401, headers={"www-authenticate": self.challenge},
                                  json={"errors": [{"code": "UNAUTHORIZED"}]})
        return self._route(request)

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(f"/v2/{REPO}/")
        kind, _, ref = path.partition("/")
        if kind == "manifests":
            if ref not in self.manifests:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            body, mt = self.manifests[ref]
            headers = {"content-type": mt, "docker-content-digest": sha(body)}
            return httpx.Response(200, headers=headers,
                                  content=b"" if request.method == "HEAD" else body)
        if kind == "blobs":
            return httpx.Response(307, headers={
                "location": f"https://{BLOB_HOST}/ghcr1/blobs/sha256/{ref}?sig=x"})
        if path == "tags/list":
            return self._tag_page(request)
        return httpx.Response(404)

    def _tag_page(self, request: httpx.Request) -> httpx.Response:
        last = request.url.params.get("last")
        start = self.tags.index(last) + 1 if last else 0
        page = self.tags[start:start + self.page_size]
        headers = {"content-type": "application/json"}
        if start + self.page_size < len(self.tags):
            nxt = f"/v2/{REPO}/tags/list?last={page[-1]}&n={self.page_size}"
            headers["link"] = f'<{nxt}>; rel="next"'
        return httpx.Response(200, headers=headers, json={"name": REPO, "tags": page})


@pytest.fixture
def fake() -> FakeGhcr:
    return FakeGhcr()


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def sleeps(clock: StepClock) -> list[float]:
    return clock.slept


@pytest.fixture
def make(fake: FakeGhcr, clock: StepClock) -> Callable[..., HttpRegistry]:
    clients: list[HttpRegistry] = []

    def build(**kw: Any) -> HttpRegistry:
        kw.setdefault("clock", clock)
        kw.setdefault("rand", lambda: 0.5)
        client = HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake), **kw)
        clients.append(client)
        return client

    yield build
    for c in clients:
        c.close()


# ------------------------------------------------------------------------ resolution
def test_newest_main_by_label_and_one_request_per_idle_poll(fake, make) -> None:
    digest, revision, _, _ = fake.image("main", "latest")
    fake.put("sha-" + revision[:7], *fake.manifests[digest])
    fake.image("sha-fffffff")  # a newer branch build: never chosen
    reg = make()
    release = reg.resolve_track("main")
    assert release == Release("sha-" + revision[:7], digest, revision, "2026-11-22T03:00:00Z")
    before = reg.requests
    for _ in range(10):
        assert reg.resolve_track("main", release) is release
    assert reg.requests - before == 10
    assert not any(r.url.path.endswith("tags/list") for r in fake.requests)


def test_multi_arch_index_resolves_to_the_index_digest(fake, make) -> None:
    digest, revision = fake.index("main")
    fake.put("sha-" + revision[:7], *fake.manifests[digest])
    release = make().resolve_track("main")
    assert (release.tag, release.digest, release.revision) == (
        "sha-" + revision[:7], digest, revision)
    arm = make(platform="linux/arm64/v8").resolve_track("main")
    assert arm.digest == digest
    with pytest.raises(ManifestNotFound, match="no linux/s390x image"):
        make(platform=("linux", "s390x")).resolve_track("main")


def test_labels_missing_falls_back_to_scanning_sha_tags(fake, make) -> None:
    for _ in range(5):
        fake.image(f"sha-{secrets.token_hex(4)[:7]}", labels=False)
    digest, _, body, mt = fake.image("main", labels=False)
    fake.put("sha-1234567", body, mt)
    fake.image(f"sha-{secrets.token_hex(4)[:7]}", labels=False)  # newer, from a branch
    release = make().resolve_track("main")
    assert (release.tag, release.digest, release.revision) == ("sha-1234567", digest, None)


def test_label_whose_sha_tag_points_elsewhere_is_not_trusted(fake, make) -> None:
    _, revision, body, mt = fake.image("main")
    fake.image("sha-" + revision[:7])  # same name, another build
    fake.put("sha-abcdef1", body, mt)
    assert make().resolve_track("main").tag == "sha-abcdef1"


def test_ten_thousand_tags_are_paged_and_scanned(fake, make) -> None:
    other = fake.image("sha-0000000", labels=False)
    fake.tags += [f"sha-{i:07x}" for i in range(1, 10_000)]
    for tag in fake.tags:
        fake.manifests.setdefault(tag, fake.manifests[other[0]])
    digest, _, body, mt = fake.image("main", labels=False)
    fake.manifests["sha-00026ac"] = (body, mt)  # tag 9900, on page 10
    reg = make(max_candidates=20_000)
    assert len(list(reg.tags())) == 10_001
    assert reg.resolve_track("main") == Release("sha-00026ac", digest, None,
                                                "2026-11-22T02:59:00Z")
    with pytest.raises(RegistryProtocolError, match="none of the first 500 sha-"):
        make(max_candidates=500).resolve_track("main")


def test_no_sha_tag_points_at_main(fake, make) -> None:
    fake.image("main", labels=False)
    fake.image("sha-1111111")
    with pytest.raises(RegistryProtocolError, match="no sha-\\* tag points at main"):
        make().resolve_track("main")


def test_resolve_tag_gates_then_resolves(fake, make) -> None:
    digest, revision, _, _ = fake.image("v1.2.3")
    reg = make()
    release = reg.resolve_tag("v1.2.3")
    assert (release.tag, release.digest, release.revision) == ("v1.2.3", digest, revision)
    before = reg.requests
    assert reg.resolve_tag("v1.2.3", release) is release
    assert reg.requests == before + 1
    assert reg.track_digest("v1.2.3") == digest


@pytest.mark.parametrize("tag", ["main; rm -rf /", "$(reboot)", "sha-`id`", "a" * 300,
                                 "v1.2.3\nmain", ""])
def test_bad_tags_are_refused_before_anything_is_sent(fake, make, tag) -> None:
    reg = make()
    for call in (reg.resolve_tag, reg.resolve_track, reg.track_digest):
        with pytest.raises(InvalidTag) as info:
            call(tag)
        assert "\n" not in str(info.value) and len(str(info.value)) < 200
    assert reg.requests == 0 and fake.requests == []


def test_missing_manifest(fake, make) -> None:
    with pytest.raises(ManifestNotFound, match=r"ghcr.io/owner/app:main does not exist"):
        make().resolve_track("main")


# ------------------------------------------------------------------------ auth
def test_scope_comes_from_the_repository_not_the_placeholder(fake, make) -> None:
    fake.image("v1.0.0")
    make().track_digest("v1.0.0")
    token_calls = [r for r in fake.requests if r.url.path == "/token"]
    assert len(token_calls) == 1
    assert token_calls[0].url.params["scope"] == "repository:owner/app:pull"
    assert token_calls[0].url.params["service"] == "ghcr.io"
    assert "authorization" not in token_calls[0].headers  # anonymous


def test_token_is_cached_and_fetched_once_more_on_401(fake, make) -> None:
    fake.image("v1.0.0")
    reg = make()
    reg.track_digest("v1.0.0")
    reg.track_digest("v1.0.0")
    assert sum(r.url.path == "/token" for r in fake.requests) == 1
    fake.valid_tokens.clear()  # the registry rotated its keys
    reg.track_digest("v1.0.0")
    assert sum(r.url.path == "/token" for r in fake.requests) == 2


def test_a_jwt_about_to_expire_is_renewed_before_the_registry_refuses_it(fake, make) -> None:
    fake.image("v1.0.0")
    now = StepClock(1000.0, 1000.0)

    def issue(request: httpx.Request) -> httpx.Response:
        payload = base64.urlsafe_b64encode(json.dumps({"exp": now.wall() + 60}).encode())
        token = f"h.{payload.decode().rstrip('=')}.{secrets.token_hex(2)}"
        fake.valid_tokens.add(token)
        return httpx.Response(200, json={"token": token})

    fake.token_answer = issue
    reg = make(clock=now)
    reg.track_digest("v1.0.0")
    now.sleep(30)
    before = len(fake.requests)
    reg.track_digest("v1.0.0")
    assert len(fake.requests) - before == 1  # still fresh
    now.sleep(25)  # within 10 s of expiry
    before = len(fake.requests)
    reg.track_digest("v1.0.0")
    renewal = fake.requests[before:]
    assert [r.url.path for r in renewal] == ["/token", "/v2/owner/app/manifests/v1.0.0"]


def test_credentials_go_to_the_token_endpoint_and_never_to_a_log(fake, make) -> None:
    fake.image("v1.0.0")
    creds = Credentials("octo", SecretStr(SECRET), "token file")
    with capture_logs() as logs:
        make(credentials=creds).resolve_tag("v1.0.0")
    token_call = next(r for r in fake.requests if r.url.path == "/token")
    assert token_call.headers["authorization"].startswith("Basic ")
    assert SECRET not in repr(creds) and SECRET not in str(logs)
    assert not any("tok-" in str(entry) for entry in logs)


def test_registry_still_refusing_a_fresh_token_is_an_auth_error(fake, make) -> None:
    fake.image("v1.0.0")
    fake.token_answer = lambda r: httpx.Response(200, json={"token": "useless"})
    with pytest.raises(RegistryAuthError, match="anonymous") as info:
        make().track_digest("v1.0.0")
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("answer", "error", "match"), [
    (httpx.Response(401, json={"errors": []}), RegistryAuthError, "refused a pull token"),
    (httpx.Response(403, text="no"), RegistryAuthError, "refused a pull token"),
    (httpx.Response(500, text="oops"), RegistryUnavailable, "HTTP 500 after 4 attempts"),
    (httpx.Response(200, text="<html>login</html>"), RegistryProtocolError, "malformed JSON"),
    (httpx.Response(200, json={"tok": "x"}), RegistryProtocolError, "answered no token"),
    (httpx.Response(200, json=["token"]), RegistryProtocolError, "answered no token"),
    (httpx.Response(404, text="gone"), RegistryProtocolError, "answered HTTP 404"),
])
def test_token_endpoint_failures(fake, make, sleeps, answer, error, match) -> None:
    fake.image("v1.0.0")
    fake.token_answer = lambda r: answer
    with pytest.raises(error, match=match):
        make().track_digest("v1.0.0")


def test_access_token_field_is_accepted(fake, make) -> None:
    fake.image("v1.0.0")

    def issue(request: httpx.Request) -> httpx.Response:
        fake.valid_tokens.add("oauth-1")
        return httpx.Response(200, json={"access_token": "oauth-1", "expires_in": 300})

    fake.token_answer = issue
    assert make().track_digest("v1.0.0") == sha(fake.manifests["v1.0.0"][0])


def test_http_token_realm_for_an_https_registry_is_refused(fake, make) -> None:
    fake.image("v1.0.0")
    fake.challenge = 'Bearer realm="http://ghcr.io/token",service="ghcr.io"'
    with pytest.raises(RegistryProtocolError, match="clear text"):
        make().track_digest("v1.0.0")


def test_blob_redirect_to_another_host_goes_without_the_token(fake, make) -> None:
    fake.image("v1.0.0")
    make().resolve_tag("v1.0.0")
    blob_calls = [r for r in fake.requests if r.url.host == BLOB_HOST]
    registry_calls = [r for r in fake.requests if r.url.host == "ghcr.io"
                      and "/blobs/" in r.url.path and "authorization" in r.headers]
    assert len(blob_calls) == 1 and registry_calls
    assert "authorization" not in blob_calls[0].headers


# ------------------------------------------------------------------------ bad answers
def _hook_manifest(fake: FakeGhcr, respond: Callable[[httpx.Request], httpx.Response]) -> None:
    def hook(request: httpx.Request) -> httpx.Response | None:
        if "/manifests/" in request.url.path and request.headers.get("authorization"):
            return respond(request)
        return None
    fake.hook = hook


def test_malformed_json_manifest(fake, make) -> None:
    fake.put("main", b"{not json", rr.OCI_MANIFEST)
    with pytest.raises(RegistryProtocolError, match="malformed JSON"):
        make().resolve_track("main")


def test_wrong_content_type(fake, make) -> None:
    fake.image("main")
    _hook_manifest(fake, lambda r: httpx.Response(200, headers={
        "content-type": "text/html", "docker-content-digest": "sha256:" + "0" * 64},
        content=b"<html></html>"))
    with pytest.raises(RegistryProtocolError, match="'text/html' is not an OCI"):
        make().resolve_track("main")


def test_body_that_does_not_match_the_requested_digest(fake, make) -> None:
    digest, _, _, _ = fake.image("main")
    _, _, evil, mt = fake.image()
    fake.manifests[digest] = (evil, mt)  # a poisoned cache answers another manifest
    with pytest.raises(RegistryProtocolError, match="does not match the requested digest"):
        make().resolve_track("main")


def test_body_that_does_not_match_docker_content_digest(fake, make) -> None:
    fake.image("v1.0.0")
    body, mt = fake.manifests["v1.0.0"]
    _hook_manifest(fake, lambda r: httpx.Response(200, headers={
        "content-type": mt, "docker-content-digest": "sha256:" + "1" * 64},
        content=b"" if r.method == "HEAD" else body))
    reg = make()
    with pytest.raises(RegistryProtocolError, match="does not match Docker-Content-Digest"):
        reg._manifest("v1.0.0")


def test_head_without_a_digest_header_falls_back_to_the_body(fake, make) -> None:
    fake.image("v1.0.0")
    body, mt = fake.manifests["v1.0.0"]
    _hook_manifest(fake, lambda r: httpx.Response(
        200, headers={"content-type": mt}, content=b"" if r.method == "HEAD" else body))
    assert make().track_digest("v1.0.0") == sha(body)


def test_link_loop_is_detected(fake, make) -> None:
    fake.image("main", labels=False)

    def loop(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/tags/list") and request.headers.get("authorization"):
            return httpx.Response(200, json={"tags": ["sha-1111111"]}, headers={
                "content-type": "application/json",
                "link": f'</v2/{REPO}/tags/list?n=1000>; rel="next"'})
        return None

    fake.hook = loop
    with pytest.raises(RegistryProtocolError, match="Link loop"):
        make().resolve_track("main")


def test_link_loop_with_changing_urls_is_detected(fake, make) -> None:
    def loop(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/tags/list") and request.headers.get("authorization"):
            n = int(request.url.params.get("last", "0")) + 1
            return httpx.Response(200, json={"tags": ["sha-1111111"]}, headers={
                "content-type": "application/json",
                "link": f'</v2/{REPO}/tags/list?last={n}>; rel="next"'})
        return None

    fake.hook = loop
    with pytest.raises(RegistryProtocolError, match="repeated tags"):
        list(make().tags())


def test_link_that_leaves_the_repository_is_refused(fake, make) -> None:
    def away(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/tags/list") and request.headers.get("authorization"):
            return httpx.Response(200, json={"tags": ["a"]}, headers={
                "content-type": "application/json",
                "link": '<https://evil.example/v2/x/tags/list>; rel="next"'})
        return None

    fake.hook = away
    with pytest.raises(RegistryProtocolError, match="leaves the repository"):
        list(make().tags())


def test_page_cap(fake, make) -> None:
    fake.tags = [f"t{i}" for i in range(50)]
    fake.page_size = 5
    with pytest.raises(RegistryProtocolError, match="more than 3 pages"):
        list(make(page_size=5, max_pages=3).tags())


def test_oversized_answer_is_refused(fake, make) -> None:
    _hook_manifest(fake, lambda r: httpx.Response(
        200, headers={"content-type": rr.OCI_MANIFEST}, content=b" " * (9 * 1024 * 1024)))
    fake.image("main")
    with pytest.raises(RegistryProtocolError, match="larger than 8 MiB"):
        make().resolve_track("main")


# ------------------------------------------------------------------------ retries
def _then_ok(fake: FakeGhcr, failures: list[httpx.Response | Exception]) -> None:
    def hook(request: httpx.Request) -> httpx.Response | None:
        if failures and "/manifests/" in request.url.path:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return None
    fake.hook = hook


def test_429_honours_retry_after_header_and_ghcr_body_hint(fake, make, sleeps) -> None:
    fake.image("v1.0.0")
    ghcr_body = {"errors": [{"code": "TOOMANYREQUESTS",
                             "message": "retry-after: 1.25s, allowed: 44000/minute"}]}
    _then_ok(fake, [httpx.Response(429, headers={"retry-after": "3"}),
                    httpx.Response(429, json=ghcr_body)])
    assert make().track_digest("v1.0.0")
    assert sleeps == [3.0, pytest.approx(1.25)]


def test_429_asking_for_longer_than_the_cap_gives_up_at_once(fake, make, sleeps) -> None:
    fake.image("v1.0.0")
    _then_ok(fake, [httpx.Response(429, headers={"retry-after": "3600"})])
    with pytest.raises(RegistryUnavailable, match="asks to wait 3600s"):
        make().track_digest("v1.0.0")
    assert sleeps == []


@pytest.mark.parametrize("failure", [
    httpx.Response(503, text="busy"), httpx.Response(502),
    httpx.ReadTimeout("slow"), httpx.ConnectError("refused"),
    httpx.RemoteProtocolError("peer closed"),
])
def test_transient_failures_back_off_then_give_a_typed_error(fake, make, sleeps, failure) -> None:
    fake.image("v1.0.0")
    _then_ok(fake, [failure] * 10)
    with pytest.raises(RegistryUnavailable, match="after 4 attempts") as info:
        make().track_digest("v1.0.0")
    assert not isinstance(info.value, httpx.HTTPError)
    assert info.value.exit_code == 5
    assert sleeps == [0.375, 0.75, 1.5]  # 0.5 * 2**n, equal jitter with rand=0.5


def test_transient_failure_then_success(fake, make, sleeps) -> None:
    digest, *_ = fake.image("v1.0.0")
    _then_ok(fake, [httpx.ReadTimeout("slow"), httpx.Response(500)])
    assert make().track_digest("v1.0.0") == digest
    assert len(sleeps) == 2


def test_backoff_never_exceeds_the_cap(fake, make, sleeps) -> None:
    fake.image("v1.0.0")
    _then_ok(fake, [httpx.Response(503)] * 20)
    with pytest.raises(RegistryUnavailable):
        make(attempts=10, backoff_cap=4.0, rand=lambda: 0.999).track_digest("v1.0.0")
    assert len(sleeps) == 9 and max(sleeps) <= 4.0
