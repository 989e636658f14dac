"""One Sigstore bundle against the trust root and the workflow identity, with
sigstore-python: the certificate chains to the root at the signing time the log entry or
the timestamp proves, the signature verifies, and the certificate's claims are the
configured ones. Then what was signed must name the candidate (``core/keyless``).

This module imports sigstore (~47 MB of RSS): ``adapters/verify/keyless.py`` loads it through
``lazy.py``, so only when a candidate is checked. Everything sigstore raises about a bundle
becomes an ``invalid`` check with a one-line reason; a trust root that cannot be had raises
``RegistryUnavailable`` (nothing decided).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from cryptography.x509 import SubjectAlternativeName, UniformResourceIdentifier
from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier, policy

from twilight_agent.core.keyless import (
    IdentityRule,
    KeylessCheck,
    cosign_payload,
    shown,
    statement_mismatch,
    workflow_claims,
)
from twilight_agent.core.models import Release
from twilight_agent.core.signatures import INVALID, VALID, build_mismatch, payload_mismatch

NO_LOG_ENTRY = "expected exactly one log entry in bundle"
PRIVATE_REPO_HINT = (" (a timestamp but no transparency-log entry, as GitHub's private-"
                     "repository attestations are: sigstore-python 4.x refuses it)")


class RootSource(Protocol):
    """Where the trusted root comes from (``keyless_root``)."""

    def load(self) -> TrustedRoot:
        """The current root; ``RegistryUnavailable`` when there is none to be had."""


def invalid(reason: str) -> KeylessCheck:
    return KeylessCheck(INVALID, reason)


class BundleChecker:
    """Checks bundles for one identity rule, issuer and repository reference."""

    def __init__(self, root: RootSource, rule: IdentityRule, issuer: str,
                 reference: str) -> None:
        self._root, self._rule, self._issuer = root, rule, issuer
        self._reference = reference  # host/path, what cosign writes as docker-reference
        self._verifier: tuple[TrustedRoot, Verifier] | None = None

    def check(self, raw: bytes, release: Release, payload: bytes | None = None,
              ) -> KeylessCheck:
        """``raw`` (a bundle's JSON) for ``release``; ``payload``: the simple-signing bytes
        stored beside a message signature, else the ones cosign would have written."""
        verifier = self._current_verifier()
        try:
            bundle, doc = Bundle.from_json(raw), json.loads(raw)
        except Exception as exc:  # sigstore's InvalidBundle, pydantic's, JSON's
            text = _line(exc)
            return invalid(f"not a usable Sigstore bundle: {text}"
                           + (PRIVATE_REPO_HINT if NO_LOG_ENTRY in text else ""))
        san = _san(bundle)
        if self._rule.is_pattern and not self._rule.matches(san):
            return invalid(f"identity {shown(san)!r} does not match TWILIGHT_VERIFY_IDENTITY")
        if not release.revision:
            return invalid("the image has no org.opencontainers.image.revision label to "
                           "match the signed commit against")
        try:
            wanted = self._policy(san if self._rule.is_pattern else self._rule.text,
                                  release.revision.lower())
        except ValueError as exc:
            return invalid(str(exc))
        signed = "dsseEnvelope" in doc if isinstance(doc, dict) else False
        try:
            why = self._dsse(verifier, bundle, wanted, release) if signed else \
                self._message(verifier, bundle, wanted, release, payload)
        except Exception as exc:  # VerificationError and whatever a crafted bundle trips
            return invalid(_line(exc).removeprefix("Certificate's "))
        why = why or build_mismatch(release.revision, release.revision, release.tag)
        return invalid(f"signed by {shown(san)}, but {why}") if why else \
            KeylessCheck(VALID, key=san)

    def _current_verifier(self) -> Verifier:
        root = self._root.load()
        if self._verifier is None or self._verifier[0] is not root:
            self._verifier = (root, Verifier(trusted_root=root))
        return self._verifier[1]

    def _policy(self, identity: str, commit: str) -> policy.AllOf:
        """The issuer, then each GitHub claim on its own (a refusal names the one that
        differs), then the exact identity. Both the original GitHub extensions and the
        newer source-repository ones, as Fulcio writes both."""
        claims = workflow_claims(identity)
        repo_uri = f"https://github.com/{claims.repository}"
        return policy.AllOf([
            policy.OIDCIssuer(self._issuer), policy.OIDCIssuerV2(self._issuer),
            policy.GitHubWorkflowRepository(claims.repository),
            policy.GitHubWorkflowRef(claims.ref), policy.GitHubWorkflowSHA(commit),
            policy.OIDCSourceRepositoryURI(repo_uri), policy.OIDCSourceRepositoryRef(claims.ref),
            policy.OIDCSourceRepositoryDigest(commit),
            policy.Identity(identity=identity, issuer=self._issuer)])

    def _dsse(self, verifier: Verifier, bundle: Bundle, wanted: Any,
              release: Release) -> str | None:
        kind, payload = verifier.verify_dsse(bundle, wanted)
        return statement_mismatch(kind, payload, str(release.digest))

    def _message(self, verifier: Verifier, bundle: Bundle, wanted: Any, release: Release,
                 payload: bytes | None) -> str | None:
        signed = payload or cosign_payload(str(release.digest), self._reference)
        verifier.verify_artifact(signed, bundle, wanted)
        return payload_mismatch(signed, str(release.digest), self._reference, {},
                                release.revision, release.tag)


def _san(bundle: Bundle) -> str:
    """The certificate's URI SAN (a GitHub workflow's identity), or ``""``."""
    try:
        ext = bundle.signing_certificate.extensions.get_extension_for_class(
            SubjectAlternativeName)
    except Exception:  # no SAN at all: the policy's Identity refuses it with its reason
        return ""
    uris = ext.value.get_values_for_type(UniformResourceIdentifier)
    return uris[0] if uris else ""


def _line(exc: BaseException) -> str:
    """sigstore's own message; anything else (a crafted bundle tripping a parser, or a bug)
    keeps its class name, so it is not mistaken for a verdict."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, SigstoreError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return shown(text, 240)
