"""Pure rules of keyless (Sigstore identity) verification: which referrers are Sigstore
bundles, the workflow identity a build must come from, and what a verified in-toto
statement must say. No I/O, no sigstore: the adapter (``adapters/verify/keyless.py``) reads the
registry, ``adapters/verify/keyless_check.py`` runs sigstore-python, and both ask these rules.

Everything read from the registry is untrusted: parsing raises ``ValueError`` with a
one-line reason, never anything else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from twilight_agent.core.signatures import VALID, SignatureCheck

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_V02 = "application/vnd.dev.sigstore.bundle+json;version=0.2"
BUNDLE_TYPES = (BUNDLE_V03, BUNDLE_V02, "application/vnd.dev.sigstore.bundle.v0.2+json")
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
INTOTO = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_V1 = "https://slsa.dev/provenance/v1"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"  # on GitHub's referrers
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
MAX_BUNDLE = 256 * 1024  # GitHub's provenance bundles are 5-20 KiB
MAX_BUNDLES = 8  # bundle manifests read from one referrers index
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_WORKFLOW = re.compile(r"https://github\.com/([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)/"
                       r"(\.github/workflows/[^@\s]+)@(refs/[^\s]+)")


@dataclass(frozen=True)
class KeylessCheck(SignatureCheck):
    """A ``SignatureCheck`` whose ``key`` is the workflow identity that signed."""

    def describe(self) -> str:
        """``valid (identity https://github.com/...@refs/heads/main)``, else as the base."""
        return f"valid (identity {self.key})" if self.status == VALID else super().describe()


@dataclass(frozen=True)
class WorkflowClaims:
    """What a GitHub workflow identity names: ``OWNER/REPO``, the workflow file, the ref."""

    repository: str
    workflow: str
    ref: str


@dataclass(frozen=True)
class IdentityRule:
    """``TWILIGHT_VERIFY_IDENTITY``: an exact workflow identity, or a full-match regular
    expression when written ``^...$``."""

    text: str

    @property
    def is_pattern(self) -> bool:
        return len(self.text) > 1 and self.text.startswith("^") and self.text.endswith("$")

    def check(self) -> IdentityRule:
        """Itself, or ``ValueError`` with a one-line reason (a bad regex, not GitHub's)."""
        if self.is_pattern:
            try:
                re.compile(self.text)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        else:
            workflow_claims(self.text)
        return self

    def matches(self, san: str) -> bool:
        if self.is_pattern:
            return re.fullmatch(self.text, san) is not None
        return san == self.text


def workflow_claims(identity: str) -> WorkflowClaims:
    """``https://github.com/O/R/.github/workflows/f.yml@refs/heads/main`` -> its parts;
    ``ValueError`` for anything else."""
    found = _WORKFLOW.fullmatch(identity)
    if found is None:
        raise ValueError(f"{shown(identity)!r} is not a GitHub workflow identity "
                         "(https://github.com/OWNER/REPO/.github/workflows/FILE@REF)")
    return WorkflowClaims(found[1], found[2], found[3])


def bundle_referrers(index: Any) -> list[str]:
    """The digests of the Sigstore bundle manifests an OCI 1.1 referrers index lists, but
    not those it annotates as attestations of another kind (an SBOM attested before the
    provenance would otherwise be refused before the provenance comes). The annotation is
    unsigned: it can only make a bundle skipped, never accepted."""
    entries = index.get("manifests") if isinstance(index, dict) else None
    found = [e.get("digest") for e in entries if isinstance(e, dict)
             and e.get("artifactType") in BUNDLE_TYPES and not _other_kind(e)] \
        if isinstance(entries, list) else []
    return [d for d in found if isinstance(d, str) and _DIGEST.fullmatch(d)][:MAX_BUNDLES]


def _other_kind(entry: dict[str, Any]) -> bool:
    notes = entry.get("annotations")
    kind = notes.get(PREDICATE_ANNOTATION) if isinstance(notes, dict) else None
    return kind is not None and kind != SLSA_V1


def bundle_layer(manifest: Any) -> tuple[str, int]:
    """(digest, size) of the bundle a referrer manifest carries; ``ValueError`` if none, or
    if it is larger than ``MAX_BUNDLE``."""
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        if not isinstance(layer, dict) or layer.get("mediaType") not in BUNDLE_TYPES:
            continue
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise ValueError("the bundle layer has no sha256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError("the bundle layer has no size")
        if size > MAX_BUNDLE:
            raise ValueError(f"the bundle is {size} bytes, over the {MAX_BUNDLE} cap")
        return digest, size
    raise ValueError("the referrer holds no Sigstore bundle layer")


def payload_layer(manifest: Any) -> str | None:
    """The digest of a cosign simple-signing payload layer beside a message bundle."""
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("mediaType") == SIMPLE_SIGNING \
                and isinstance(layer.get("digest"), str) \
                and _DIGEST.fullmatch(layer["digest"]) and layer.get("size", 0) <= 64 * 1024:
            return str(layer["digest"])
    return None


def cosign_payload(digest: str, reference: str) -> bytes:
    """The simple-signing payload ``cosign sign`` writes for ``reference@digest`` (Go's
    ``json.Marshal``: compact, keys in its struct order)."""
    critical = {"identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"}
    return json.dumps({"critical": critical, "optional": None}, separators=(",", ":")).encode()


def statement_mismatch(payload_type: str, payload: bytes, digest: str) -> str | None:
    """Why a verified DSSE payload is not SLSA provenance v1 of ``digest``; None if it is."""
    if payload_type != INTOTO:
        return f"the DSSE payload type is {shown(payload_type)!r}, not {INTOTO!r}"
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "the in-toto statement is not JSON"
    if not isinstance(doc, dict) or doc.get("_type") != STATEMENT_V1:
        return "the payload is not an in-toto v1 statement"
    if doc.get("predicateType") != SLSA_V1:
        return (f"the predicate type is {shown(doc.get('predicateType'))!r}, "
                f"not {SLSA_V1!r}")
    subjects = doc.get("subject")
    names = [s.get("digest", {}).get("sha256") for s in subjects if isinstance(s, dict)
             and isinstance(s.get("digest"), dict)] if isinstance(subjects, list) else []
    if digest.removeprefix("sha256:") not in names:
        other = next((n for n in names if isinstance(n, str)), None)
        return (f"its subject is another digest (sha256:{shown(other)[:12]})" if other
                else "its subject names no sha256 digest")
    return None


def shown(value: object, limit: int = 120) -> str:
    """A value from the registry, made printable and short for a reason or a log line."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return text or "nothing"


CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
LEGACY_HINT = ("a cosign keyless signature in the old .sig layout is there, which is not "
               "accepted: sign with `cosign sign --new-bundle-format` (cosign 3's default) or "
               "attest with actions/attest-build-provenance")


def is_legacy_keyless(doc: Any) -> bool:
    """Whether a ``.sig`` manifest holds a cosign keyless signature in cosign 2's layout
    (a certificate annotation beside the signature, the log entry in another one): it
    carries no Sigstore bundle, so it is not read as a proof."""
    layers = doc.get("layers") if isinstance(doc, dict) else None
    return isinstance(layers, list) and any(
        isinstance(layer, dict) and isinstance(layer.get("annotations"), dict)
        and CERTIFICATE_ANNOTATION in layer["annotations"] for layer in layers[:8])
