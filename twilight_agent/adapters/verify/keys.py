"""The public keys cosign signatures are checked with (``cryptography``).

``load_keys`` reads PEM public keys as ``cosign generate-key-pair`` writes them
(``cosign.pub``: ECDSA P-256) and the other kinds cosign signs with (ECDSA P-384/P-521,
RSA, Ed25519). ``VerifyKey.verifies`` says whether a signature over a payload is valid,
the way ``cosign verify --key`` checks it: ECDSA (DER) over SHA-256 (or the curve's own
hash), RSA PKCS#1 v1.5 or PSS over SHA-256, Ed25519 over the bytes themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

MAX_KEY_FILE = 64 * 1024
_CURVE_HASH = {"secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}


@dataclass(frozen=True)
class VerifyKey:
    """One configured public key and the file it came from (shown as its name)."""

    path: str
    key: Any

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        try:
            return _verify(self.key, signature, payload)
        except (InvalidSignature, ValueError, TypeError, OverflowError):
            return False


def _verify(key: Any, signature: bytes, payload: bytes) -> bool:
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, payload)
        return True
    if isinstance(key, ec.EllipticCurvePublicKey):
        for algorithm in {hashes.SHA256, _CURVE_HASH.get(key.curve.name, hashes.SHA256)}:
            try:
                key.verify(signature, payload, ec.ECDSA(algorithm()))
                return True
            except InvalidSignature:
                continue
        return False
    if isinstance(key, rsa.RSAPublicKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                          salt_length=padding.PSS.AUTO)
        for pad in (padding.PKCS1v15(), pss):
            try:
                key.verify(signature, payload, pad, hashes.SHA256())
                return True
            except InvalidSignature:
                continue
    return False


def load_key(path: Path) -> VerifyKey:
    """One PEM public key; ``ValueError`` with a one-line reason naming the file."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise ValueError(f"{path} is too large for a public key")
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path} holds a private key; give the public half (cosign.pub)")
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{path} is not a PEM public key (as `cosign generate-key-pair` "
                         "writes cosign.pub)") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey,
                            ed25519.Ed25519PublicKey)):
        raise ValueError(f"{path}: cosign signs with ECDSA, RSA or Ed25519 keys, not "
                         f"{type(key).__name__}")
    return VerifyKey(str(path), key)


def load_keys(paths: Sequence[Path]) -> tuple[VerifyKey, ...]:
    """Every configured key; any one of them may vouch for a signature (key rotation)."""
    return tuple(load_key(p) for p in paths)
