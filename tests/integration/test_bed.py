"""The test bed itself: real engine, real registry, GHCR-like token auth, app variants."""

from __future__ import annotations

import base64
import json

import docker
import httpx
import pytest

from testbed.images import APP_PORT
from testbed.services import REGISTRY_URL, TOKEN_PORT
from testbed.util import wait_until

pytestmark = pytest.mark.integration

TOKEN_URL = f"http://127.0.0.1:{TOKEN_PORT}/token"
SERVICE = "twilight-testbed"


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_registry_challenges_like_ghcr() -> None:
    r = httpx.get(f"{REGISTRY_URL}/v2/")
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{TOKEN_URL}"' in challenge and f'service="{SERVICE}"' in challenge


def test_push_through_token_flow_and_pull_back_by_digest(bed, repo) -> None:
    stats = f"http://127.0.0.1:{TOKEN_PORT}/_stats"
    assert httpx.get(stats, params={"repo": repo}).json()["issued"] == 0
    img = bed.push(repo, version="v1")
    assert httpx.get(stats, params={"repo": repo}).json()["issued"] > 0
    assert sorted(bed.raw.tags(repo)) == sorted([img.sha_tag, "main", "latest"])
    # Every tag points at the pushed digest.
    for tag in img.tags:
        assert bed.raw.get_manifest(repo, tag)[2] == img.digest

    pulled = bed.docker.images.pull(f"{img.ref}@{img.digest}", auth_config=bed.auth)
    assert f"{img.ref}@{img.digest}" in pulled.attrs["RepoDigests"]
    labels = pulled.attrs["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == img.revision
    assert labels["org.opencontainers.image.created"].endswith("Z")


def test_private_repo_needs_credentials(bed, private_repo) -> None:
    img = bed.push(private_repo, version="v1")
    scope = {"service": SERVICE, "scope": f"repository:{private_repo}:pull"}
    assert httpx.get(TOKEN_URL, params=scope).status_code == 401
    assert httpx.get(TOKEN_URL, params=scope, auth=("twilight-ci", "wrong")).status_code == 401
    ok = httpx.get(TOKEN_URL, params=scope, auth=(bed.username, bed.password))
    assert ok.status_code == 200
    body = ok.json()
    assert set(body) == {"token"}  # like ghcr.io: no expires_in
    assert _claims(body["token"])["access"] == [
        {"type": "repository", "name": private_repo, "actions": ["pull"]}]

    with pytest.raises(docker.errors.APIError):
        bed.docker.images.pull(f"{img.ref}@{img.digest}")
    with pytest.raises(docker.errors.APIError):
        bed.docker.images.pull(f"{img.ref}@{img.digest}",
                               auth_config={"username": bed.username, "password": "wrong"})
    pulled = bed.docker.images.pull(f"{img.ref}@{img.digest}", auth_config=bed.auth)
    assert f"{img.ref}@{img.digest}" in pulled.attrs["RepoDigests"]


def test_public_repo_pull_is_anonymous_but_push_is_not(bed, repo) -> None:
    bed.push(repo)
    anon = httpx.get(TOKEN_URL, params={"service": SERVICE,
                                        "scope": f"repository:{repo}:pull,push"})
    assert anon.status_code == 200
    assert _claims(anon.json()["token"])["access"][0]["actions"] == ["pull"]


def test_branch_build_only_gets_a_sha_tag(bed, repo) -> None:
    main = bed.push(repo, version="v1")
    branch = bed.push(repo, version="v2", branch="feature-x")
    assert branch.tags == [branch.sha_tag]
    assert bed.raw.get_manifest(repo, "main")[2] == main.digest


def test_multi_arch_index_on_main(bed, repo) -> None:
    img = bed.push(repo)
    digest = bed.raw.make_index(repo, img.sha_tag, tags=["main"])
    body, media_type, got = bed.raw.get_manifest(repo, "main")
    assert got == digest and media_type == "application/vnd.oci.image.index.v1+json"
    platforms = [m["platform"]["architecture"] for m in json.loads(body)["manifests"]]
    assert platforms == ["unknown", "arm64", "amd64"]
    # The engine resolves the index to its own platform and runs it.
    pulled = bed.docker.images.pull(f"{img.ref}@{digest}", auth_config=bed.auth)
    assert pulled.attrs["Architecture"] == "amd64"


def _run(bed, img, name: str):
    bed.docker.images.pull(f"{img.ref}@{img.digest}", auth_config=bed.auth)
    return bed.docker.containers.run(f"{img.ref}@{img.digest}", name=name, detach=True,
                                     ports={f"{APP_PORT}/tcp": ("127.0.0.1", None)})


def _url(container) -> str:
    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"][f"{APP_PORT}/tcp"][0]["HostPort"]
    return f"http://127.0.0.1:{port}/healthz"


def test_app_variants_behave_as_named(bed, repo, cleanup) -> None:
    good = _run(bed, bed.push(repo, version="v1"), f"{cleanup}-good")
    r = wait_until(lambda: httpx.get(_url(good), timeout=1), 10, what="good app")
    assert r.status_code == 200 and r.text == "ok v1\n"

    bad = _run(bed, bed.push(repo, version="v2", mode="500"), f"{cleanup}-500")
    r = wait_until(lambda: httpx.get(_url(bad), timeout=1), 10, what="500 app")
    assert r.status_code == 500

    hang = _run(bed, bed.push(repo, version="v3", mode="hang"), f"{cleanup}-hang")
    url = _url(hang)
    with pytest.raises(httpx.ReadTimeout):
        wait_until(lambda: hang.reload() or hang.status == "running", 10, what="hang app")
        httpx.get(url, timeout=1)

    dead = _run(bed, bed.push(repo, version="v4", mode="exit"), f"{cleanup}-exit")
    wait_until(lambda: dead.reload() or dead.status == "exited", 10, what="exit app")
    assert dead.attrs["State"]["ExitCode"] == 3
    assert b"fatal" in dead.logs()


def test_healthcheck_and_slow_boot_variant(bed, repo, cleanup) -> None:
    img = bed.push(repo, version="v1", boot_delay=2, healthcheck=True)
    c = _run(bed, img, f"{cleanup}-slow")
    url = _url(c)
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=0.5)
    wait_until(lambda: httpx.get(url, timeout=1).status_code == 200, 15, what="slow boot")
    wait_until(lambda: c.reload() or c.attrs["State"]["Health"]["Status"] == "healthy", 15,
               what="docker HEALTHCHECK healthy")
