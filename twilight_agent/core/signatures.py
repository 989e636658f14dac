"""Pure rules of cosign signatures as the ``sha256-<hex>.sig`` tag scheme stores them (and the
OCI 1.1 referrers, where ``cosign sign --registry-referrers-mode=oci-1-1`` puts them). No I/O.

cosign puts the signatures of image ``repo@sha256:H`` into the OCI manifest tagged
``sha256-H.sig`` in the same repository: one layer per signature, the layer's blob is the
"simple signing" JSON payload, and the layer's annotation
``dev.cosignproject.cosign/signature`` holds the base64 signature over those bytes.

A payload is trusted when its signature verifies with one of the configured keys (the
adapter's job, ``adapters/verify/cosign.py``) and what it says matches: its
``critical.image.docker-manifest-digest`` is the candidate's digest, its
``critical.identity.docker-reference`` the followed repository, and every required
annotation is in ``optional`` with that value. Everything read from the registry is
untrusted: parsing raises ``ValueError`` with a one-line reason, never anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twilight_agent.core.models import Release

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"  # OCI 1.1 referrers
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
PAYLOAD_TYPE = "cosign container image signature"
MAX_PAYLOAD = 64 * 1024  # a simple-signing payload is a few hundred bytes
MAX_LAYERS = 32  # signatures read from one .sig manifest
MAX_REFERRERS = 8  # signature manifests read from one referrers index
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")

VALID, MISSING, INVALID = "valid", "missing", "invalid"


@dataclass(frozen=True)
class SignatureCheck:
    """What verifying one candidate found: ``valid`` (by ``key``), ``missing`` or ``invalid``."""

    status: str
    detail: str = ""
    key: str = ""  # the configured key that verified it

    @property
    def valid(self) -> bool:
        return self.status == VALID

    def describe(self) -> str:
        """``valid (key /etc/.../cosign.pub)``, ``missing (...)``, ``invalid (...)``."""
        if self.valid:
            return f"valid (key {self.key})"
        return f"{self.status} ({self.detail})" if self.detail else self.status


class FirstSaid:
    """Whether an answer for a digest is new: the last answer per digest is remembered
    (the ``size`` most recent digests), so a verifier logs one line per digest and
    answer, not one per poll."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._said: dict[str, SignatureCheck] = {}

    def new(self, digest: str, check: SignatureCheck) -> bool:
        if self._said.get(digest) == check:
            return False
        self._said[digest] = check
        while len(self._said) > self._size:
            del self._said[next(iter(self._said))]
        return True


class SignaturePort(Protocol):
    """Verifies a candidate's cosign signature before anything is pulled."""

    def verify(self, release: Release) -> SignatureCheck:
        """Never raises for what the registry sent: a bad signature is ``invalid``."""


@dataclass(frozen=True)
class SignatureLayer:
    """One signature in a ``.sig`` manifest: the payload blob and the signature over it."""

    digest: str
    size: int
    signature: bytes


def sig_tag(digest: str) -> str:
    """``sha256:abc...`` -> ``sha256-abc....sig``, the tag cosign stores signatures under."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError("not a sha256 digest")
    return digest.replace(":", "-") + ".sig"


def referrers_tag(digest: str) -> str:
    """``sha256-abc...``: the OCI 1.1 referrers tag schema, for registries without the API."""
    return sig_tag(digest).removesuffix(".sig")


def signature_referrers(index: Any) -> list[str]:
    """The digests of the cosign signature manifests an OCI 1.1 referrers index lists."""
    entries = index.get("manifests") if isinstance(index, dict) else None
    found = [e.get("digest") for e in entries if isinstance(e, dict)
             and e.get("artifactType") == COSIGN_ARTIFACT] if isinstance(entries, list) else []
    return [d for d in found if isinstance(d, str) and _DIGEST.fullmatch(d)][:MAX_REFERRERS]


def signature_layers(doc: Any) -> list[SignatureLayer]:
    """The signatures of a ``.sig`` manifest, in order; ``ValueError`` for any other shape."""
    if not isinstance(doc, dict):
        raise ValueError("the signature manifest is not a JSON object")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ValueError("the signature manifest has no layers")
    found = [layer for entry in layers[:MAX_LAYERS] if (layer := _layer(entry)) is not None]
    if not found:
        raise ValueError("the signature manifest holds no cosign signature")
    return found


def _layer(entry: Any) -> SignatureLayer | None:
    if not isinstance(entry, dict):
        return None
    notes = entry.get("annotations")
    sig = notes.get(SIGNATURE_ANNOTATION) if isinstance(notes, dict) else None
    digest, size = entry.get("digest"), entry.get("size")
    if not isinstance(sig, str) or not isinstance(digest, str) \
            or not _DIGEST.fullmatch(digest):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_PAYLOAD:
        return None
    try:
        raw = base64.b64decode(sig.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return SignatureLayer(digest, size, raw) if 0 < len(raw) <= 1024 else None


def payload_mismatch(payload: bytes, digest: str, reference: str,
                     annotations: Mapping[str, str], revision: str | None = None,
                     tag: str | None = None) -> str | None:
    """Why a (verified) payload does not vouch for ``reference@digest``; None when it does.

    ``revision`` (the image's ``org.opencontainers.image.revision``) and ``tag`` (the tag the
    agent records) must agree with what was signed: a ``commit`` annotation equal to the
    revision, and a ``sha-<7>`` tag that is a prefix of the revision (or, with no revision
    label, of the signed commit)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "the payload is not JSON"
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict):
        return "the payload has no 'critical' section"
    image, identity = critical.get("image"), critical.get("identity")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    ref = identity.get("docker-reference") if isinstance(identity, dict) else None
    if critical.get("type") != PAYLOAD_TYPE:
        return "the payload is not a cosign container image signature"
    if signed != digest:
        return f"it signs another digest ({_shown(signed)})"
    if ref != reference:
        return f"it signs another repository ({_shown(ref)})"
    optional = doc.get("optional")
    optional = optional if isinstance(optional, dict) else {}
    for key, want in annotations.items():
        if optional.get(key) != want:
            got = optional.get(key)
            return f"annotation {key}={want} required, it has " + (
                f"{key}={_shown(got)}" if got is not None else f"no {key}")
    return build_mismatch(optional.get("commit"), revision, tag)


def build_mismatch(commit: object, revision: str | None, tag: str | None) -> str | None:
    """Why the signed ``commit``, the image's ``revision`` label and the recorded ``tag``
    disagree; None when every pair that exists agrees."""
    signed = commit if isinstance(commit, str) and commit else None
    if signed is not None and revision and signed.lower() != revision.lower():
        return (f"it signs commit {_shown(signed)[:12]}, the image's revision label is "
                f"{_shown(revision)[:12]}")
    built = revision or signed
    if tag and tag.startswith("sha-") and built and not built.lower().startswith(tag[4:]):
        return f"the tag {_shown(tag)} is not commit {_shown(built)[:12]}"
    return None


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text[:80])
    return text or "nothing"


def parse_annotations(text: str) -> dict[str, str]:
    """``ref=refs/heads/main,commit=abc`` -> a dict; ``ValueError`` names the bad part."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.fullmatch(key) or not value:
            raise ValueError(f"{part[:40]!r} is not key=value")
        out[key] = value
    return out
