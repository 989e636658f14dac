"""Keyless verification (issue 29): ``KeylessVerifier`` over the real registry adapter and a
ghcr.io look-alike (``FakeGhcr``), with Sigstore bundles made by the test bed's local Sigstore
(testbed/sigstore_standin.py) and checked by the real sigstore-python against its trusted
root, all offline. Each refusal must name what differs; registry garbage must end in a
one-line ``invalid``, never a traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed import sigstore_standin as ss
from testbed.sigstore_standin import Proof, SigstoreStandin, WorkflowIdentity
from tests.unit.fakes import FakeHealth, FakeRegistry, FakeRuntime, Sink, StepClock, release
from tests.unit.fakes import digest as numbered
from tests.unit.test_idle_imports import imports_with
from tests.unit.test_registry import BASE, REPO, FakeGhcr, sha
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.state.store import Store
from twilight_agent.adapters.verify import keyless_root
from twilight_agent.adapters.verify.keyless import KeylessVerifier
from twilight_agent.adapters.verify.keyless_root import FileRoot, PublicGoodRoot
from twilight_agent.app import build_agent, build_verifier
from twilight_agent.core import keyless as kl
from twilight_agent.core import registry_rules as rr
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.signatures import referrers_tag, sig_tag
from twilight_agent.errors import RegistryError, RegistryUnavailable
from twilight_agent.settings import Settings

pytestmark = pytest.mark.usefixtures("offline")  # no socket leaves: tests/unit/conftest.py

REFERENCE = f"ghcr.io/{REPO}"
MAIN = WorkflowIdentity()
IDENTITY = MAIN.san
HOURS_AGO = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)
EMPTY = b"{}"


@pytest.fixture(scope="module")
def root_file(standin: SigstoreStandin, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standin.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")


@pytest.fixture
def fake() -> FakeGhcr:
    return FakeGhcr()


@pytest.fixture
def verifier(fake: FakeGhcr, root_file: Path, tmp_path: Path,
             ) -> Iterator[Callable[..., KeylessVerifier]]:
    reg = HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake), clock=StepClock())

    def build(identity: str = IDENTITY, issuer: str = kl.GITHUB_ISSUER) -> KeylessVerifier:
        return KeylessVerifier(reg, kl.IdentityRule(identity).check(), issuer, REFERENCE,
                               trusted_root=root_file, state_dir=tmp_path)
    yield build
    reg.close()


def candidate(fake: FakeGhcr, revision: str | None = None, labels: bool = True) -> Release:
    digest, rev, _, _ = fake.image("main", revision=revision or MAIN.sha, labels=labels)
    return Release("main", Digest(digest), rev if labels else None)


def attach(fake: FakeGhcr, digest: str, bundle: dict[str, Any] | bytes, *,
           api: bool = False, payload: bytes | None = None, size: int | None = None,
           predicate: str | None = None) -> None:
    """Attach ``bundle`` to ``digest`` as ``actions/attest-build-provenance`` pushes it: an
    OCI manifest with the bundle as its layer and the image as its subject, listed by the
    referrers API (``api``) or the ``sha256-<hex>`` tag schema."""
    raw = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    fake.blobs[sha(raw)] = raw
    fake.blobs[sha(EMPTY)] = EMPTY
    layers = [{"mediaType": kl.BUNDLE_V03, "digest": sha(raw), "size": size or len(raw)}]
    if payload is not None:
        fake.blobs[sha(payload)] = payload
        layers.append({"mediaType": kl.SIMPLE_SIGNING, "digest": sha(payload),
                       "size": len(payload)})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": rr.OCI_MANIFEST, "artifactType": kl.BUNDLE_V03,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(EMPTY),
                   "size": 2}, "layers": layers,
        "subject": {"mediaType": rr.OCI_MANIFEST, "digest": digest, "size": 1}}).encode()
    fake.manifests[sha(manifest)] = (manifest, rr.OCI_MANIFEST)
    sbom = {"mediaType": rr.OCI_MANIFEST, "digest": fake.image()[0], "size": 1,
            "artifactType": "application/spdx+json"}
    index = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_INDEX, "manifests": [
        sbom, {"mediaType": rr.OCI_MANIFEST, "digest": sha(manifest), "size": len(manifest),
               "artifactType": kl.BUNDLE_V03, "annotations": {
                   "dev.sigstore.bundle.content": "dsse-envelope",
                   kl.PREDICATE_ANNOTATION: predicate or kl.SLSA_V1}}]}).encode()
    if api:
        fake.hook = lambda r: httpx.Response(200, headers={"content-type": rr.OCI_INDEX},
                                             content=index) if "/referrers/" in r.url.path \
            and r.headers.get("authorization") else None
    else:
        fake.put(referrers_tag(digest), index, rr.OCI_INDEX)


# ------------------------------------------------------------------------ what verifies
@pytest.mark.parametrize("api", [True, False], ids=["referrers api", "tag schema"])
def test_provenance_from_the_main_workflow_is_valid(
        fake: FakeGhcr, standin: SigstoreStandin, verifier: Callable[..., KeylessVerifier],
        api: bool) -> None:
    rel = candidate(fake)
    bundle = standin.provenance_bundle(rel.digest, MAIN, image=REFERENCE)
    attach(fake, rel.digest, bundle, api=api)
    fake.requests.clear()
    check = verifier().verify(rel)
    assert check.valid, check.describe()
    assert check.describe() == f"valid (identity {IDENTITY})"
    # The referrers (API, else tag schema), the bundle's manifest, its blob: nothing of
    # the image itself is fetched.
    paths = [r.url.path.removeprefix(f"/v2/{REPO}/") for r in fake.requests
             if r.url.host == "ghcr.io" and r.url.path != "/token"]
    asked = list(dict.fromkeys(paths))  # the first try of each was answered 401
    assert asked[0] == f"referrers/{rel.digest}"
    assert asked[1:-2] == ([] if api else [f"manifests/{referrers_tag(rel.digest)}"])
    assert asked[-1] == f"blobs/{sha(json.dumps(bundle).encode())}"
    assert [p for p in asked if p.startswith("blobs/")] == asked[-1:]


@pytest.mark.parametrize("proof", [Proof(log="v2", timestamp=True),
                                   Proof(signed_at=HOURS_AGO)], ids=["rekor v2 + tsa", "old"])
def test_other_proofs_of_time_verify(fake: FakeGhcr, standin: SigstoreStandin,
                                     verifier: Callable[..., KeylessVerifier],
                                     proof: Proof) -> None:
    rel = candidate(fake)
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, MAIN, proof))
    assert verifier().verify(rel).valid


def test_a_cosign_keyless_signature_verifies_with_or_without_its_payload_beside(
        fake: FakeGhcr, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    written = kl.cosign_payload(rel.digest, REFERENCE)  # cosign's own bytes, rebuilt
    attach(fake, rel.digest, standin.message_bundle(written, MAIN))
    assert verifier().verify(rel).valid
    beside = ss.simple_signing_payload(rel.digest, image=REFERENCE)  # other spacing
    attach(fake, rel.digest, standin.message_bundle(beside, MAIN), payload=beside)
    assert verifier().verify(rel).valid


def test_a_pattern_identity_matches_in_full(fake: FakeGhcr, standin: SigstoreStandin,
                                           verifier: Callable[..., KeylessVerifier]) -> None:
    pattern = r"^https://github\.com/OWNER/REPO/\.github/workflows/[a-z-]+\.yml@refs/heads/main$"
    rel = candidate(fake)
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, MAIN))
    assert verifier(pattern).verify(rel).valid
    feature = dataclasses.replace(MAIN, ref="refs/heads/feature")
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, feature))
    check = verifier(pattern).verify(rel)
    assert check.status == "invalid"
    assert check.detail == (f"identity {feature.san!r} does not match "
                            "TWILIGHT_VERIFY_IDENTITY")
    assert not kl.IdentityRule(pattern).matches(MAIN.san + "x")


# ------------------------------------------------------------------------ what is refused
def other(**claims: str) -> WorkflowIdentity:
    return dataclasses.replace(MAIN, **claims)


REFUSED = {
    "a feature branch": (other(ref="refs/heads/feature"), Proof(),
                         "GitHubWorkflowRef does not match (got 'refs/heads/feature', "
                         "expected 'refs/heads/main')"),
    "another repository": (other(repository="OTHER/REPO"), Proof(),
                           "GitHubWorkflowRepository does not match (got 'OTHER/REPO', "
                           "expected 'OWNER/REPO')"),
    "another issuer": (other(issuer="https://issuer.other.test"), Proof(),
                       "OIDCIssuer does not match (got 'https://issuer.other.test'"),
    "a commit that is not the revision label": (
        other(sha="f" * 40), Proof(),
        f"GitHubWorkflowSHA does not match (got '{'f' * 40}', expected '{MAIN.sha}')"),
    "an expired certificate with a later log time": (
        MAIN, Proof(signed_at=HOURS_AGO, proven_at=dt.datetime.now(dt.timezone.utc)),
        "cert is not valid at validation time"),
    "an expired certificate with a later timestamp": (
        MAIN, Proof(log="v2", timestamp=True, signed_at=HOURS_AGO),
        "cert is not valid at validation time"),
    "a timestamp but no log entry (a private repository)": (
        MAIN, Proof(log=None, timestamp=True),
        "expected exactly one log entry in bundle (a timestamp but no transparency-log "
        "entry, as GitHub's private-repository attestations are"),
}


@pytest.mark.parametrize(("who", "proof", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_naming_what_differs(fake: FakeGhcr, standin: SigstoreStandin,
                                     verifier: Callable[..., KeylessVerifier],
                                     who: WorkflowIdentity, proof: Proof, reason: str) -> None:
    rel = candidate(fake)
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, who, proof))
    check = verifier().verify(rel)
    assert check.status == "invalid"
    assert reason in check.detail, check.detail
    assert "\n" not in check.detail


def test_a_timestamp_from_a_tsa_outside_the_root_is_no_proof(
        fake: FakeGhcr, standin: SigstoreStandin, stranger: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    bundle = standin.provenance_bundle(rel.digest, MAIN,
                                       Proof(log="v2", timestamp=True, tsa=stranger))
    attach(fake, rel.digest, bundle)
    assert verifier().verify(rel).detail == "not enough sources of verified time"


def test_a_tampered_payload_is_refused(fake: FakeGhcr, standin: SigstoreStandin,
                                       verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    bundle = standin.provenance_bundle("sha256:" + "00" * 32, MAIN)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = rel.digest.removeprefix("sha256:")
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    attach(fake, rel.digest, bundle)
    assert verifier().verify(rel).detail == "DSSE: invalid signature"


def test_provenance_of_another_digest_is_refused(
        fake: FakeGhcr, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    attach(fake, rel.digest, standin.provenance_bundle("sha256:" + "ab" * 32, MAIN))
    assert verifier().verify(rel).detail == (
        f"signed by {IDENTITY}, but its subject is another digest (sha256:abababababab)")


def test_another_predicate_type_is_refused(
        fake: FakeGhcr, standin: SigstoreStandin, verifier: Callable[..., KeylessVerifier],
        monkeypatch: pytest.MonkeyPatch) -> None:
    rel = candidate(fake)
    made = ss.provenance_statement

    def sbom(*args: Any, **kw: Any) -> bytes:
        doc = json.loads(made(*args, **kw))
        return json.dumps({**doc, "predicateType": "https://spdx.dev/Document"}).encode()
    monkeypatch.setattr(ss, "provenance_statement", sbom)
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, MAIN))
    assert verifier().verify(rel).detail == (
        f"signed by {IDENTITY}, but the predicate type is 'https://spdx.dev/Document', "
        f"not '{kl.SLSA_V1}'")


def test_an_attestation_annotated_as_another_kind_is_not_read(
        fake: FakeGhcr, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    """An SBOM attested before the provenance: the build waits, it is not refused."""
    rel = candidate(fake)
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, MAIN),
           predicate="https://spdx.dev/Document")
    assert verifier().verify(rel).status == "missing"


def test_a_message_signature_over_another_digest_is_refused(
        fake: FakeGhcr, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    payload = kl.cosign_payload("sha256:" + "00" * 32, REFERENCE)
    attach(fake, rel.digest, standin.message_bundle(payload, MAIN))
    assert verifier().verify(rel).detail == "Bundle message digest mismatch"
    attach(fake, rel.digest, standin.message_bundle(payload, MAIN), payload=payload)
    assert "it signs another digest (sha256:0000" in verifier().verify(rel).detail


def test_another_ca_and_an_image_without_its_revision_are_refused(
        fake: FakeGhcr, stranger: SigstoreStandin, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    attach(fake, rel.digest, stranger.provenance_bundle(rel.digest, MAIN))
    assert "failed to build timestamp certificate chain" in verifier().verify(rel).detail
    bare = candidate(fake, labels=False)
    attach(fake, bare.digest, standin.provenance_bundle(bare.digest, MAIN))
    assert verifier().verify(bare).detail == ("the image has no org.opencontainers.image."
                                              "revision label to match the signed commit "
                                              "against")


def test_a_rollback_known_by_its_digest_alone_is_matched_against_its_label(
        fake: FakeGhcr, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    """``rollback`` takes its target from the history, without a revision: the image's
    label is read, so the signed commit is still checked against it."""
    rel = candidate(fake)
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, MAIN))
    by_digest = Release("sha-0123456", rel.digest)
    assert verifier().verify(by_digest).valid
    attach(fake, rel.digest, standin.provenance_bundle(rel.digest, other(sha="f" * 40)))
    assert "GitHubWorkflowSHA does not match" in verifier().verify(by_digest).detail


# ------------------------------------------------------------------------ missing, garbage
def test_no_bundle_is_missing(fake: FakeGhcr, verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    check = verifier().verify(rel)
    assert check.status == "missing"
    assert check.detail == f"no Sigstore bundle refers to {rel.digest.short} in {REFERENCE}"



def test_a_cosign_2_keyless_sig_is_named_and_waits(
        fake: FakeGhcr, verifier: Callable[..., KeylessVerifier]) -> None:
    """cosign 2 keyless without --new-bundle-format: a ``.sig`` whose layer carries the
    certificate (and the log entry) as annotations, no Sigstore bundle. Not a proof; the
    build waits (a bundle may still come) and the reason says what to change in CI."""
    rel = candidate(fake)
    body = b'{"critical": {}}'
    fake.blobs[sha(body)] = body
    layer = {"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
             "digest": sha(body), "size": len(body),
             "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ==",
                             kl.CERTIFICATE_ANNOTATION: "-----BEGIN CERTIFICATE-----",
                             "dev.sigstore.cosign/bundle": "{}"}}
    doc = {"schemaVersion": 2, "mediaType": rr.OCI_MANIFEST, "layers": [layer],
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": "sha256:" + "0" * 64, "size": 0}}
    fake.put(sig_tag(str(rel.digest)), json.dumps(doc).encode(), rr.OCI_MANIFEST)
    check = verifier().verify(rel)
    assert check.status == "missing"
    assert "old .sig layout" in check.detail and "--new-bundle-format" in check.detail
    assert not kl.is_legacy_keyless({"layers": [{"annotations": {"x": "y"}}]})

GARBAGE: dict[str, tuple[bytes, int | None, str]] = {
    "not JSON": (b"\x00garbage", None, "not a usable Sigstore bundle: "),
    "JSON but no bundle": (b'{"mediaType": "x"}', None, "not a usable Sigstore bundle: "),
    "declared over the cap": (b"{}", kl.MAX_BUNDLE + 1,
                              f"the bundle is {kl.MAX_BUNDLE + 1} bytes, over the "),
    "larger than declared": (b"{" + b" " * (kl.MAX_BUNDLE + 10) + b"}", 100,
                             "over the 262144 cap"),
}


@pytest.mark.parametrize(("raw", "size", "reason"), GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_invalid_in_one_line(fake: FakeGhcr, verifier: Callable[..., KeylessVerifier],
                                        raw: bytes, size: int | None, reason: str) -> None:
    rel = candidate(fake)
    attach(fake, rel.digest, raw, size=size)
    check = verifier().verify(rel)
    assert check.status == "invalid"
    assert check.detail.startswith(reason) or reason in check.detail, check.detail
    assert "\n" not in check.detail and len(check.detail) < 300


def test_a_bundle_blob_that_is_not_its_digest_is_invalid(
        fake: FakeGhcr, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    rel = candidate(fake)
    bundle = json.dumps(standin.provenance_bundle(rel.digest, MAIN)).encode()
    attach(fake, rel.digest, bundle)
    fake.blobs[sha(bundle)] = bundle + b" "
    assert "does not match" in verifier().verify(rel).detail


# ------------------------------------------------------------------------ trust root
def test_the_public_good_root_keeps_its_last_good_copy(
        standin: SigstoreStandin, tmp_path: Path) -> None:
    text = json.dumps(standin.trusted_root())
    now = StepClock(0.0)
    answers: list[Callable[[], str]] = [lambda: text]

    def fetch() -> str:
        return answers[-1]()

    root = PublicGoodRoot(tmp_path, fetch, clock=now)
    assert root.load() is not None and root.cache.read_text() == text
    answers.append(lambda: (_ for _ in ()).throw(OSError("tuf unreachable")))
    now.sleep(2 * 86400)
    assert root.load() is not None  # TUF down: the last good copy, not a refusal
    answers.append(lambda: '{"mediaType": "garbage"}')
    again = PublicGoodRoot(tmp_path, fetch)
    assert again.load() is not None and again.cache.read_text() == text  # not loosened
    with pytest.raises(RegistryUnavailable, match="TUF unreachable and no copy"):
        PublicGoodRoot(tmp_path / "fresh", fetch).load()


def test_a_hung_tuf_is_given_up_on_in_time(standin: SigstoreStandin, tmp_path: Path) -> None:
    text = json.dumps(standin.trusted_root())
    PublicGoodRoot(tmp_path, lambda: text).load()  # a first copy kept
    release = threading.Event()

    def hang() -> str:
        release.wait(10)
        return text
    start = time.monotonic()
    assert PublicGoodRoot(tmp_path, hang, deadline=0.2).load() is not None  # the kept copy
    assert time.monotonic() - start < 5
    release.set()


def test_the_tuf_client_keeps_its_metadata_under_the_state_dir(
        standin: SigstoreStandin, tmp_path: Path) -> None:
    """python-tuf's Updater (faked: no test reaches the internet) is started from the
    root.json sigstore-python ships and keeps everything under the given directory."""
    seen: dict[str, Any] = {}
    target = tmp_path / "served.json"
    target.write_text(json.dumps(standin.trusted_root()))

    class Updater:
        def __init__(self, **kw: Any) -> None:
            seen.update(kw)

        def refresh(self) -> None:
            seen["refreshed"] = True

        def get_targetinfo(self, name: str) -> str:
            return name

        def find_cached_target(self, info: str) -> str | None:
            return None

        def download_target(self, info: str) -> str:
            return str(target)
    fetch = keyless_root.tuf_fetch(tmp_path / "sigstore" / "tuf", Updater)
    root = PublicGoodRoot(tmp_path, fetch)
    assert root.load() is not None and seen["refreshed"]
    assert seen["metadata_dir"] == str(tmp_path / "sigstore" / "tuf" / "metadata")
    assert seen["target_dir"] == str(tmp_path / "sigstore" / "tuf" / "targets")
    assert seen["metadata_base_url"] == "https://tuf-repo-cdn.sigstore.dev"
    assert json.loads(seen["bootstrap"])["signed"]["_type"] == "root"
    assert root.cache.read_text() == target.read_text()


def test_a_trusted_root_file_that_goes_bad_decides_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "root.json"
    bad.write_text("{")
    with pytest.raises(RegistryUnavailable, match=f"Sigstore trusted root {bad}"):
        FileRoot(bad).load()


# ------------------------------------------------------------------------ settings, wiring
def agent_settings(**env: Any) -> Settings:
    return Settings(image=REFERENCE, container="app", **env)


def test_settings_refuse_with_one_line(tmp_path: Path, root_file: Path) -> None:
    key = tmp_path / "cosign.pub"
    (tmp_path / "nope.json").write_text('{"mediaType": "x"}')
    cases = {
        "exclude each other": {"verify_identity": IDENTITY, "verify_key": str(key)},
        "is not a GitHub workflow identity": {"verify_identity": "alice@example.com"},
        "not a regular expression": {"verify_identity": "^https://github.com/(x$"},
        "must be an https:// URL": {"verify_identity": IDENTITY, "verify_issuer": "http://x"},
        "needs TWILIGHT_VERIFY_IDENTITY": {"verify_trusted_root": str(root_file)},
        "cannot read": {"verify_identity": IDENTITY,
                        "verify_trusted_root": str(tmp_path / "absent.json")},
        "is not a Sigstore trusted root": {"verify_identity": IDENTITY,
                                           "verify_trusted_root": str(tmp_path / "nope.json")},
    }
    for reason, env in cases.items():
        with pytest.raises(ValueError, match=reason) as info:
            agent_settings(**env)
        assert len(str(info.value).splitlines()) <= 4  # pydantic's frame around one line


def test_without_sigstore_installed_an_identity_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sigstore" else real(name, *a))
    with pytest.raises(ValueError) as info:
        agent_settings(verify_identity=IDENTITY)
    said = str(info.value)
    assert "deploy/install.sh --keyless" in said and "requirements-keyless.txt" in said
    assert "pip install 'twilight-agent[keyless]'" in said  # a host not installed by it


def test_build_verifier_wires_keyless_and_loads_no_sigstore(tmp_path: Path,
                                                           root_file: Path) -> None:
    good = agent_settings(verify_identity=IDENTITY, verify_trusted_root=str(root_file),
                    state_dir=tmp_path)
    assert good.verifies and good.verify_issuer == kl.GITHUB_ISSUER
    assert isinstance(build_verifier(good, object()), KeylessVerifier)
    loaded = imports_with(tmp_path, f"TWILIGHT_VERIFY_IDENTITY={IDENTITY}\n"
                          f"TWILIGHT_VERIFY_TRUSTED_ROOT={root_file}\n")
    assert "sigstore" not in loaded and "sigstore_models" not in loaded
    assert "twilight_agent" in loaded


def test_loading_the_checker_brings_sigstore() -> None:
    probe = ("import sys; from twilight_agent.lazy import lazy_module; "
             "m = lazy_module('twilight_agent.adapters.verify.keyless_check'); "
             "before = 'sigstore' in sys.modules; m.BundleChecker; "
             "print(before, 'sigstore' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "True"]


# ------------------------------------------------------------------------ any garbage
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=8), kids, max_size=3), max_leaves=8)
ZERO = "sha256:" + "0" * 64
LAYER = st.fixed_dictionaries({}, optional={
    "mediaType": st.sampled_from([*kl.BUNDLE_TYPES, kl.SIMPLE_SIGNING]) | st.text(max_size=5),
    "digest": st.just(ZERO) | st.text(max_size=70) | JSON,
    "size": st.integers(-5, 10**6) | st.booleans() | JSON})
REFERRER = st.fixed_dictionaries({}, optional={
    "artifactType": st.sampled_from(kl.BUNDLE_TYPES) | st.text(max_size=10),
    "digest": st.just(ZERO) | st.text(max_size=70) | JSON})


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(entries=st.lists(REFERRER | JSON, max_size=3) | JSON,
       layers=st.lists(LAYER | JSON, max_size=3) | JSON,
       body=st.binary(max_size=200) | JSON.map(lambda d: json.dumps(d).encode()))
def test_any_referrer_ends_in_a_verdict_or_a_typed_error(
        root_file: Path, tmp_path: Path, entries: Any, layers: Any, body: bytes) -> None:
    fake = FakeGhcr()
    rel = candidate(fake)
    referred = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_MANIFEST,
                           "layers": layers}).encode()
    fake.manifests[ZERO] = (referred, rr.OCI_MANIFEST)
    fake.blobs[ZERO] = body  # served under the zero digest: a digest mismatch, garbage
    fake.blobs[sha(body)] = body
    index = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_INDEX,
                        "manifests": entries}).encode()
    fake.put(referrers_tag(rel.digest), index, rr.OCI_INDEX)
    with HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake),
                      clock=StepClock()) as reg:
        try:
            check = KeylessVerifier(reg, kl.IdentityRule(IDENTITY), kl.GITHUB_ISSUER,
                                    REFERENCE, trusted_root=root_file,
                                    state_dir=tmp_path).verify(rel)
        except RegistryError:
            return
    assert check.status in ("missing", "invalid")
    assert "\n" not in check.detail


@pytest.fixture(scope="module")
def one_bundle(standin: SigstoreStandin) -> bytes:
    """One bundle for the candidate ``candidate()`` publishes (its digest is fixed)."""
    rel = candidate(FakeGhcr())
    return json.dumps(standin.provenance_bundle(rel.digest, MAIN)).encode()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1), byte=st.integers(0, 255))
def test_any_damaged_bundle_is_judged_in_one_line(
        one_bundle: bytes, root_file: Path, tmp_path: Path, where: float, byte: int) -> None:
    fake = FakeGhcr()
    rel = candidate(fake)
    raw = bytearray(one_bundle)
    raw[int(where * (len(raw) - 1))] = byte
    attach(fake, rel.digest, bytes(raw))
    with HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake),
                      clock=StepClock()) as reg:
        check = KeylessVerifier(reg, kl.IdentityRule(IDENTITY), kl.GITHUB_ISSUER, REFERENCE,
                                trusted_root=root_file, state_dir=tmp_path).verify(rel)
    assert check.status in ("valid", "invalid")  # valid: the byte changed nothing signed
    assert "\n" not in check.detail and len(check.detail) < 400


# ------------------------------------------------------------------------ the agent
def test_the_agent_quarantines_a_feature_build_and_deploys_mains(
        tmp_path: Path, fake: FakeGhcr, standin: SigstoreStandin,
        verifier: Callable[..., KeylessVerifier]) -> None:
    """The whole path with the real verifier: refused before any pull with the claim named,
    then the next build, attested by main, deployed and recorded as verified by it."""
    old = release(1)
    feature = Release("sha-0123456", numbered(2), MAIN.sha)
    attach(fake, feature.digest, standin.provenance_bundle(
        feature.digest, other(ref="refs/heads/feature")))
    s = Settings(image=REFERENCE, container="app", state_dir=tmp_path / "st", watch=0)
    runtime, store, reg = FakeRuntime("app", old), Store(s.state_dir), FakeRegistry(feature)
    agent = build_agent(s, [Sink()], registry=reg, runtime=runtime,
                        health=FakeHealth(runtime), store=store, signatures=verifier())
    report = agent.deploy()
    assert (report.outcome, report.exit_code) == ("untrusted", 1)
    assert report.reason == ("signature: invalid (GitHubWorkflowRef does not match (got "
                             "'refs/heads/feature', expected 'refs/heads/main'))")
    assert "pull" not in runtime.calls and runtime.running_digest() == old.digest
    (q,) = store.quarantined()
    assert q.digest == feature.digest
    main = Release("sha-0123456", numbered(3), MAIN.sha)
    attach(fake, main.digest, standin.provenance_bundle(main.digest, MAIN))
    reg.track = main
    reg.tags[main.tag] = main
    assert agent.poll_once().outcome == "deployed"
    assert runtime.running_digest() == main.digest
    assert store.is_verified(str(main.digest))
