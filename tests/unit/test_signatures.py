"""Cosign signatures (issue 16) against a ghcr.io look-alike: the ``.sig`` tag scheme, the
keys cosign makes, the payload's claims, required annotations, and a property test that
any signature manifest or payload ends in a verdict or a typed registry error.

The real cosign signs on the bed registry in tests/integration/test_signatures.py; here the
signatures are made with ``cryptography`` the way cosign makes them (DER ECDSA over the
payload bytes, SHA-256), for what the registry cannot be made to serve.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fakes import FakeHealth, FakeRegistry, FakeRuntime, Sink, StepClock, release
from tests.unit.test_registry import BASE, REPO, FakeGhcr, sha
from twilight_agent.adapters.notify.webhook import message_kind
from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.state.store import Store
from twilight_agent.adapters.verify.cosign import CosignVerifier
from twilight_agent.adapters.verify.keys import VerifyKey, load_key, load_keys
from twilight_agent.app import build_agent
from twilight_agent.commands.check import CheckReport, render
from twilight_agent.core import policy
from twilight_agent.core import registry_rules as rr
from twilight_agent.core import signatures as sg
from twilight_agent.core.models import Digest, Release
from twilight_agent.errors import ConfigError, RegistryError
from twilight_agent.settings import Settings, load_settings

REFERENCE = f"ghcr.io/{REPO}"


def pem(private: Any) -> bytes:
    return bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def der_sign(private: Any, data: bytes) -> bytes:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return bytes(private.sign(data, ec.ECDSA(hashes.SHA256())))
    if isinstance(private, rsa.RSAPrivateKey):
        return bytes(private.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    return bytes(private.sign(data))


def payload(digest: str, reference: str = REFERENCE, **optional: str) -> bytes:
    """The simple-signing payload as cosign 2.x writes it."""
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": sg.PAYLOAD_TYPE},
                       "optional": optional or None}, separators=(",", ":")).encode()


def sig_manifest(layers: list[dict[str, Any]]) -> bytes:
    config = b"{}"
    return json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": sha(config), "size": len(config)},
                       "layers": layers}).encode()


class Signer:
    """Publishes ``.sig`` manifests into a FakeGhcr the way ``cosign sign`` does."""

    def __init__(self, fake: FakeGhcr) -> None:
        self.fake = fake

    def layer(self, private: Any, body: bytes, signature: bytes | None = None) -> dict[str, Any]:
        self.fake.blobs[sha(body)] = body
        sig = signature if signature is not None else der_sign(private, body)
        return {"mediaType": sg.SIMPLE_SIGNING, "digest": sha(body), "size": len(body),
                "annotations": {sg.SIGNATURE_ANNOTATION: base64.b64encode(sig).decode()}}

    def publish(self, digest: str, layers: list[dict[str, Any]]) -> None:
        self.fake.put(sg.sig_tag(digest), sig_manifest(layers), rr.OCI_MANIFEST)

    def sign(self, private: Any, digest: str, **kw: Any) -> bytes:
        body = payload(digest, **kw)
        self.publish(digest, [self.layer(private, body)])
        return body


@pytest.fixture
def fake() -> FakeGhcr:
    return FakeGhcr()


@pytest.fixture
def registry(fake: FakeGhcr) -> Iterator[HttpRegistry]:
    reg = HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake), clock=StepClock())
    yield reg
    reg.close()


CI = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def verifier(registry: HttpRegistry) -> Callable[..., CosignVerifier]:
    def build(*privates: Any, annotations: dict[str, str] | None = None) -> CosignVerifier:
        keys = [VerifyKey(f"key{i}.pub", p.public_key()) for i, p in enumerate(privates or (CI,))]
        return CosignVerifier(registry, keys, REFERENCE, annotations)
    return build


def candidate(fake: FakeGhcr) -> Release:
    return Release("sha-1234567", Digest(fake.image("main")[0]))


# ------------------------------------------------------------------------ verdicts
def test_signed_by_the_configured_key_is_valid_at_one_manifest_and_one_blob(
        fake: FakeGhcr, verifier: Callable[..., CosignVerifier]) -> None:
    rel = candidate(fake)
    Signer(fake).sign(CI, rel.digest, ref="refs/heads/main")
    v = verifier(annotations={"ref": "refs/heads/main"})
    before = len(fake.requests)
    check = v.verify(rel)
    assert (check.status, check.key) == ("valid", "key0.pub")
    assert check.describe() == "valid (key key0.pub)"
    sent = {(r.method, r.url.host, r.url.path) for r in fake.requests[before:]
            if r.url.path != "/token"}  # the first try (401) repeats after the token
    lay = json.loads(fake.manifests[sg.sig_tag(rel.digest)][0])["layers"][0]["digest"]
    assert {p for _, _, p in sent} == {f"/v2/{REPO}/manifests/{sg.sig_tag(rel.digest)}",
                                       f"/v2/{REPO}/blobs/{lay}",
                                       f"/ghcr1/blobs/sha256/{lay}"}  # ghcr's 307
    assert {m for m, _, _ in sent} == {"GET"}


def test_no_sig_tag_is_missing(fake: FakeGhcr, verifier: Callable[..., CosignVerifier]) -> None:
    check = verifier().verify(candidate(fake))
    assert check.status == "missing" and ".sig" in check.detail


@pytest.mark.parametrize(("case", "detail"), [
    ("other_key", "no configured key verifies"),
    ("other_digest", "another digest"),
    ("other_repository", "another repository"),
    ("no_annotation", "no ref"),
    ("wrong_annotation", "ref=refs/heads/dev"),
    ("tampered", "no configured key verifies"),
    ("not_base64", "no cosign signature"),
])
def test_what_is_refused(fake: FakeGhcr, verifier: Callable[..., CosignVerifier],
                         case: str, detail: str) -> None:
    rel, signer = candidate(fake), Signer(fake)
    good = {"ref": "refs/heads/main"}
    if case == "other_key":
        signer.sign(OTHER, rel.digest, **good)
    elif case == "other_digest":
        other = fake.image()[0]
        signer.publish(rel.digest, [signer.layer(CI, payload(other, **good))])
    elif case == "other_repository":
        signer.sign(CI, rel.digest, reference="ghcr.io/evil/app", **good)
    elif case == "no_annotation":
        signer.sign(CI, rel.digest)
    elif case == "wrong_annotation":
        signer.sign(CI, rel.digest, ref="refs/heads/dev")
    elif case == "tampered":  # one byte changed, the signature of the original kept
        body = payload(rel.digest, **good)
        evil = body.replace(b"refs/heads/main", b"refs/heads/maim")
        signer.publish(rel.digest, [signer.layer(CI, evil, der_sign(CI, body))])
    else:
        lay = signer.layer(CI, payload(rel.digest, **good))
        lay["annotations"][sg.SIGNATURE_ANNOTATION] = "***"
        signer.publish(rel.digest, [lay])
    check = verifier(annotations=good).verify(rel)
    assert check.status == "invalid" and detail in check.detail, check


def test_rotation_either_key_and_either_signature(
        fake: FakeGhcr, verifier: Callable[..., CosignVerifier]) -> None:
    rel, signer = candidate(fake), Signer(fake)
    body = payload(rel.digest)
    signer.publish(rel.digest, [signer.layer(OTHER, body), signer.layer(CI, body)])
    assert verifier(CI).verify(rel).valid  # second layer, second blob
    assert verifier(OTHER).verify(rel).key == "key0.pub"
    assert verifier(OTHER, CI).verify(rel).valid


@pytest.mark.parametrize("private", [
    ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048),
    ed25519.Ed25519PrivateKey.generate()], ids=["p384", "rsa", "ed25519"])
def test_the_other_key_kinds_cosign_signs_with(tmp_path: Path, private: Any,
                                               fake: FakeGhcr, registry: HttpRegistry) -> None:
    (tmp_path / "k.pub").write_bytes(pem(private))
    rel = candidate(fake)
    Signer(fake).sign(private, rel.digest)
    v = CosignVerifier(registry, load_keys([tmp_path / "k.pub"]), REFERENCE)
    assert v.verify(rel).valid



def test_a_rollback_known_by_its_digest_alone_is_matched_against_its_label(
        fake: FakeGhcr, verifier: Callable[..., CosignVerifier]) -> None:
    """``rollback`` builds its candidate from the history: no revision. A signature that
    carries ``commit=`` is then held against the image's revision label, read for it."""
    built = "ab" * 20
    digest, *_ = fake.image("old", revision=built)
    Signer(fake).sign(CI, digest, commit=built)
    assert not verifier().verify(Release("sha-1234567", Digest(digest))).valid  # other tag
    assert verifier().verify(Release("sha-ababab", Digest(digest))).valid
    other, *_ = fake.image("other", revision="cd" * 20)
    Signer(fake).sign(CI, other, commit=built)  # signed for another build's commit
    check = verifier().verify(Release("sha-ababab", Digest(other)))
    assert check.status == "invalid" and "revision label is cdcdcdcdcdcd" in check.detail

def test_the_payload_must_be_the_blob_it_claims(fake: FakeGhcr,
                                                verifier: Callable[..., CosignVerifier]) -> None:
    rel, signer = candidate(fake), Signer(fake)
    lay = signer.layer(CI, payload(rel.digest))
    fake.blobs[lay["digest"]] = payload(rel.digest) + b" "  # the registry serves other bytes
    signer.publish(rel.digest, [lay])
    with pytest.raises(RegistryError, match="does not match"):
        verifier().verify(rel)


def _referrer(fake: FakeGhcr, signer: Signer, digest: str, private: Any) -> dict[str, Any]:
    """A signature manifest as ``cosign sign --registry-referrers-mode=oci-1-1`` pushes it."""
    body = sig_manifest([signer.layer(private, payload(digest))])
    doc = {**json.loads(body), "subject": {"mediaType": rr.OCI_MANIFEST, "digest": digest,
                                           "size": 1}}
    raw = json.dumps(doc).encode()
    fake.manifests[sha(raw)] = (raw, rr.OCI_MANIFEST)
    return {"mediaType": rr.OCI_MANIFEST, "digest": sha(raw), "size": len(raw),
            "artifactType": sg.COSIGN_ARTIFACT}


@pytest.mark.parametrize("where", ["api", "tag_schema"])
def test_oci_referrers_when_there_is_no_sig_tag(fake: FakeGhcr, where: str,
                                                verifier: Callable[..., CosignVerifier]) -> None:
    rel, signer = candidate(fake), Signer(fake)
    other = {"mediaType": rr.OCI_MANIFEST, "digest": fake.image()[0], "size": 1,
             "artifactType": "application/spdx+json"}  # an SBOM: not a signature
    index = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_INDEX, "manifests": [
        other, _referrer(fake, signer, rel.digest, OTHER),
        _referrer(fake, signer, rel.digest, CI)]}).encode()
    if where == "api":
        fake.hook = lambda r: httpx.Response(200, headers={"content-type": rr.OCI_INDEX},
                                             content=index) if "/referrers/" in r.url.path \
            and r.headers.get("authorization") else None
    else:  # cosign's fallback on a registry without the API (the bed's)
        fake.put(sg.referrers_tag(rel.digest), index, rr.OCI_INDEX)
    assert verifier().verify(rel).valid
    assert verifier(ec.generate_private_key(ec.SECP256R1())).verify(rel).status == "invalid"


# ------------------------------------------------------------------------ keys, settings
def test_keys_load_and_refuse_with_one_line(tmp_path: Path) -> None:
    good = tmp_path / "cosign.pub"
    good.write_bytes(pem(CI))
    assert load_key(good).verifies(der_sign(CI, b"x"), b"x")
    private = tmp_path / "cosign.key"
    private.write_bytes(CI.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    junk = tmp_path / "junk.pub"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    for path, why in ((tmp_path / "absent.pub", "cannot read"), (private, "private key"),
                      (junk, "not a PEM public key")):
        with pytest.raises(ValueError, match=why):
            load_key(path)


def test_settings_validate_keys_and_annotations_at_load(tmp_path: Path) -> None:
    key = tmp_path / "cosign.pub"
    key.write_bytes(pem(CI))
    base = {"image": "ghcr.io/acme/app", "container": "app"}
    s = Settings(**base, verify_key=f"{key}, {key}", verify_annotations="ref=refs/heads/main")
    assert s.verify_key_paths == (key, key)
    assert s.required_annotations == {"ref": "refs/heads/main"}
    conf = tmp_path / "agent.env"
    for extra, why in ((f"TWILIGHT_VERIFY_KEY={tmp_path}/nope.pub", "TWILIGHT_VERIFY_KEY: "
                        "cannot read"),
                       (f"TWILIGHT_VERIFY_KEY={key}\nTWILIGHT_VERIFY_ANNOTATIONS=ref",
                        "TWILIGHT_VERIFY_ANNOTATIONS: 'ref' is not key=value"),
                       ("TWILIGHT_VERIFY_ANNOTATIONS=ref=x", "needs TWILIGHT_VERIFY_KEY")):
        conf.write_text(f"TWILIGHT_IMAGE=ghcr.io/acme/app\nTWILIGHT_CONTAINER=app\n{extra}\n")
        with pytest.raises(ConfigError, match=why) as info:
            load_settings(conf)
        assert "\n" not in str(info.value) and info.value.exit_code == 2


# ------------------------------------------------------------------------ the decision
def test_policy_an_invalid_signature_is_untrusted_a_valid_one_deploys() -> None:
    facts = policy.Facts(candidate=release(2), running=str(release(1).digest),
                         quarantined=frozenset())
    bad = policy.decide(policy.Facts(**{**facts.__dict__, "signature": sg.SignatureCheck(
        "invalid", "no configured key verifies the signature")}))
    assert bad.verdict is policy.Verdict.UNTRUSTED and bad.outcome.exit_code == 1
    assert bad.reason == "signature: invalid (no configured key verifies the signature)"
    ok = policy.decide(policy.Facts(**{**facts.__dict__, "signature": sg.SignatureCheck(
        "valid", key="k.pub")}))
    assert ok.verdict is policy.Verdict.DEPLOY


def test_policy_a_missing_signature_waits_out_its_grace_and_an_operator_is_refused() -> None:
    missing = sg.SignatureCheck("missing", "no sha256-….sig")
    facts = policy.Facts(candidate=release(2), running=str(release(1).digest),
                         quarantined=frozenset(), signature=missing)
    waiting = policy.decide(dataclasses.replace(facts, grace_left_s=600))
    assert waiting.verdict is policy.Verdict.UNSIGNED and waiting.outcome.exit_code == 0
    assert "waiting for a signature (600s of TWILIGHT_VERIFY_GRACE left)" in waiting.reason
    almost = policy.decide(dataclasses.replace(facts, grace_left_s=0.3))  # never "0s left"
    assert "(1s of TWILIGHT_VERIFY_GRACE left)" in almost.reason, almost.reason
    late = policy.decide(dataclasses.replace(facts, grace_left_s=0))
    assert late.verdict is policy.Verdict.UNTRUSTED and late.outcome.exit_code == 1
    assert late.reason == ("signature: missing (no sha256-….sig); still unsigned when "
                           "TWILIGHT_VERIFY_GRACE ran out")
    named = policy.decide(dataclasses.replace(facts, grace_left_s=600, explicit=True))
    assert named.verdict is policy.Verdict.REFUSED and "has no signature (yet)" in named.reason
    held = policy.decide(dataclasses.replace(facts, older=True))  # before any signature
    assert held.verdict is policy.Verdict.DOWNGRADE and "deploy sha-0000002" in held.reason
    assert policy.decide(dataclasses.replace(facts, older=True, explicit=True,
                                             grace_left_s=1)).verdict is policy.Verdict.REFUSED


def test_signed_facts_must_agree_with_the_build() -> None:
    rev = "a1b2c3d" + "e" * 33
    assert sg.build_mismatch(rev, rev, "sha-a1b2c3d") is None
    assert sg.build_mismatch(None, rev, "sha-a1b2c3d") is None
    assert sg.build_mismatch(rev, None, "main") is None
    assert "it signs commit ffffffffffff" in (sg.build_mismatch("f" * 40, rev, None) or "")
    assert "the tag sha-0000001 is not commit a1b2c3deeeee" in (
        sg.build_mismatch(None, rev, "sha-0000001") or "")
    assert "is not commit" in (sg.build_mismatch(rev, None, "sha-1111111") or "")


class FixedVerifier:
    def __init__(self, check: sg.SignatureCheck) -> None:
        self.check, self.calls = check, 0

    def verify(self, rel: Release) -> sg.SignatureCheck:
        self.calls += 1
        return self.check


def test_agent_refuses_quarantines_records_and_pulls_nothing(tmp_path: Path) -> None:
    old, new = release(1), release(2)
    s = Settings(image="ghcr.io/acme/app", container="app", state_dir=tmp_path / "st")
    runtime, sink, store = FakeRuntime("app", old), Sink(), Store(s.state_dir)
    verifier = FixedVerifier(sg.SignatureCheck("invalid", "no configured key verifies"))
    reg = FakeRegistry(new)
    agent = build_agent(s, [sink], registry=reg, runtime=runtime, health=FakeHealth(runtime),
                        store=store, signatures=verifier)
    report = agent.deploy()
    assert (report.outcome, report.exit_code) == ("untrusted", 1)
    assert report.reason == "signature: invalid (no configured key verifies)"
    assert str(new.digest) not in runtime.images and runtime.running_digest() == old.digest
    (q,) = store.quarantined()
    assert q.digest == new.digest and q.reason.startswith("signature: invalid")
    (row,) = store.history()
    assert (row.outcome, row.to_digest) == ("untrusted", new.digest)
    (done,) = sink.named("deploy_finished")
    assert done["outcome"] == "untrusted" and "signature" in done["reason"]
    finished = [e for e in sink.typed if e.name == "deploy_finished"]
    assert message_kind(finished[0]) == "untrusted"  # the webhook says why (its reason)
    assert [e.name for e in sink.typed].count("quarantined") == 1
    # The next poll: one HEAD, the quarantine answers, no verification.
    reg.calls.clear()
    assert agent.poll_once().outcome == "quarantined"
    assert reg.calls == ["head"] and verifier.calls == 1


def test_agent_verifies_only_a_candidate_to_deploy(tmp_path: Path) -> None:
    cur = release(1)
    s = Settings(image="ghcr.io/acme/app", container="app", state_dir=tmp_path / "st")
    runtime = FakeRuntime("app", cur)
    verifier = FixedVerifier(sg.SignatureCheck("valid", key="k.pub"))
    agent = build_agent(s, [], registry=FakeRegistry(cur), runtime=runtime,
                        health=FakeHealth(runtime), store=Store(s.state_dir),
                        signatures=verifier)
    assert agent.poll_once().outcome == "up_to_date"
    assert verifier.calls == 0


# ------------------------------------------------------------------------ properties
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)
LAYER = st.fixed_dictionaries({}, optional={
    "digest": st.sampled_from(["sha256:" + "0" * 64, "x"]) | st.text(max_size=80),
    "size": st.integers(-5, 10**6) | st.booleans() | st.text(max_size=3),
    "annotations": st.dictionaries(st.sampled_from([sg.SIGNATURE_ANNOTATION, "a"]),
                                   st.text(max_size=100) | st.binary(max_size=60).map(
                                       lambda b: base64.b64encode(b).decode()) | JSON,
                                   max_size=2) | JSON,
    "mediaType": st.text(max_size=20)})
MANIFEST = st.one_of(JSON, st.fixed_dictionaries(
    {"schemaVersion": st.just(2), "mediaType": st.just(rr.OCI_MANIFEST)},
    optional={"layers": st.lists(LAYER | JSON, max_size=4) | JSON}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=MANIFEST, body=st.binary(max_size=200))
def test_any_signature_manifest_ends_in_a_verdict_or_a_typed_error(doc: Any,
                                                                   body: bytes) -> None:
    fake = FakeGhcr()
    rel = candidate(fake)
    if isinstance(doc, dict) and isinstance(doc.get("layers"), list):
        for lay in doc["layers"]:
            if isinstance(lay, dict) and lay.get("digest") == "sha256:" + "0" * 64:
                fake.blobs[lay["digest"]] = body
    raw = json.dumps(doc).encode()
    fake.put(sg.sig_tag(rel.digest), raw, rr.OCI_MANIFEST)
    with HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake),
                      clock=StepClock()) as reg:
        try:
            check = CosignVerifier(reg, [VerifyKey("k", CI.public_key())], REFERENCE,
                                   {"ref": "x"}).verify(rel)
        except RegistryError:
            return
    assert check.status in ("missing", "invalid")


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | JSON.map(lambda d: json.dumps(d).encode()),
       annotations=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
def test_any_payload_is_judged_never_crashes(body: bytes, annotations: dict[str, str]) -> None:
    why = sg.payload_mismatch(body, "sha256:" + "1" * 64, REFERENCE, annotations)
    assert why is not None and "\n" not in why


@settings(max_examples=100, deadline=None)
@given(optional=st.dictionaries(st.text(max_size=8), JSON, max_size=3))
def test_signed_payloads_with_any_optional_section(optional: dict[str, Any]) -> None:
    digest = "sha256:" + "2" * 64
    body = json.dumps({"critical": {"identity": {"docker-reference": REFERENCE},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": sg.PAYLOAD_TYPE}, "optional": optional}).encode()
    why = sg.payload_mismatch(body, digest, REFERENCE, {"ref": "refs/heads/main"})
    assert (why is None) == (optional.get("ref") == "refs/heads/main")


def test_check_shows_the_signature_line() -> None:
    rep = CheckReport(None, None, "untrusted", "signature: missing (no sha256-….sig)", [], 0,
                      signature="missing (no sha256-….sig)")
    lines = render(rep).splitlines()
    assert lines[2] == "signature: missing (no sha256-….sig)"
    assert lines[3].startswith("decision:  untrusted: signature: missing")
    off = CheckReport(None, None, "deploy", "x", [], 0)
    assert "signature" not in render(off)


REFERRER = st.fixed_dictionaries({}, optional={
    "artifactType": st.just(sg.COSIGN_ARTIFACT) | st.text(max_size=10),
    "digest": st.just("sha256:" + "0" * 64) | st.text(max_size=70) | JSON})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(REFERRER | JSON, max_size=4) | JSON, referred=MANIFEST)
def test_any_referrers_index_ends_in_a_verdict_or_a_typed_error(entries: Any,
                                                                referred: Any) -> None:
    fake = FakeGhcr()
    rel = candidate(fake)
    raw = json.dumps(referred).encode()
    fake.manifests["sha256:" + "0" * 64] = (raw, rr.OCI_MANIFEST)  # served under any digest
    index = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_INDEX,
                        "manifests": entries}).encode()
    fake.put(sg.referrers_tag(rel.digest), index, rr.OCI_INDEX)
    with HttpRegistry(BASE, REPO, transport=httpx.MockTransport(fake),
                      clock=StepClock()) as reg:
        try:
            check = CosignVerifier(reg, [VerifyKey("k", CI.public_key())], REFERENCE,
                                   {}).verify(rel)
        except RegistryError:
            return
    assert check.status in ("missing", "invalid")


class FlipVerifier(FixedVerifier):
    """Answers ``missing`` until CI signs, then ``valid``."""

    def sign(self) -> None:
        self.check = sg.SignatureCheck("valid", key="k.pub")


def _agent(tmp_path: Path, verifier: Any, registry: FakeRegistry, runtime: FakeRuntime,
           sink: Sink, **extra: Any) -> Any:
    s = Settings(image="ghcr.io/acme/app", container="app", state_dir=tmp_path / "st",
                 watch=0, **extra)
    return build_agent(s, [sink], registry=registry, runtime=runtime,
                       health=FakeHealth(runtime), store=Store(s.state_dir),
                       signatures=verifier)


def test_agent_waits_for_a_late_signature_once_per_build_then_deploys(tmp_path: Path) -> None:
    old, new = release(1), release(2)
    runtime, sink = FakeRuntime("app", old), Sink()
    verifier = FlipVerifier(sg.SignatureCheck("missing", "no sha256-….sig"))
    agent = _agent(tmp_path, verifier, FakeRegistry(new), runtime, sink)
    first, second = agent.poll_once(), agent.poll_once()
    assert (first.outcome, second.outcome) == ("waiting", "waiting")
    assert [e["kind"] for e in sink.named("held")] == ["signature"]  # once, not per poll
    assert agent.status()["held"]["digest"] == str(new.digest)
    assert "pull" not in runtime.calls and agent.store.quarantined() == []
    verifier.sign()
    assert agent.poll_once().outcome == "deployed"
    assert runtime.running_digest() == new.digest and agent.status()["held"] is None
    assert agent.store.history()[0].verified is True
    assert agent.store.is_verified(str(new.digest))


def test_agent_holds_a_track_moved_back_unless_downgrades_are_allowed(tmp_path: Path) -> None:
    old, new = release(1), release(2)
    runtime, sink, registry = FakeRuntime("app", old), Sink(), FakeRegistry(new)
    agent = _agent(tmp_path, None, registry, runtime, sink)
    assert agent.poll_once().outcome == "deployed"
    registry.track = old  # the track moved back to the build this host ran before
    held = [agent.poll_once() for _ in range(3)]
    assert [r.outcome for r in held] == ["nothing_to_do"] * 3
    assert "older than the one running" in held[0].reason
    assert [(e["kind"], e["to"]) for e in sink.named("held")] == [("downgrade", old.label)]
    assert runtime.running_digest() == new.digest
    allowed = _agent(tmp_path, None, registry, runtime, sink, allow_downgrade=True)
    assert allowed.poll_once().outcome == "deployed" and runtime.running_digest() == old.digest
