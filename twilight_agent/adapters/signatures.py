"""SignaturePort over cosign's ``sha256-<hex>.sig`` tag scheme (the registry adapter reads,
``verify_keys`` checks, ``core/signatures`` parses and judges).

For a new candidate: one ``GET`` of the ``.sig`` manifest, then one ``GET`` of each
signature's payload blob until one is valid (one blob when there is one signature). A
registry that does not answer raises its ``RegistryError`` (nothing is decided, the next
poll tries again); a missing ``.sig`` tag is ``missing``; anything the registry serves that
does not verify is ``invalid`` with the reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twilight_agent.adapters.registry import HttpRegistry
from twilight_agent.adapters.verify_keys import VerifyKey
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.signatures import (
    INVALID,
    MISSING,
    VALID,
    SignatureCheck,
    SignatureLayer,
    payload_mismatch,
    sig_tag,
    signature_layers,
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

    def verify(self, release: Release) -> SignatureCheck:
        check = self._verify(release.digest)
        log.info("signature_checked", digest=str(release.digest), tag=release.tag,
                 signature=check.status, detail=check.detail or None, key=check.key or None)
        return check

    def _verify(self, digest: Digest) -> SignatureCheck:
        doc = self._registry.signature_manifest(digest)
        if doc is None:
            return SignatureCheck(MISSING, f"no {sig_tag(digest)[:19]}….sig in "
                                  f"{self._reference}")
        try:
            layers = signature_layers(doc)
        except ValueError as exc:
            return SignatureCheck(INVALID, str(exc))
        reasons = [self._layer(layer, digest) for layer in layers]
        for reason in reasons:
            if reason.valid:
                return reason
        return _worst(reasons)

    def _layer(self, layer: SignatureLayer, digest: Digest) -> SignatureCheck:
        """One signature: its payload verifies with a key, then says the right things."""
        try:
            payload = self._registry.verified_blob(Digest(layer.digest))
        except ManifestNotFound:
            return SignatureCheck(INVALID, f"payload {layer.digest[7:19]} is not in the "
                                  "registry")
        key = next((k for k in self._keys if k.verifies(layer.signature, payload)), None)
        if key is None:
            return SignatureCheck(INVALID, "no configured key verifies the signature")
        why = payload_mismatch(payload, str(digest), self._reference, self._annotations)
        if why is not None:
            return SignatureCheck(INVALID, f"signed by {key.path}, but {why}")
        return SignatureCheck(VALID, key=key.path)


def _worst(checks: list[SignatureCheck]) -> SignatureCheck:
    """The most telling failure: one a configured key signed says more than a foreign one."""
    signed = [c for c in checks if c.detail.startswith("signed by")]
    return (signed or checks)[0]
