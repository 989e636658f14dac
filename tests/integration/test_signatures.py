"""Cosign signatures on the real engine and the token-auth registry (issue 16).

Every signature here is made by the real ``cosign`` (Debian 13's package, fetched into the
bed's prefix) signing on the bed registry through its token auth, with
``--tlog-upload=false``. The agent runs as an operator runs it (the CLI), except for the
request count, which reads the registry adapter's counter in-process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from testbed import cosign
from testbed.accesslog import AccessLog
from testbed.images import AppImage
from tests.integration.deploybed import Site, push
from twilight_agent import app
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.signatures import sig_tag

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]
MAIN = {"ref": "refs/heads/main"}


class Keys:
    """Two cosign key pairs made by ``cosign generate-key-pair``: ``ci`` and ``other``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ci_key, self.ci_pub = cosign.generate_key_pair(workdir, "ci")
        self.other_key, self.other_pub = cosign.generate_key_pair(workdir, "other")

    def sign(self, img: AppImage, key: Path | None = None,
             annotations: dict[str, str] | None = None, referrers: bool = False) -> None:
        cosign.sign(self.workdir, key or self.ci_key, img.repo, img.digest,
                    MAIN if annotations is None else annotations, referrers=referrers)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    try:
        cosign.fetch()
    except Exception as exc:  # the bed needs it: fail with the reason, never skip
        pytest.fail(f"cannot fetch Debian 13's cosign: {exc}")
    yield Keys(tmp_path_factory.mktemp("cosign"))


def verify_cfg(keys: Keys, *pubs: Path, annotations: str = "ref=refs/heads/main") -> dict:
    return {"VERIFY_KEY": ",".join(str(p) for p in (pubs or (keys.ci_pub,))),
            "VERIFY_ANNOTATIONS": annotations}


def engine_has(site: Site, img: AppImage) -> bool:
    # The low-level list carries the digests itself: no per-image inspect that races with
    # images a neighbouring test removes meanwhile.
    for image in site.bed.docker.api.images(all=True):
        if any(rd.endswith(img.digest) for rd in image.get("RepoDigests") or []):
            return True
    try:
        site.bed.docker.images.get(f"{img.ref}@{img.digest}")
    except docker.errors.ImageNotFound:
        return False
    return True


def layers_fetched(site: Site, img: AppImage, log: AccessLog) -> list[str]:
    """The GETs of ``img``'s layer blobs the registry served since ``log``'s mark: what a
    pull fetches (the config blob is not one: the agent reads the revision label there)."""
    body = site.bed.raw.get_manifest(site.repo, img.digest)[0]
    layers = {d["digest"] for d in json.loads(body)["layers"]}
    return [u for m, u, _ in log.served(site.repo)
            if m == "GET" and "/blobs/" in u and u.rsplit("/", 1)[-1] in layers]


def assert_refused(site: Site, img: AppImage, running: AppImage, p, why: str,
                   retry: tuple[str, ...] = ("deploy",)) -> None:
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert f"untrusted: {img.sha_tag}" in p.stderr and why in p.stderr, p.stderr
    assert site.running_digest() == running.digest
    assert not engine_has(site, img), "nothing of a refused digest may be pulled"
    q = {e["digest"]: e for e in site.status()["quarantined"]}
    assert q[img.digest]["reason"].startswith("signature: "), q
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"]) == ("untrusted", img.digest)
    again = site.cli(*retry)  # the track: wait for the next build; a tag: unquarantine
    if retry == ("deploy",):
        assert again.returncode == 0 and "quarantined" in again.stdout, again.stderr
    else:
        assert again.returncode == 2 and "quarantined" in again.stderr, again.stderr
    assert not engine_has(site, img)


def test_signed_by_the_configured_key_is_deployed(site: Site, keys: Keys) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    keys.sign(v2, annotations={**MAIN, "commit": v2.revision})
    site.config.update(verify_cfg(keys))

    check = site.cli("check")
    assert check.returncode == 0, check.stderr
    assert f"signature: valid (key {keys.ci_pub})" in check.stdout, check.stdout
    as_json = json.loads(site.cli("check", "--json").stdout)
    assert as_json["signature"] == f"valid (key {keys.ci_pub})"
    p = site.cli("deploy")
    assert p.returncode == 0, p.stderr
    assert site.running_digest() == v2.digest
    site.wait_serving("v2", timeout=5)


def test_signed_as_an_oci_referrer_is_deployed(site: Site, keys: Keys) -> None:
    """The bed's registry has no referrers API: cosign writes the sha256-<hex> tag schema."""
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    keys.sign(v2, referrers=True)
    assert sig_tag(v2.digest) not in site.bed.raw.tags(site.repo)
    site.config.update(verify_cfg(keys))
    p = site.cli("deploy")
    assert p.returncode == 0 and site.running_digest() == v2.digest, p.stderr
    v3 = push(site, "v3")
    keys.sign(v3, keys.other_key, referrers=True)
    assert_refused(site, v3, v2, site.cli("deploy"), "no configured key verifies")


def test_unsigned_waits_and_is_refused_after_the_grace_nothing_pulled(site: Site,
                                                                       keys: Keys) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    site.config.update(verify_cfg(keys))
    check = site.cli("check")
    assert "signature: missing" in check.stdout, check.stdout
    assert "decision:  waiting for signature:" in check.stdout, check.stdout
    waiting = site.cli("deploy")  # CI may still be signing it
    assert waiting.returncode == 0 and "waiting for a signature" in waiting.stdout, waiting
    assert site.status()["quarantined"] == [] and not engine_has(site, v2)
    site.config.update(VERIFY_GRACE="1s")  # counted from the first sighting, above
    time.sleep(1.2)  # a fast machine reaches the next deploy inside that second
    assert_refused(site, v2, v1, site.cli("deploy"), "signature: missing")


def test_a_pin_or_a_named_tag_that_is_unsigned_is_refused(site: Site, keys: Keys) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", branch="feature")
    site.config.update(verify_cfg(keys))
    named = site.cli("deploy", v2.sha_tag)  # an operator: refused, nothing quarantined
    assert named.returncode == 2 and "has no signature (yet)" in named.stderr, named.stderr
    assert site.status()["quarantined"] == [] and not engine_has(site, v2)
    v3 = push(site, "v3", branch="feature")  # the daemon following a pin waits, then refuses
    agent = app.build_agent(site.settings(PIN=v3.sha_tag, VERIFY_GRACE="0.001"))
    try:
        seen = agent.poll_once()  # its first sighting starts the grace
        first, second = agent.poll_once(), agent.poll_once()
    finally:
        agent.close()
    assert seen.outcome == "waiting", seen
    assert (first.outcome, first.exit_code) == ("untrusted", 1), first
    assert first.reason.startswith("signature: missing")
    assert second.outcome == "quarantined"  # waits for another pin or a signature
    assert site.running_digest() == v1.digest and not engine_has(site, v3)


def _copy_other_digests_signature(site: Site, keys: Keys, img: AppImage) -> None:
    other = push(site, "v9", branch="feature")
    keys.sign(other)
    raw = site.bed.raw
    body, media_type, _ = raw.get_manifest(site.repo, sig_tag(other.digest))
    raw.put_manifest(site.repo, sig_tag(img.digest), body, media_type)


def _change_one_byte_of_the_payload(site: Site, keys: Keys, img: AppImage) -> None:
    keys.sign(img)
    raw = site.bed.raw
    body, media_type, _ = raw.get_manifest(site.repo, sig_tag(img.digest))
    manifest = json.loads(body)
    layer = manifest["layers"][0]
    payload = raw.get_blob(site.repo, layer["digest"])
    at = payload.index(b"refs/heads/main") + len(b"refs/heads/mai")
    changed = payload[:at] + b"m" + payload[at + 1:]  # main -> maim: still JSON
    layer["digest"] = raw.put_blob(site.repo, changed)
    raw.put_manifest(site.repo, sig_tag(img.digest), json.dumps(manifest).encode(),
                     media_type)


@pytest.mark.parametrize(("case", "why"), [
    ("another_key", "no configured key verifies"),
    ("another_digests_signature", "it signs another digest"),
    ("payload_byte_changed", "no configured key verifies"),
    ("annotation_absent", "annotation ref=refs/heads/main required, it has no ref"),
], ids=lambda v: v if " " not in v else "")
def test_what_is_refused(site: Site, keys: Keys, case: str, why: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    if case == "another_key":
        keys.sign(v2, keys.other_key)
    elif case == "another_digests_signature":
        _copy_other_digests_signature(site, keys, v2)
    elif case == "payload_byte_changed":
        _change_one_byte_of_the_payload(site, keys, v2)
    else:
        keys.sign(v2, annotations={"commit": v2.revision})
    site.config.update(verify_cfg(keys))
    assert_refused(site, v2, v1, site.cli("deploy"), why)


def test_key_rotation_two_keys_either_signature_accepted(site: Site, keys: Keys) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    site.config.update(verify_cfg(keys, keys.ci_pub, keys.other_pub))
    v2 = push(site, "v2")
    keys.sign(v2, keys.ci_key)  # the old key, still configured
    p = site.cli("deploy")
    assert p.returncode == 0 and site.running_digest() == v2.digest, p.stderr
    v3 = push(site, "v3")
    keys.sign(v3, keys.other_key)  # the new key
    p = site.cli("deploy")
    assert p.returncode == 0 and site.running_digest() == v3.digest, p.stderr
    check = site.cli("check")
    assert f"signature: valid (key {keys.other_pub})" in check.stdout, check.stdout


def test_idle_polls_stay_one_request_with_verification_on(site: Site, keys: Keys) -> None:
    """Counted twice: the agent's own counter and what the registry logged as served."""
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    keys.sign(v2)
    agent = app.build_agent(site.settings(**verify_cfg(keys)))
    repo = site.repo
    try:
        reg: Any = agent.registry
        reg.track_digest("main")  # the pull token is cached, as after any poll
        before, log = reg.requests, AccessLog()
        check = agent.signatures.verify(Release(v2.sha_tag, Digest(v2.digest)))  # type: ignore[union-attr]
        cost, served = reg.requests - before, log.served(repo)
        assert check.valid and cost == 2, cost  # the .sig manifest + one payload blob
        assert [(m, u.split("/")[-2], st) for m, u, st in served] == [
            ("GET", "manifests", 200), ("GET", "blobs", 200)], served
        assert served[0][1] == f"/v2/{repo}/manifests/{sig_tag(v2.digest)}"
        assert agent.poll_once().outcome == "deployed"
        idle, log = [], AccessLog()
        for _ in range(5):
            before = reg.requests
            assert agent.poll_once().outcome == "up_to_date"
            idle.append(reg.requests - before)
        assert idle == [1] * 5, idle
        assert log.served(repo) == [("HEAD", f"/v2/{repo}/manifests/main", 200)] * 5
    finally:
        agent.close()
    print(f"verification of a new candidate: {cost} requests ({served}); idle polls: {idle}")
