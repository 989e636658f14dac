"""The transparency-log half of the local Sigstore stand-in: Rekor-shaped entry bodies,
an RFC 6962 Merkle tree with the entry as its last leaf, a signed checkpoint (a signed
note) over the tree's root, and the signed entry timestamp of Rekor v1. The why of each
shape is in ``testbed/sigstore_standin.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from testbed.sigstore_pki import key_id


def canonical_json(value: Any) -> bytes:
    """RFC 8785 for what is written here (ASCII strings, integers): sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _pem_b64(cert: x509.Certificate) -> str:
    return _b64(cert.public_bytes(serialization.Encoding.PEM))


def dsse_v001_body(envelope: bytes, payload: bytes, sig: bytes,
                   cert: x509.Certificate) -> bytes:
    """Rekor v1's canonical body of a ``dsse`` 0.0.1 entry (pkg/types/dsse/v0.0.1)."""
    spec = {"envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(envelope).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": _b64(sig), "verifier": _pem_b64(cert)}]}
    return canonical_json({"apiVersion": "0.0.1", "kind": "dsse", "spec": spec})


def hashedrekord_v001_body(digest: bytes, sig: bytes, cert: x509.Certificate) -> bytes:
    """Rekor v1's canonical body of a ``hashedrekord`` 0.0.1 entry (SHA-256 digest)."""
    spec = {"data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
            "signature": {"content": _b64(sig), "publicKey": {"content": _pem_b64(cert)}}}
    return canonical_json({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": spec})


def hashedrekord_v002_body(digest: bytes, sig: bytes, cert: x509.Certificate) -> bytes:
    """Rekor v2's ``hashedrekord`` 0.0.2 entry (rekor-tiles): a DSSE envelope is logged as
    one too, its digest taken over the envelope's PAE (rekor-v2 spec 6.1.4)."""
    verifier = {"x509Certificate": {"rawBytes": _b64(cert.public_bytes(
        serialization.Encoding.DER))}, "keyDetails": "PKIX_ECDSA_P256_SHA_256"}
    spec = {"hashedRekordV002": {"data": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                                 "signature": {"content": _b64(sig), "verifier": verifier}}}
    return canonical_json({"apiVersion": "0.0.2", "kind": "hashedrekord", "spec": spec})


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """RFC 6962 2.1: the largest power of two smaller than ``n``."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_root(hashes_: list[bytes]) -> bytes:
    if len(hashes_) == 1:
        return hashes_[0]
    k = _split(len(hashes_))
    return _node(tree_root(hashes_[:k]), tree_root(hashes_[k:]))


def audit_path(index: int, hashes_: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n]), from the leaf's sibling up to the root's child."""
    if len(hashes_) == 1:
        return []
    k = _split(len(hashes_))
    if index < k:
        return [*audit_path(index, hashes_[:k]), tree_root(hashes_[k:])]
    return [*audit_path(index - k, hashes_[k:]), tree_root(hashes_[:k])]


@dataclasses.dataclass(frozen=True)
class LogKey:
    """A transparency log's signing key and the origin its checkpoints carry: ECDSA P-256
    like Rekor v1's, or Ed25519 like Rekor v2's (rekor-tiles) checkpoint keys."""

    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    origin: str

    @property
    def log_id(self) -> bytes:
        return key_id(self.key.public_key())

    @property
    def key_details(self) -> str:
        """The key's ``PublicKeyDetails`` name in a trusted root."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return "PKIX_ED25519"
        return "PKIX_ECDSA_P256_SHA_256"

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(data)
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def checkpoint(log: LogKey, size: int, root: bytes) -> str:
    """A signed note (c2sp.org/signed-note, Rekor's pkg/util/signed_note.go): the checkpoint
    text, a blank line, then ``\u2014 NAME base64(key hint[4] + signature)``, the key hint
    being the first four bytes of the log ID."""
    note = f"{log.origin}\n{size}\n{_b64(root)}\n"
    name = log.origin.split(" ")[0]
    signature = _b64(log.log_id[:4] + log.sign(note.encode()))
    return f"{note}\n\u2014 {name} {signature}\n"


def signed_entry_timestamp(log: LogKey, body: bytes, integrated: int, index: int) -> str:
    """Rekor v1's inclusion promise: the log's signature over the RFC 8785 JSON of the
    entry's body, integrated time, log ID (hex) and index."""
    payload = {"body": _b64(body), "integratedTime": integrated,
               "logID": log.log_id.hex(), "logIndex": index}
    return _b64(log.sign(canonical_json(payload)))


def tlog_entry(log: LogKey, body: bytes, kind: str, version: str, *,
               integrated: int | None, index: int = 1) -> dict[str, Any]:
    """A bundle's ``TransparencyLogEntry`` (protobuf JSON): the body as leaf ``index`` of a
    tree of ``index + 1`` leaves (stand-in leaves before it), the inclusion proof with its
    checkpoint, and with ``integrated`` the integrated time and its signed entry timestamp
    (Rekor v1); without it neither (Rekor v2, whose time comes from a TSA)."""
    leaves = [leaf_hash(b"twilight stand-in leaf %d" % i) for i in range(index)]
    leaves.append(leaf_hash(body))
    root = tree_root(leaves)
    entry: dict[str, Any] = {
        "logIndex": str(index), "logId": {"keyId": _b64(log.log_id)},
        "kindVersion": {"kind": kind, "version": version},
        "inclusionProof": {"logIndex": str(index), "rootHash": _b64(root),
                           "treeSize": str(len(leaves)),
                           "hashes": [_b64(h) for h in audit_path(index, leaves)],
                           "checkpoint": {"envelope": checkpoint(log, len(leaves), root)}},
        "canonicalizedBody": _b64(body)}
    if integrated is not None:
        entry["integratedTime"] = str(integrated)
        entry["inclusionPromise"] = {
            "signedEntryTimestamp": signed_entry_timestamp(log, body, integrated, index)}
    return entry
