"""SignaturePort by keyless Sigstore identity (``TWILIGHT_VERIFY_IDENTITY``): a candidate is
pulled only when a Sigstore bundle attached to its digest proves that the configured
GitHub workflow built it (``core/keyless`` holds the rules, ``keyless_check`` runs
sigstore-python, ``keyless_root`` keeps the trust root).

For a new candidate: the OCI 1.1 referrers API filtered by the bundle artifact type (v0.3,
then v0.2 when none), else its ``sha256-<hex>`` tag schema; then per bundle manifest (at
most ``MAX_BUNDLES``) one ``GET`` of the manifest and one of the bundle blob (size-capped,
hashed against its digest), until one verifies. No bundle: ``missing`` (the grace applies).
A candidate known by its digest alone (a rollback's, from the history) has its revision
label read then: the signed commit is matched against it. A bundle that does not verify,
or registry garbage where a bundle should be: ``invalid`` with a one-line reason. A
registry that does not answer, or no trust root to be had, raises (``RegistryError``:
nothing is decided, the next poll tries again).

sigstore itself is imported only at the first bundle checked (``lazy.py``): an idle daemon
with keyless verification configured does not carry it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.keyless import (
    BUNDLE_V02,
    BUNDLE_V03,
    LEGACY_HINT,
    MAX_BUNDLE,
    IdentityRule,
    KeylessCheck,
    bundle_layer,
    bundle_referrers,
    is_legacy_keyless,
    payload_layer,
)
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.signatures import (
    INVALID,
    MISSING,
    FirstSaid,
    SignatureCheck,
    referrers_tag,
    sig_tag,
)
from twilight_agent.errors import ManifestNotFound, RegistryProtocolError
from twilight_agent.lazy import lazy_module
from twilight_agent.logs import get_logger

log = get_logger("twilight.keyless")


class KeylessVerifier:
    """Checks a candidate's Sigstore bundles against a workflow identity and issuer."""

    def __init__(self, registry: HttpRegistry, rule: IdentityRule, issuer: str,
                 reference: str, *, trusted_root: Path | None, state_dir: Path,
                 clock: Clock = SYSTEM) -> None:
        self._registry = registry
        self._clock = clock  # when the public-good root is due a refresh
        self._rule, self._issuer, self._reference = rule, issuer, reference
        self._trusted_root, self._state_dir = trusted_root, state_dir
        self._checker: Any = None  # keyless_check.BundleChecker, built at the first bundle
        self._said = FirstSaid()  # one log line per digest and answer

    def verify(self, release: Release) -> SignatureCheck:
        check = self._verify(release)
        if self._said.new(str(release.digest), check):
            log.info("signature_checked", digest=str(release.digest), tag=release.tag,
                     signature=check.status, detail=check.detail or None,
                     identity=check.key or None)
        return check

    def _verify(self, release: Release) -> SignatureCheck:
        manifests = self._bundle_manifests(release.digest)
        if not manifests:
            legacy = self._registry.manifest_or_none(sig_tag(str(release.digest)))
            hint = f"; {LEGACY_HINT}" if legacy and is_legacy_keyless(legacy[0]) else ""
            return KeylessCheck(MISSING, f"no Sigstore bundle refers to "
                                f"{release.digest.short} in {self._reference}{hint}")
        if release.revision is None:  # a rollback's, from the history: the label tells
            release = dataclasses.replace(release,
                                          revision=self._registry.labels(release.digest)[0])
        checks = [self._one(doc, release) for doc in manifests]
        return next((c for c in checks if c.valid), None) or _worst(checks)

    def _bundle_manifests(self, digest: Digest) -> list[Any]:
        """The bundle manifests the referrers API lists (v0.3, else v0.2), else the ones
        its ``sha256-<hex>`` tag schema lists; an unreadable one as its ``invalid`` check."""
        index = self._registry.referrers(digest, BUNDLE_V03)
        if index is not None and not bundle_referrers(index):
            index = self._registry.referrers(digest, BUNDLE_V02) or index
        if index is None:
            tagged = self._registry.manifest_or_none(referrers_tag(digest))
            index = tagged[0] if tagged is not None else None
        found: list[Any] = []
        for ref in bundle_referrers(index):
            try:
                doc = self._registry.manifest_or_none(ref)
            except RegistryProtocolError as exc:  # garbage where a bundle manifest is
                found.append(KeylessCheck(INVALID, str(exc)))
                continue
            if doc is not None:
                found.append(doc[0])
        return found

    def _one(self, manifest: Any, release: Release) -> SignatureCheck:
        """One bundle manifest: its bundle blob (and a payload beside it), then sigstore."""
        if isinstance(manifest, SignatureCheck):  # the manifest itself was garbage
            return manifest
        try:
            digest, _ = bundle_layer(manifest)
            raw = self._blob(digest)
            beside = payload_layer(manifest)
            payload = self._blob(beside) if beside else None
        except ValueError as exc:
            return KeylessCheck(INVALID, str(exc))
        check: SignatureCheck = self._bundle_checker().check(raw, release, payload)
        return check

    def _blob(self, digest: str) -> bytes:
        """A blob hashed against its digest, at most ``MAX_BUNDLE``; ``ValueError`` if
        it is absent, larger, or not what its digest says."""
        try:
            body = self._registry.verified_blob(Digest(digest))
        except ManifestNotFound:
            raise ValueError(f"blob {digest[7:19]} is not in the registry") from None
        except RegistryProtocolError as exc:
            raise ValueError(str(exc)) from None
        if len(body) > MAX_BUNDLE:
            raise ValueError(f"blob {digest[7:19]} is {len(body)} bytes, over the "
                             f"{MAX_BUNDLE} cap")
        return body

    def _bundle_checker(self) -> Any:
        """sigstore is imported here, at the first bundle this agent checks."""
        if self._checker is None:
            check = lazy_module("twilight_agent.adapters.verify.keyless_check")
            root = lazy_module("twilight_agent.adapters.verify.keyless_root")
            source = root.FileRoot(self._trusted_root) if self._trusted_root is not None \
                else root.PublicGoodRoot(self._state_dir, clock=self._clock)
            self._checker = check.BundleChecker(source, self._rule, self._issuer,
                                                self._reference)
        return self._checker


def _worst(checks: list[SignatureCheck]) -> SignatureCheck:
    """The most telling failure: one the right identity signed says most."""
    signed = [c for c in checks if c.detail.startswith("signed by")]
    return (signed or checks)[0]
