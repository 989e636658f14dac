"""The registry watcher against the bed's real registry behind GHCR-like token auth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testbed.accesslog import AccessLog
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.app import build_registry
from twilight_agent.core.models import Release
from twilight_agent.errors import InvalidTag, ManifestNotFound, RegistryAuthError
from twilight_agent.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]

TOKEN_STATS = "http://127.0.0.1:5001/_stats"


def tokens_issued(repo: str) -> int:
    """Tokens the bed's token server issued for ``repo`` (other tests may run alongside)."""
    return int(httpx.get(TOKEN_STATS, params={"repo": repo}).json()["issued"])


@pytest.fixture
def open_registry(bed, tmp_path: Path, monkeypatch) -> Iterator:
    """``open_registry(repo, credentials=False, **options)`` -> HttpRegistry via app.py."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no stray docker login counts here
    opened: list[HttpRegistry] = []

    def make(repo: str, credentials: bool = False, **options: object) -> HttpRegistry:
        extra: dict[str, object] = {}
        if credentials:
            token = tmp_path / "registry-token"
            token.write_text(bed.password)
            extra = {"registry_username": bed.username, "registry_password_file": token}
        settings = Settings(image=f"{bed.host}/{repo}", registry_url=bed.registry_url, **extra)
        registry = build_registry(settings, **options)
        opened.append(registry)
        return registry

    yield make
    for registry in opened:
        registry.close()


def test_public_repository_newest_main(bed, repo, open_registry) -> None:
    img = bed.push(repo, version="v1")
    release = open_registry(repo).resolve_track("main")
    assert release == Release(img.sha_tag, img.digest, img.revision,
                              img.labels["org.opencontainers.image.created"])


def test_private_repository_needs_the_bed_credentials(bed, private_repo, open_registry) -> None:
    img = bed.push(private_repo, version="v1")
    with pytest.raises(RegistryAuthError, match="anonymous") as info:
        open_registry(private_repo).resolve_track("main")
    assert info.value.exit_code == 2
    release = open_registry(private_repo, credentials=True).resolve_track("main")
    assert (release.tag, release.digest) == (img.sha_tag, img.digest)


def test_newer_branch_builds_are_never_chosen(bed, repo, open_registry) -> None:
    main = bed.push(repo, version="v1")
    branch = [bed.push(repo, version=f"feature-{i}", branch="feature") for i in range(2)]
    registry = open_registry(repo)
    assert set(registry.tags()) >= {main.sha_tag, *(b.sha_tag for b in branch)}
    release = registry.resolve_track("main")
    assert (release.tag, release.digest) == (main.sha_tag, main.digest)


def test_multi_arch_index_on_main(bed, repo, open_registry) -> None:
    img = bed.push(repo, version="v1")
    index = bed.raw.make_index(repo, img.sha_tag, tags=["main", "latest", img.sha_tag])
    assert index != img.digest
    release = open_registry(repo).resolve_track("main")
    # the index digest is what gets pulled; the engine picks its platform from it
    assert (release.tag, release.digest, release.revision) == (img.sha_tag, index, img.revision)
    arm = open_registry(repo, platform="linux/arm64/v8").resolve_track("main")
    assert arm.digest == index
    with pytest.raises(ManifestNotFound, match="no linux/riscv64 image"):
        open_registry(repo, platform=("linux", "riscv64")).resolve_track("main")


def test_labels_missing_falls_back_to_the_tag_scan(bed, repo, open_registry) -> None:
    bed.push(repo, version="old", labels=False, branch="feature")
    main = bed.push(repo, version="v1", labels=False)
    bed.push(repo, version="newer-branch", labels=False, branch="feature")
    release = open_registry(repo).resolve_track("main")
    assert (release.tag, release.digest, release.revision) == (main.sha_tag, main.digest, None)


def test_resolve_tag_and_the_tag_gate(bed, repo, open_registry) -> None:
    img = bed.push(repo, version="v1", extra_tags=("v1.2.3",))
    registry = open_registry(repo)
    release = registry.resolve_tag("v1.2.3")
    assert (release.tag, release.digest, release.revision) == ("v1.2.3", img.digest, img.revision)
    assert registry.resolve_tag(img.sha_tag).digest == img.digest
    with pytest.raises(ManifestNotFound, match="sha-0000000 does not exist"):
        registry.resolve_tag("sha-0000000")
    fresh = open_registry(repo)
    served = AccessLog()
    for bad in ("main;reboot", "$(id)", "v" * 300):
        with pytest.raises(InvalidTag):
            fresh.resolve_tag(bad)
    assert served.served(repo) == []  # refused before a byte went out


def _idle_requests(repo: str, registry: HttpRegistry, known: Release,
                   polls: int) -> list[tuple[str, str, int]]:
    """What the registry served for ``repo`` during ``polls`` idle polls (its access log)."""
    served = AccessLog()
    for _ in range(polls):
        assert registry.resolve_track("main", known) is known
    return served.served(repo)


@pytest.mark.parametrize("n_tags", [100, 10_000])  # 1,500: the test below; 10,000 takes ~40 s
def test_one_request_per_idle_poll_whatever_the_tag_count(bed, repo, open_registry,
                                                         n_tags: int) -> None:
    branch = bed.push(repo, version="branch", branch="feature")
    bed.raw.tag(repo, branch.sha_tag, *[f"sha-{i:07x}" for i in range(n_tags)])
    main = bed.push(repo, version="v1")
    registry = open_registry(repo)
    known = registry.resolve_track("main")
    assert (known.tag, known.digest) == (main.sha_tag, main.digest)
    issued = tokens_issued(repo)
    served = _idle_requests(repo, registry, known, 50)
    assert served == [("HEAD", f"/v2/{repo}/manifests/main", 200)] * 50
    assert tokens_issued(repo) == issued  # the token stayed cached


def test_fifteen_hundred_tags_without_labels(bed, repo, open_registry) -> None:
    branch = bed.push(repo, version="branch", labels=False, branch="feature")
    bed.raw.tag(repo, branch.sha_tag, *[f"sha-{i:07x}" for i in range(1500)])
    main = bed.push(repo, version="v1", labels=False)
    registry = open_registry(repo)
    assert len(set(registry.tags())) == 1500 + 4  # floods + branch sha + main sha, main, latest
    release = registry.resolve_track("main")
    assert (release.tag, release.digest) == (main.sha_tag, main.digest)
    served = _idle_requests(repo, registry, release, 20)
    assert served == [("HEAD", f"/v2/{repo}/manifests/main", 200)] * 20
