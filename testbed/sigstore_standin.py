"""A local Sigstore for the test bed: everything keyless verification checks, made on this
machine, so no test reaches Fulcio, Rekor, a TSA or Sigstore's TUF repository.

What a GitHub Actions job gets from the public-good Sigstore, and what this makes instead:

``SigstoreStandin(directory)`` creates, once:

- a **Fulcio-shaped CA**: a root and an intermediate (P-384, SHA-384, as Fulcio's are; the
  intermediate carries the code-signing EKU like Fulcio's). sigstore-python builds the chain
  with ``cryptography``'s WebPKI-profile verifier, so both carry critical basic constraints
  and key usage, and subject/authority key identifiers; the trust root lists intermediate
  then root, leaf to root, as Sigstore's ``trusted_root.json`` does.
- a **CT log key** (P-256): each leaf certificate embeds one SCT, a precertificate SCT as
  Fulcio's CT log returns it (RFC 6962: signed over the issuer key's hash and the leaf's TBS
  without the SCT list), since sigstore-python refuses a certificate without exactly one.
- two **transparency logs**, each a key and the origin its checkpoints name: a Rekor v1
  (ECDSA P-256, origin ``<host> - <tree ID>``) and a Rekor v2 shard (Ed25519, origin the
  shard's host), since the two are separate log instances in Sigstore's trust root too;
  ``sigstore_log`` makes an entry in one of them for each signature (see below).
- a **timestamp authority**: its own root and a TSA certificate with the critical
  id-kp-timeStamping EKU (RFC 3161 2.3, which rfc3161-client enforces), and the config for
  Debian's ``openssl ts -reply``, so the timestamps are made by a real TSA implementation.
- ``trusted_root()``: a Sigstore ``TrustedRoot`` (protobuf JSON, media type ``...;version=0.1``)
  naming that CA, CT log, both transparency logs and the TSA, each with a ``validFor``
  that starts at the stand-in's ``start`` (a day back by default, so signatures "made"
  hours ago verify).

Then, per signature, a **Sigstore bundle v0.3** (``application/vnd.dev.sigstore.bundle.v0.3
+json``, the JSON form sigstore-python's ``Bundle.from_json`` reads, the certificate alone in
``verificationMaterial.certificate``):

- ``provenance_bundle(digest, who)``: a DSSE envelope (``application/vnd.in-toto+json``)
  holding an in-toto v1 statement with SLSA provenance v1, its one subject the image digest,
  shaped like ``actions/attest-build-provenance``'s (GitHub's workflow build type, the
  workflow, ref and commit in its parameters).
- ``message_bundle(artifact, who)``: a plain message signature (ECDSA over SHA-256 of the
  artifact, the digest named in ``messageDigest``), as ``cosign sign`` keyless makes over its
  simple-signing payload (``simple_signing_payload``), which names the image digest.

Each is signed with a fresh key whose 10-minute leaf certificate names ``who``, a
``WorkflowIdentity``: the SAN URI ``https://github.com/OWNER/REPO/<workflow>@<ref>`` (critical,
the subject empty, as Fulcio does) and Fulcio's OIDC extensions for a GitHub token (Fulcio
docs/oid-info.md): the issuer in both 1.3.6.1.4.1.57264.1.1 (raw string) and .1.8 (DER
UTF8String); the deprecated GitHub ones (.1.2 trigger, .1.3 SHA, .1.4 workflow name, .1.5
repository, .1.6 ref, raw strings, which sigstore-python's ``GitHubWorkflow*`` policies read);
and .1.9-.1.22 (build signer URI and digest, runner environment, source repository URI .1.12,
digest .1.13, ref .1.14, identifiers, owner, build config, trigger, run URI, visibility; DER
UTF8Strings, read by the ``OIDC*`` policies).

The proof of *when* it was signed, which chain validation needs because the certificate
lives 10 minutes, is chosen per bundle with a ``Proof``:

- ``log="v1"`` (default): a Rekor v1 entry (``dsse`` 0.0.1 or ``hashedrekord`` 0.0.1 body,
  laid out as Rekor canonicalises it) with an **integrated time** and its **signed entry
  timestamp** (the log's signature over the RFC 8785 JSON of body, time, log ID and index),
  plus the inclusion proof every v0.3 bundle needs: the body is leaf ``index`` of an RFC 6962
  tree whose earlier leaves are stand-in filler (``index`` 1 by default: cosign reads log
  indexes of 1 or more), with a **signed checkpoint** (a signed note whose key hint is the
  log ID's first four bytes) over the root.
- ``log="v2"``: a Rekor-v2-style entry (``hashedrekord`` 0.0.2 for both kinds, the DSSE one
  over the envelope's PAE): inclusion proof and checkpoint, but no integrated time and no
  promise; the time must come from ``timestamp=True``.
- ``timestamp=True``: an RFC 3161 timestamp over the signature bytes, made now by
  ``openssl ts`` (by another stand-in's TSA with ``tsa=other``, to show an untrusted one).
- ``log=None``: no log entry at all, only whatever timestamp was asked for.

``signed_at`` backdates the certificate and the log's integrated time (a TSA's time is always
now); ``proven_at`` moves the log's time alone. The stand-in does not serve anything over
HTTP: there is no Fulcio, Rekor or TSA endpoint, no TUF repository and no signing config;
bundles are made in-process, for tests to attach to images or hand to a verifier.

Checked against two verifiers, offline, with ``trusted_root()`` as their only trust:
sigstore-python 4.5 (``tests/unit/test_sigstore_standin.py``: every ``Proof`` with a log
entry and a time verifies; a timestamp with no log entry is refused when the bundle is read)
and, by hand, Debian 13's cosign 2.5 of the bed (``verify-blob`` and
``verify-blob-attestation --new-bundle-format --trusted-root``), which verifies the Rekor v1
bundles and refuses the v2 ones ("nil value in transaction log entry"), as it refuses real
Rekor v2 bundles: it predates them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.x509.oid import ExtendedKeyUsageOID

from testbed import sigstore_log as tlog
from testbed.sigstore_pki import (
    Authority,
    WorkflowIdentity,
    cert_b64,
    issue_leaf,
    key_id,
    make_ca,
    make_tsa,
    spki_b64,
)
from testbed.sigstore_tsa import timestamp, write_tsa

__all__ = ["Proof", "SigstoreStandin", "WorkflowIdentity", "provenance_statement",
           "simple_signing_payload"]

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
INTOTO_TYPE = "application/vnd.in-toto+json"
LOG_ORIGIN = "rekor.standin.twilight.test - 4242"  # Rekor v1: "<host> - <tree ID>"
LOG_V2_ORIGIN = "log2026-1.rekor.standin.twilight.test"  # Rekor v2: the shard's host
P256 = "PKIX_ECDSA_P256_SHA_256"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, what the envelope's signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def provenance_statement(digest: str, who: WorkflowIdentity,
                         image: str = "registry.test/twilight/app") -> bytes:
    """An in-toto v1 statement of SLSA provenance v1 for ``image@digest``, laid out as
    GitHub's artifact attestations are (build type, workflow parameters, commit)."""
    algorithm, _, value = digest.partition(":")
    workflow = {"ref": who.ref, "repository": who.repository_uri, "path": who.workflow}
    github = {"event_name": who.event, "repository_id": who.repository_id,
              "repository_owner_id": who.owner_id, "runner_environment": "github-hosted"}
    predicate = {
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": workflow},
            "internalParameters": {"github": github},
            "resolvedDependencies": [{"uri": f"git+{who.repository_uri}@{who.ref}",
                                      "digest": {"gitCommit": who.sha}}]},
        "runDetails": {"builder": {"id": who.san}, "metadata": {
            "invocationId": f"{who.repository_uri}/actions/runs/{who.run_id}/attempts/1"}}}
    statement = {"_type": "https://in-toto.io/Statement/v1",
                 "subject": [{"name": image, "digest": {algorithm: value}}],
                 "predicateType": "https://slsa.dev/provenance/v1", "predicate": predicate}
    return json.dumps(statement, separators=(",", ":")).encode()


def simple_signing_payload(digest: str, image: str = "registry.test/twilight/app") -> bytes:
    """The payload ``cosign sign`` signs for ``image@digest`` (its simple-signing format)."""
    critical = {"identity": {"docker-reference": image},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"}
    return json.dumps({"critical": critical, "optional": None}).encode()


def _public_key(key: ec.EllipticCurvePrivateKey, start: dt.datetime) -> dict[str, Any]:
    return {"rawBytes": spki_b64(key.public_key()), "keyDetails": P256,
            "validFor": {"start": _iso(start)}}


def _tlog(log: tlog.LogKey, start: dt.datetime) -> dict[str, Any]:
    return {"baseUrl": f"https://{log.origin.split(' ')[0]}", "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": spki_b64(log.key.public_key()),
                          "keyDetails": log.key_details, "validFor": {"start": _iso(start)}},
            "logId": {"keyId": _b64(log.log_id)}}


def _authority(uri: str, chain: list[Authority], start: dt.datetime) -> dict[str, Any]:
    cn = chain[0].cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    return {"subject": {"organization": "twilight test bed", "commonName": str(cn)},
            "uri": uri, "certChain": {"certificates": [{"rawBytes": cert_b64(a.cert)}
                                                       for a in chain]},
            "validFor": {"start": _iso(start)}}


@dataclasses.dataclass(frozen=True)
class Proof:
    """How a bundle proves when it was signed (see the module's docstring): which log holds
    its entry (none with ``None``), whether a TSA stamped it (``tsa``: another stand-in's),
    when its certificate starts and, if elsewhere, when the v1 log says it integrated it."""

    log: Literal["v1", "v2"] | None = "v1"
    timestamp: bool = False
    tsa: SigstoreStandin | None = None
    signed_at: dt.datetime | None = None
    proven_at: dt.datetime | None = None


class SigstoreStandin:
    """A local Fulcio, CT log, Rekor and TSA, as keys and certificates made in ``directory``
    (which keeps only what ``openssl ts`` reads); see the module's docstring."""

    def __init__(self, directory: Path, *, start: dt.datetime | None = None) -> None:
        self.start = start or _now() - dt.timedelta(days=1)
        self.fulcio_root = make_ca("standin-fulcio-root", self.start)
        self.fulcio = make_ca("standin-fulcio-intermediate", self.start, self.fulcio_root,
                              ExtendedKeyUsageOID.CODE_SIGNING)
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.log = tlog.LogKey(ec.generate_private_key(ec.SECP256R1()), LOG_ORIGIN)
        self.log_v2 = tlog.LogKey(ed25519.Ed25519PrivateKey.generate(), LOG_V2_ORIGIN)
        self.tsa_root, self.tsa = make_tsa("standin-tsa", self.start)
        self.tsa_config = write_tsa(directory / "tsa", self.tsa_root, self.tsa)

    def trusted_root(self) -> dict[str, Any]:
        """The ``TrustedRoot`` naming this CA, CT log, transparency log and TSA."""
        start = self.start
        return {
            "mediaType": TRUSTED_ROOT_TYPE,
            "tlogs": [_tlog(self.log, start), _tlog(self.log_v2, start)],
            "certificateAuthorities": [_authority(
                "https://fulcio.standin.twilight.test", [self.fulcio, self.fulcio_root], start)],
            "ctlogs": [{"baseUrl": "https://ctfe.standin.twilight.test",
                        "hashAlgorithm": "SHA2_256",
                        "publicKey": _public_key(self.ct_key, start),
                        "logId": {"keyId": _b64(key_id(self.ct_key.public_key()))}}],
            "timestampAuthorities": [_authority(
                "https://tsa.standin.twilight.test", [self.tsa, self.tsa_root], start)]}

    def write_trusted_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root(), indent=2))
        return path

    def leaf(self, who: WorkflowIdentity, signed_at: dt.datetime | None = None,
             ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A fresh key and its Fulcio-shaped certificate for ``who``, valid from ``signed_at``."""
        return issue_leaf(who, self.fulcio, self.ct_key, signed_at or _now())

    def provenance_bundle(self, digest: str, who: WorkflowIdentity | None = None,
                          proof: Proof | None = None, *,
                          image: str = "registry.test/twilight/app") -> dict[str, Any]:
        """A bundle of a DSSE-signed SLSA provenance statement for ``image@digest``."""
        who, proof = who or WorkflowIdentity(), proof or Proof()
        payload = provenance_statement(digest, who, image)
        key, cert = self.leaf(who, proof.signed_at)
        sig = key.sign(pae(INTOTO_TYPE, payload), ec.ECDSA(hashes.SHA256()))
        envelope = {"payload": _b64(payload), "payloadType": INTOTO_TYPE,
                    "signatures": [{"sig": _b64(sig), "keyid": ""}]}
        entries = {
            "v1": ("dsse", "0.0.1", tlog.dsse_v001_body(
                tlog.canonical_json(envelope), payload, sig, cert)),
            "v2": ("hashedrekord", "0.0.2", tlog.hashedrekord_v002_body(
                hashlib.sha256(pae(INTOTO_TYPE, payload)).digest(), sig, cert))}
        bundle = self._bundle(cert, sig, entries, proof)
        bundle["dsseEnvelope"] = envelope
        return bundle

    def message_bundle(self, artifact: bytes, who: WorkflowIdentity | None = None,
                       proof: Proof | None = None) -> dict[str, Any]:
        """A bundle of a message signature over SHA-256(``artifact``), cosign keyless style."""
        who, proof = who or WorkflowIdentity(), proof or Proof()
        digest = hashlib.sha256(artifact).digest()
        key, cert = self.leaf(who, proof.signed_at)
        sig = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        entries = {"v1": ("hashedrekord", "0.0.1", tlog.hashedrekord_v001_body(digest, sig, cert)),
                   "v2": ("hashedrekord", "0.0.2", tlog.hashedrekord_v002_body(digest, sig, cert))}
        bundle = self._bundle(cert, sig, entries, proof)
        bundle["messageSignature"] = {
            "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
            "signature": _b64(sig)}
        return bundle

    def _bundle(self, cert: x509.Certificate, sig: bytes,
                entries: dict[str, tuple[str, str, bytes]], proof: Proof) -> dict[str, Any]:
        material: dict[str, Any] = {"certificate": {"rawBytes": cert_b64(cert)},
                                    "tlogEntries": []}
        if proof.log is not None:
            kind, version, body = entries[proof.log]
            when = proof.proven_at or cert.not_valid_before_utc
            integrated = int(when.timestamp()) if proof.log == "v1" else None
            material["tlogEntries"].append(tlog.tlog_entry(
                self.log if proof.log == "v1" else self.log_v2, body, kind, version,
                integrated=integrated))
        if proof.timestamp:
            stamp = (proof.tsa or self).timestamp(sig)
            material["timestampVerificationData"] = {
                "rfc3161Timestamps": [{"signedTimestamp": _b64(stamp)}]}
        return {"mediaType": BUNDLE_TYPE, "verificationMaterial": material}

    def timestamp(self, message: bytes) -> bytes:
        """An RFC 3161 TimeStampResp over ``message`` from this stand-in's TSA (now)."""
        return timestamp(self.tsa_config, message)
