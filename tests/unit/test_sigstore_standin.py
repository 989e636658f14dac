"""The test bed's local Sigstore (testbed/sigstore_standin.py) against the real verifier:
sigstore-python 4.x, its ``Verifier`` built from the stand-in's ``trusted_root.json``, all
offline. What a keyless deploy must accept verifies; each thing it must refuse is refused,
with the library's own error, which these tests pin so the agent's quarantine reasons can
lean on them (issue 29).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
from typing import Any

import pytest
from sigstore.errors import CertValidationError, VerificationError
from sigstore.models import Bundle, InvalidBundle, TrustedRoot
from sigstore.verify import Verifier, policy

from testbed.sigstore_standin import (
    INTOTO_TYPE,
    Proof,
    SigstoreStandin,
    WorkflowIdentity,
    simple_signing_payload,
)

pytestmark = pytest.mark.usefixtures("offline")  # no socket leaves: tests/unit/conftest.py

DIGEST = "sha256:" + "5e" * 32
MAIN = WorkflowIdentity()
HOURS_AGO = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)


@pytest.fixture(scope="module")
def verifier(standin: SigstoreStandin, tmp_path_factory: pytest.TempPathFactory) -> Verifier:
    path = standin.write_trusted_root(tmp_path_factory.mktemp("root") / "trusted_root.json")
    return Verifier(trusted_root=TrustedRoot.from_file(str(path)))


def deploy_policy(who: WorkflowIdentity = MAIN) -> policy.AllOf:
    """What the agent will ask of a certificate: the issuer, then each GitHub claim on its
    own (so a refusal names the one that differs), then the exact workflow identity."""
    return policy.AllOf([
        policy.OIDCIssuer(who.issuer), policy.OIDCIssuerV2(who.issuer),
        policy.GitHubWorkflowRepository(who.repository), policy.GitHubWorkflowRef(who.ref),
        policy.GitHubWorkflowSHA(who.sha),
        policy.OIDCSourceRepositoryURI(who.repository_uri),
        policy.OIDCSourceRepositoryRef(who.ref), policy.OIDCSourceRepositoryDigest(who.sha),
        policy.Identity(identity=who.san, issuer=who.issuer)])


def load(bundle: dict[str, Any]) -> Bundle:
    return Bundle.from_json(json.dumps(bundle))


def verify_provenance(verifier: Verifier, bundle: dict[str, Any]) -> dict[str, Any]:
    kind, payload = verifier.verify_dsse(load(bundle), deploy_policy())
    assert kind == INTOTO_TYPE
    statement: dict[str, Any] = json.loads(payload)
    return statement


PROOFS = {"rekor v1 entry with signed entry timestamp": Proof(log="v1"),
          "rekor v2 entry with RFC 3161 timestamp": Proof(log="v2", timestamp=True),
          "rekor v1 entry and RFC 3161 timestamp": Proof(log="v1", timestamp=True)}


@pytest.mark.parametrize("proof", PROOFS.values(), ids=PROOFS.keys())
def test_provenance_for_the_main_workflow_verifies(
        standin: SigstoreStandin, verifier: Verifier, proof: Proof) -> None:
    statement = verify_provenance(verifier, standin.provenance_bundle(DIGEST, MAIN, proof))
    assert statement["subject"][0]["digest"] == {"sha256": DIGEST.split(":")[1]}
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"


@pytest.mark.parametrize("proof", PROOFS.values(), ids=PROOFS.keys())
def test_a_cosign_keyless_message_signature_verifies(
        standin: SigstoreStandin, verifier: Verifier, proof: Proof) -> None:
    payload = simple_signing_payload(DIGEST)
    verifier.verify_artifact(payload, load(standin.message_bundle(payload, MAIN, proof)),
                             deploy_policy())


def test_a_certificate_long_expired_verifies_by_the_logs_time(
        standin: SigstoreStandin, verifier: Verifier) -> None:
    bundle = standin.provenance_bundle(DIGEST, MAIN, Proof(signed_at=HOURS_AGO))
    assert load(bundle).signing_certificate.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    verify_provenance(verifier, bundle)


def test_the_certificate_is_shaped_like_fulcios(standin: SigstoreStandin) -> None:
    cert = load(standin.provenance_bundle(DIGEST, MAIN)).signing_certificate
    oids = {ext.oid.dotted_string for ext in cert.extensions}
    assert {f"1.3.6.1.4.1.57264.1.{n}" for n in (1, *range(2, 7), *range(8, 23))} <= oids
    assert "1.3.6.1.4.1.11129.2.4.2" in oids  # the embedded SCT list
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(minutes=10)
    assert len(cert.subject) == 0


def as_other(**claims: str) -> WorkflowIdentity:
    return dataclasses.replace(MAIN, **claims)


OTHERS = {
    "a feature branch": (as_other(ref="refs/heads/feature"),
                         re.escape("GitHubWorkflowRef does not match (got 'refs/heads/feature'")),
    "another repository": (as_other(repository="OTHER/REPO"),
                           re.escape("GitHubWorkflowRepository does not match (got 'OTHER/REPO'")),
    "another issuer": (as_other(issuer="https://issuer.other.test"),
                       re.escape("OIDCIssuer does not match (got 'https://issuer.other.test'")),
    "another commit": (as_other(sha="f" * 40),
                       re.escape("GitHubWorkflowSHA does not match (got 'ffff")),
    "another workflow": (as_other(workflow=".github/workflows/other.yml"),
                         r"SANs do not match .*/other\.yml@refs/heads/main"),
}


@pytest.mark.parametrize(("who", "error"), OTHERS.values(), ids=OTHERS.keys())
def test_provenance_from_another_identity_is_refused_naming_the_claim(
        standin: SigstoreStandin, verifier: Verifier, who: WorkflowIdentity, error: str) -> None:
    with pytest.raises(VerificationError, match=error):
        verify_provenance(verifier, standin.provenance_bundle(DIGEST, who))


def test_a_tampered_provenance_payload_is_refused(
        standin: SigstoreStandin, verifier: Verifier) -> None:
    bundle = standin.provenance_bundle(DIGEST, MAIN)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(VerificationError, match=r"^DSSE: invalid signature$"):
        verify_provenance(verifier, bundle)


def test_a_message_signature_over_another_payload_is_refused(
        standin: SigstoreStandin, verifier: Verifier) -> None:
    bundle = load(standin.message_bundle(simple_signing_payload(DIGEST), MAIN))
    other = simple_signing_payload("sha256:" + "00" * 32)
    with pytest.raises(VerificationError, match=r"^Bundle message digest mismatch$"):
        verifier.verify_artifact(other, bundle, deploy_policy())


def test_a_moved_integrated_time_breaks_the_signed_entry_timestamp(
        standin: SigstoreStandin, verifier: Verifier) -> None:
    bundle = standin.provenance_bundle(DIGEST, MAIN)
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)
    with pytest.raises(VerificationError, match="SET: invalid inclusion promise"):
        verify_provenance(verifier, bundle)


def test_a_timestamp_from_a_tsa_outside_the_trust_root_is_no_proof_of_time(
        standin: SigstoreStandin, stranger: SigstoreStandin, verifier: Verifier) -> None:
    bundle = standin.provenance_bundle(
        DIGEST, MAIN, Proof(log="v2", timestamp=True, tsa=stranger))
    with pytest.raises(VerificationError, match=r"^not enough sources of verified time$"):
        verify_provenance(verifier, bundle)


def test_an_untrusted_timestamp_beside_a_log_time_is_ignored_not_refused(
        standin: SigstoreStandin, stranger: SigstoreStandin, verifier: Verifier) -> None:
    """sigstore-python skips a timestamp it cannot verify and counts the sources it can: one
    Rekor v1 integrated time is enough. The agent must not read more into a bundle's TSA."""
    bundle = standin.provenance_bundle(DIGEST, MAIN, Proof(timestamp=True, tsa=stranger))
    verify_provenance(verifier, bundle)


EXPIRED = {
    "a log time after it expired": Proof(log="v1", signed_at=HOURS_AGO,
                                         proven_at=dt.datetime.now(dt.timezone.utc)),
    "a timestamp after it expired": Proof(log="v2", timestamp=True, signed_at=HOURS_AGO),
}


@pytest.mark.parametrize("proof", EXPIRED.values(), ids=EXPIRED.keys())
def test_an_expired_certificate_without_proof_it_signed_in_time_is_refused(
        standin: SigstoreStandin, verifier: Verifier, proof: Proof) -> None:
    bundle = standin.provenance_bundle(DIGEST, MAIN, proof)
    with pytest.raises(CertValidationError, match="cert is not valid at validation time"):
        verify_provenance(verifier, bundle)


def test_an_expired_certificate_with_no_time_at_all_is_not_even_a_bundle(
        standin: SigstoreStandin) -> None:
    bundle = standin.provenance_bundle(DIGEST, MAIN, Proof(log="v2", signed_at=HOURS_AGO))
    with pytest.raises(InvalidBundle, match="must contain an inclusion promise or signed timest"):
        load(bundle)


def test_a_timestamp_alone_without_a_log_entry_is_refused(standin: SigstoreStandin) -> None:
    """What GitHub's private-repository attestations carry: sigstore-python 4.x wants
    exactly one log entry, and says so when the bundle is read, before any verifier."""
    bundle = standin.provenance_bundle(DIGEST, MAIN, Proof(log=None, timestamp=True))
    assert bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    with pytest.raises(InvalidBundle, match=r"^expected exactly one log entry in bundle$"):
        load(bundle)


def test_a_certificate_from_another_ca_is_refused(
        stranger: SigstoreStandin, verifier: Verifier) -> None:
    with pytest.raises(CertValidationError, match="failed to build timestamp certificate chain"):
        verify_provenance(verifier, stranger.provenance_bundle(DIGEST, MAIN))


def test_an_entry_from_another_log_is_refused(
        standin: SigstoreStandin, stranger: SigstoreStandin, verifier: Verifier) -> None:
    bundle = standin.provenance_bundle(DIGEST, MAIN, Proof(log="v2", timestamp=True))
    foreign = stranger.provenance_bundle(DIGEST, MAIN, Proof(log="v2"))
    bundle["verificationMaterial"]["tlogEntries"] = foreign["verificationMaterial"]["tlogEntries"]
    with pytest.raises(VerificationError, match="checkpoint: invalid signature"):
        verify_provenance(verifier, bundle)
