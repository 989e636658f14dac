"""The certificates of the local Sigstore stand-in: a Fulcio-shaped CA (root and
intermediate) that issues short-lived leaf certificates for a GitHub Actions workflow
identity, each with an embedded SCT from a local CT log key, and a TSA certificate for
``openssl ts``. The why of each shape is in ``testbed/sigstore_standin.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
LEAF_LIFETIME = dt.timedelta(minutes=10)
CA_LIFETIME = dt.timedelta(days=3650)
_FULCIO = "1.3.6.1.4.1.57264.1."


@dataclasses.dataclass(frozen=True)
class WorkflowIdentity:
    """What GitHub's OIDC token says about a workflow run, as Fulcio copies it."""

    repository: str = "OWNER/REPO"
    workflow: str = ".github/workflows/docker-build.yml"
    ref: str = "refs/heads/main"
    sha: str = "0123456789abcdef0123456789abcdef01234567"
    issuer: str = GITHUB_ISSUER
    event: str = "push"
    workflow_name: str = "docker-build"
    repository_id: str = "1000001"
    owner_id: str = "2000002"
    run_id: str = "3000003"
    visibility: str = "public"

    @property
    def san(self) -> str:
        """The certificate's SAN URI: the workflow file at its ref (the job_workflow_ref)."""
        return f"https://github.com/{self.repository}/{self.workflow}@{self.ref}"

    @property
    def repository_uri(self) -> str:
        return f"https://github.com/{self.repository}"


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def der_utf8(text: str) -> bytes:
    """A DER UTF8String, the encoding of Fulcio's extensions from .1.8 on."""
    raw = text.encode()
    return b"\x0c" + der_length(len(raw)) + raw


def key_id(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> bytes:
    """RFC 6962 key ID: SHA-256 of the DER SubjectPublicKeyInfo (CT log IDs, Rekor log IDs)."""
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def spki_b64(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(spki).decode()


def cert_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twilight test bed"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                         decipher_only=False)


def _signing_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                         decipher_only=False)


@dataclasses.dataclass(frozen=True)
class Authority:
    """A CA certificate with its key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_ca(cn: str, start: dt.datetime, parent: Authority | None = None,
            eku: x509.ObjectIdentifier | None = None) -> Authority:
    """A root (no parent) or an intermediate, P-384 like Fulcio's, valid from ``start``."""
    key = ec.generate_private_key(ec.SECP384R1())
    issuer_key = parent.key if parent else key
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(parent.cert.subject if parent else _name(cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + CA_LIFETIME)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0 if parent else 1),
                              critical=True)
               .add_extension(_ca_usage(), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    return Authority(key, builder.sign(issuer_key, hashes.SHA384()))


def make_tsa(cn: str, start: dt.datetime) -> tuple[Authority, Authority]:
    """A TSA root and its signing certificate (id-kp-timeStamping, critical: RFC 3161 2.3)."""
    root = make_ca(f"{cn}-root", start)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(root.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_signing_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                           critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                root.key.public_key()), critical=False)
            .sign(root.key, hashes.SHA256()))
    return root, Authority(key, cert)


def fulcio_extensions(who: WorkflowIdentity) -> list[x509.UnrecognizedExtension]:
    """Fulcio's OIDC extensions for a GitHub Actions token (Fulcio docs/oid-info.md):
    .1.1-.1.6 are the deprecated raw-string ones, .1.8 on are DER UTF8Strings."""
    legacy = {1: who.issuer, 2: who.event, 3: who.sha, 4: who.workflow_name,
              5: who.repository, 6: who.ref}
    runs = f"{who.repository_uri}/actions/runs/{who.run_id}/attempts/1"
    current = {8: who.issuer, 9: who.san, 10: who.sha, 11: "github-hosted",
               12: who.repository_uri, 13: who.sha, 14: who.ref, 15: who.repository_id,
               16: f"https://github.com/{who.repository.split('/')[0]}",
               17: who.owner_id, 18: who.san, 19: who.sha, 20: who.event, 21: runs,
               22: who.visibility}
    exts = [x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{_FULCIO}{n}"), v.encode())
            for n, v in legacy.items()]
    exts += [x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{_FULCIO}{n}"), der_utf8(v))
             for n, v in current.items()]
    return exts


def _leaf_builder(who: WorkflowIdentity, public: ec.EllipticCurvePublicKey, ca: Authority,
                  not_before: dt.datetime) -> x509.CertificateBuilder:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([])).issuer_name(ca.cert.subject)
               .public_key(public).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_before + LEAF_LIFETIME)
               .add_extension(_signing_usage(), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                              critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False)
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(who.san)]), critical=True))
    for ext in fulcio_extensions(who):
        builder = builder.add_extension(ext, critical=False)
    return builder


def _sct(ct_key: ec.EllipticCurvePrivateKey, issuer: ec.EllipticCurvePublicKey,
         tbs: bytes, when: dt.datetime) -> bytes:
    """One RFC 6962 SCT (v1, precert_entry) over the leaf's TBS without its SCT list."""
    millis = int(when.timestamp() * 1000)
    signed = (struct.pack("!BBQH", 0, 0, millis, 1) + key_id(issuer)
              + len(tbs).to_bytes(3, "big") + tbs + b"\x00\x00")
    sig = ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    # hash sha256(4), signature ecdsa(3), then the DER signature with a u16 length
    return (b"\x00" + key_id(ct_key.public_key()) + struct.pack("!QH", millis, 0)
            + b"\x04\x03" + struct.pack("!H", len(sig)) + sig)


def _sct_list_extension(sct: bytes) -> x509.UnrecognizedExtension:
    """The extension's value is an OCTET STRING wrapping the TLS SignedCertificateTimestampList."""
    tls = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
    return x509.UnrecognizedExtension(SCT_LIST_OID, b"\x04" + der_length(len(tls)) + tls)


def issue_leaf(who: WorkflowIdentity, ca: Authority, ct_key: ec.EllipticCurvePrivateKey,
               not_before: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An ephemeral P-256 key and its 10-minute certificate, as Fulcio issues them: the CT
    log's SCT signs the TBS that the final certificate has once its SCT list is removed."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf_builder(who, key.public_key(), ca, not_before)
    tbs = builder.sign(ca.key, hashes.SHA384()).tbs_certificate_bytes
    sct = _sct(ct_key, ca.key.public_key(), tbs, not_before)
    cert = builder.add_extension(_sct_list_extension(sct), critical=False).sign(
        ca.key, hashes.SHA384())
    if cert.tbs_precertificate_bytes != tbs:
        raise AssertionError("the SCT would not match the certificate's TBS")
    return key, cert
