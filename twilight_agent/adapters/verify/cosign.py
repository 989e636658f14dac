"""SignaturePort over cosign's ``sha256-<hex>.sig`` tag scheme (the registry adapter reads,
``verify_keys`` checks, ``core/signatures`` parses and judges).

For a new candidate: one ``GET`` of the ``.sig`` manifest, then one ``GET`` of each
signature's payload blob until one is valid (one blob when there is one signature). No
``.sig`` tag: the OCI 1.1 referrers API, else its ``sha256-<hex>`` tag schema, then each
cosign signature manifest listed there. A
registry that does not answer raises its ``RegistryError`` (nothing is decided, the next
poll tries again); a missing ``.sig`` tag is ``missing``; anything the registry serves that
does not verify is ``invalid`` with the reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.adapters.verify.keys import VerifyKey
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.signatures import (
    COSIGN_ARTIFACT,
    INVALID,
    MAX_LAYERS,
    MISSING,
    VALID,
    FirstSaid,
    SignatureCheck,
    SignatureLayer,
    payload_mismatch,
    referrers_tag,
    sig_tag,
    signature_layers,
    signature_referrers,
)
from twilight_agent.errors import ManifestNotFound
from twilight_agent.logs import get_logger

log = get_logger("twilight.signatures")


class CosignVerifier:
    """Checks a candidate against the configured keys, repository and annotations."""

    def __init__(self, registry: HttpRegistry, keys: Sequence[VerifyKey], reference: str,
                 annotations: Mapping[str, str] | None = None) -> None:
        self._registry = registry
        self._keys = tuple(keys)
        self._reference = reference  # host/path, what cosign writes as docker-reference
        self._annotations = dict(annotations or {})
        self._said = FirstSaid()  # one log line per digest and answer

    def verify(self, release: Release) -> SignatureCheck:
        check = self._verify(release)
        if self._said.new(str(release.digest), check):
            log.info("signature_checked", digest=str(release.digest), tag=release.tag,
                     signature=check.status, detail=check.detail or None,
                     key=check.key or None)
        return check

    def _verify(self, release: Release) -> SignatureCheck:
        digest = release.digest
        docs = self._signature_manifests(digest)
        if not docs:
            return SignatureCheck(MISSING, f"no {sig_tag(digest)[:19]}….sig and no OCI "
                                  f"referrer in {self._reference}")
        layers: list[SignatureLayer] = []
        problem = "the signature manifest holds no cosign signature"
        for doc in docs:
            try:
                layers += signature_layers(doc)
            except ValueError as exc:
                problem = str(exc)
        if not layers:
            return SignatureCheck(INVALID, problem)
        reasons = [self._layer(layer, release) for layer in layers[:MAX_LAYERS]]
        return next((r for r in reasons if r.valid), None) or _worst(reasons)

    def _signature_manifests(self, digest: Digest) -> list[Any]:
        """The ``.sig`` tag's manifest; else the signature manifests the OCI 1.1 referrers
        list (the API, else its ``sha256-<hex>`` tag schema). Costs nothing on an idle poll:
        only a new candidate is checked."""
        found = self._registry.manifest_or_none(sig_tag(digest))
        if found is not None:
            return [found[0]]
        index = self._registry.referrers(digest, COSIGN_ARTIFACT)
        if index is None:
            tagged = self._registry.manifest_or_none(referrers_tag(digest))
            index = tagged[0] if tagged is not None else None
        docs = (self._registry.manifest_or_none(d) for d in signature_referrers(index))
        return [doc[0] for doc in docs if doc is not None]

    def _layer(self, layer: SignatureLayer, release: Release) -> SignatureCheck:
        """One signature: its payload verifies with a key, then says the right things (the
        digest, the repository, the annotations, the build's commit and tag)."""
        try:
            payload = self._registry.verified_blob(Digest(layer.digest))
        except ManifestNotFound:
            return SignatureCheck(INVALID, f"payload {layer.digest[7:19]} is not in the "
                                  "registry")
        key = next((k for k in self._keys if k.verifies(layer.signature, payload)), None)
        if key is None:
            return SignatureCheck(INVALID, "no configured key verifies the signature")
        why = payload_mismatch(payload, str(release.digest), self._reference,
                               self._annotations, release.revision, release.tag)
        if why is None and release.revision is None and b'"commit"' in payload:
            # a rollback's, known by its digest alone: the signed commit still has to be
            # the one the image says it was built from
            revision = self._registry.labels(release.digest)[0]
            why = payload_mismatch(payload, str(release.digest), self._reference,
                                   self._annotations, revision, release.tag)
        if why is not None:
            return SignatureCheck(INVALID, f"signed by {key.path}, but {why}")
        return SignatureCheck(VALID, key=key.path)


def _worst(checks: list[SignatureCheck]) -> SignatureCheck:
    """The most telling failure: one a configured key signed says more than a foreign one."""
    signed = [c for c in checks if c.detail.startswith("signed by")]
    return (signed or checks)[0]
