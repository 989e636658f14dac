"""Where the registry credentials and requests may go (ISSUE 14, "Credentials and transport").

Against the ghcr.io look-alike of test_registry.py: a token realm on another host, a Basic
challenge, blob redirects that downgrade or point at link-local / metadata / loopback
addresses; plus the settings rule that plain http:// is for loopback registries only.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.unit.fakes import StepClock
from tests.unit.test_registry import BASE, REPO, SECRET, FakeGhcr, sha
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.registry.credentials import Credentials
from twilight_agent.errors import ConfigError, RegistryAuthError, RegistryProtocolError
from twilight_agent.settings import Settings, load_settings

BASIC = "Basic " + base64.b64encode(f"octo:{SECRET}".encode()).decode()


def creds(*auth_hosts: str) -> Credentials:
    return Credentials("octo", SecretStr(SECRET), "token file", frozenset(auth_hosts))


@pytest.fixture
def fake() -> FakeGhcr:
    return FakeGhcr()


@pytest.fixture
def make(fake: FakeGhcr) -> Iterator[Callable[..., HttpRegistry]]:
    clients: list[HttpRegistry] = []

    def build(base: str = BASE, **kw: Any) -> HttpRegistry:
        kw.setdefault("clock", StepClock())
        client = HttpRegistry(base, REPO, transport=httpx.MockTransport(fake), **kw)
        clients.append(client)
        return client

    yield build
    for c in clients:
        c.close()


def _pat_sent_to(fake: FakeGhcr) -> set[str]:
    """Every host:port that received the Basic user:PAT."""
    return {f"{r.url.host}:{r.url.port}" for r in fake.requests
            if r.headers.get("authorization") == BASIC}


def _realm_elsewhere(fake: FakeGhcr, realm: str) -> None:
    """The challenge names ``realm``; a token request there is answered like ghcr.io's."""
    fake.challenge = f'Bearer realm="{realm}",service="ghcr.io"'
    path = httpx.URL(realm).path
    serve = fake.__call__

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == path and request.url.host == httpx.URL(realm).host:
            return fake.token_answer(request)
        return None

    fake.hook = hook
    assert serve  # the fake still serves everything else


# ------------------------------------------------------------------------ token realm
def test_pat_is_not_sent_to_a_realm_on_another_host(fake, make) -> None:
    fake.image("v1.0.0")
    _realm_elsewhere(fake, "https://evil.example/token")
    with pytest.raises(RegistryAuthError, match="TWILIGHT_REGISTRY_AUTH_HOSTS") as info:
        make(credentials=creds()).track_digest("v1.0.0")
    assert info.value.exit_code == 2
    assert _pat_sent_to(fake) == set()
    assert not any(r.url.host == "evil.example" for r in fake.requests)


def test_pat_goes_to_a_realm_host_the_operator_allows(fake, make) -> None:
    digest, *_ = fake.image("v1.0.0")
    _realm_elsewhere(fake, "https://auth.example/token")
    assert make(credentials=creds("auth.example")).track_digest("v1.0.0") == digest
    assert _pat_sent_to(fake) == {"auth.example:None"}


def test_realm_on_the_registry_host_but_another_port_gets_the_pat(fake, make) -> None:
    """The bed's shape: registry on 127.0.0.1:5000, token server on 127.0.0.1:5001. "Host"
    is the hostname; the port does not matter (as for ghcr.io and https://ghcr.io/token)."""
    digest, *_ = fake.image("v1.0.0")
    _realm_elsewhere(fake, "http://127.0.0.1:5001/token")
    reg = make("http://127.0.0.1:5000", credentials=creds())
    assert reg.track_digest("v1.0.0") == digest
    assert _pat_sent_to(fake) == {"127.0.0.1:5001"}


def test_anonymous_pull_may_use_a_realm_elsewhere(fake, make) -> None:
    digest, *_ = fake.image("v1.0.0")
    _realm_elsewhere(fake, "https://auth.example/token")
    assert make().track_digest("v1.0.0") == digest
    assert not any("authorization" in r.headers for r in fake.requests
                   if r.url.host == "auth.example")


@pytest.mark.parametrize("realm", [
    "https://169.254.169.254/latest/meta-data/iam",
    "https://metadata.google.internal/computeMetadata/v1/token",
    "https://[fe80::1]/token",
    "https://127.0.0.1/token",  # loopback, for a registry that is not on loopback
    "https://224.0.0.1/token",
])
def test_realm_on_link_local_metadata_or_loopback_is_refused(fake, make, realm) -> None:
    fake.image("v1.0.0")
    _realm_elsewhere(fake, realm)
    with pytest.raises(RegistryProtocolError, match=r"token realm .* refused"):
        make().track_digest("v1.0.0")
    assert not any(r.url.host == httpx.URL(realm).host for r in fake.requests)


# ------------------------------------------------------------------------ Basic challenge
def _basic_challenge(fake: FakeGhcr) -> None:
    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("authorization") == BASIC:
            return fake._route(request)
        if request.url.path.startswith("/v2/"):
            return httpx.Response(401, headers={"www-authenticate": 'Basic realm="x"'})
        return None
    fake.hook = hook


def test_basic_challenge_from_ghcr_is_refused(fake, make) -> None:
    fake.image("v1.0.0")
    _basic_challenge(fake)
    with pytest.raises(RegistryProtocolError, match="never does"):
        make(credentials=creds()).track_digest("v1.0.0")
    assert _pat_sent_to(fake) == set()


def test_basic_challenge_from_another_registry_sends_the_pat_to_it_only(fake, make) -> None:
    digest, *_ = fake.image("v1.0.0")
    _basic_challenge(fake)
    reg = make("https://registry.example", credentials=creds())
    assert reg.track_digest("v1.0.0") == digest
    assert _pat_sent_to(fake) == {"registry.example:None"}


# ------------------------------------------------------------------------ blob redirects
def _redirect_blobs_to(fake: FakeGhcr, location: str) -> None:
    def hook(request: httpx.Request) -> httpx.Response | None:
        if "/blobs/" in request.url.path and request.headers.get("authorization"):
            return httpx.Response(307, headers={"location": location})
        return None
    fake.hook = hook


@pytest.mark.parametrize(("location", "why"), [
    ("http://pkg-containers.githubusercontent.com/blob", "https to plain http"),
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
    ("https://169.254.10.1/blob", "link-local"),
    ("https://[fe80::1%25eth0]/blob", "link-local"),
    ("https://metadata.google.internal/blob", "metadata"),
    ("https://127.0.0.1/blob", "loopback"),
    ("https://localhost:9000/blob", "loopback"),
    ("https://[::ffff:127.0.0.1]/blob", "loopback"),
    ("https://0.0.0.0/blob", "reserved"),
])
def test_blob_redirect_is_refused(fake, make, location, why) -> None:
    fake.image("v1.0.0")
    _redirect_blobs_to(fake, location)
    with pytest.raises(RegistryProtocolError, match=f"redirect to .* refused: .*{why}"):
        make().resolve_tag("v1.0.0")
    assert not any(r.url.path == "/blob" for r in fake.requests)


def test_blob_redirect_to_loopback_is_fine_for_a_loopback_registry(fake, make) -> None:
    digest, revision, _, _ = fake.image("v1.0.0")
    config = next(iter(fake.blobs))

    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.port == 9000:
            return httpx.Response(200, content=fake.blobs[config])
        if "/blobs/" in request.url.path and request.headers.get("authorization"):
            return httpx.Response(307, headers={"location": "http://127.0.0.1:9000/b"})
        return None

    fake.hook = hook
    release = make("http://127.0.0.1:5000").resolve_tag("v1.0.0")
    assert (release.digest, release.revision) == (digest, revision)


# ------------------------------------------------------------------------ settings
IMAGE = "ghcr.io/lacatfly/twilight-drive"


@pytest.mark.parametrize("url", ["http://registry.example", "http://10.0.0.5:5000",
                                 "http://ghcr.io", "http://127.0.0.1.evil.example:5000",
                                 "http://evil.localhost:5000", "http://[fe80::1]:5000",
                                 "http://user@registry.example"])
def test_plain_http_registry_off_loopback_is_a_config_error(tmp_path, url) -> None:
    cfg = tmp_path / "agent.env"
    cfg.write_text(f"TWILIGHT_IMAGE={IMAGE}\nTWILIGHT_REGISTRY_URL={url}\n")
    with pytest.raises(ConfigError, match="TWILIGHT_REGISTRY_URL: plain http://") as info:
        load_settings(cfg)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("url", "match"), [
    ("http://evil.example#@127.0.0.1:5000", "not 'evil.example'"),  # reads like loopback
    ("https://evil.example#@ghcr.io", "no \\? or #"),
    ("https://ghcr.io?@evil.example", "no \\? or #"),
    ("https://ghcr.io@evil.example", "no user or password.*'evil.example'"),
    ("https://user:pat@ghcr.io", "no user or password"),
    ("https://ghcr.io/\x1b[2J", "control character"),
    ("https://ghcr.io\t.evil.example", "control character"),
    ("https://gh_cr.io", "is not a host name"),
    ("https://", "is not a host name"),
])
def test_a_misleading_registry_url_is_a_config_error(tmp_path, url, match) -> None:
    """Checked on the URL as httpx parses it, the host the requests would go to."""
    cfg = tmp_path / "agent.env"
    cfg.write_text(f"TWILIGHT_IMAGE={IMAGE}\nTWILIGHT_REGISTRY_URL={url}\n")
    with pytest.raises(ConfigError, match=f"TWILIGHT_REGISTRY_URL.*{match}") as info:
        load_settings(cfg)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "http://127.1.2.3",
                                 "http://[::1]:5000", "http://localhost:5000",
                                 "https://registry.example", "https://10.0.0.5:5000"])
def test_loopback_http_and_any_https_registry_load(url) -> None:
    assert Settings(image=IMAGE, registry_url=url).registry_base == url


def test_auth_hosts_setting(tmp_path) -> None:
    s = Settings(image=IMAGE, registry_auth_hosts="Auth.Example, token.example.")
    assert s.auth_hosts == {"auth.example", "token.example"}
    assert Settings(image=IMAGE).auth_hosts == frozenset()
    for bad in ("https://auth.example", "auth.example:443", "*.example", "a/b"):
        cfg = tmp_path / "agent.env"
        cfg.write_text(f"TWILIGHT_IMAGE={IMAGE}\nTWILIGHT_REGISTRY_AUTH_HOSTS={bad}\n")
        with pytest.raises(ConfigError, match="TWILIGHT_REGISTRY_AUTH_HOSTS"):
            load_settings(cfg)


def test_auth_hosts_reach_the_credentials(tmp_path) -> None:
    from twilight_agent.adapters.registry.credentials import find_credentials
    from twilight_agent.app import credential_source

    token = tmp_path / "pat"
    token.write_text(SECRET)
    found = find_credentials(credential_source(Settings(
        image=IMAGE, registry_username="octo", registry_password_file=token,
        registry_auth_hosts="auth.example")))
    assert found is not None and found.auth_hosts == {"auth.example"}
    assert SECRET not in repr(found)


def test_refusals_never_log_the_pat(fake, make) -> None:
    fake.image("v1.0.0")
    _realm_elsewhere(fake, "https://evil.example/token")
    with capture_logs() as logs, pytest.raises(RegistryAuthError) as info:
        make(credentials=creds()).track_digest("v1.0.0")
    assert SECRET not in str(logs) and SECRET not in str(info.value)
    assert sha(b"") not in str(info.value)
