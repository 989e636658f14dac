"""Point a tag at a digest the registry already holds: GET the manifest's bytes by digest,
PUT the same bytes with the same media type under the tag (no blob is copied). The one
write the agent ever makes to a registry; its token (``TWILIGHT_PROMOTE_PASSWORD_FILE``
or the systemd credential ``promote-token``) asks for ``pull,push`` and is used for
nothing else.

Built on ``HttpRegistry`` (same auth, retries, bounds, destination rules), with its
session scoped for pushing.
"""

from __future__ import annotations

from typing import Any

from twilight_agent.adapters.registry.client import HttpRegistry, _digest
from twilight_agent.adapters.registry.credentials import Credentials
from twilight_agent.core.models import Digest
from twilight_agent.core.registry_rules import ACCEPT, MANIFEST_TYPES, sha256_digest
from twilight_agent.errors import ManifestNotFound, RegistryProtocolError


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


class TagPusher(HttpRegistry):
    """``tag_digest`` (HEAD), ``created`` (the build's label) and ``point`` (the PUT)."""

    def __init__(self, base_url: str, repository: str, credentials: Credentials, *,
                 session: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(base_url, repository, credentials=credentials,
                         scope=push_scope(repository), **options, **(session or {}))

    def tag_digest(self, tag: str) -> Digest | None:
        """Where ``tag`` points now; None when it does not exist yet."""
        with self._http.operation():
            return self._head_or_none(self._gate(tag))

    def point(self, tag: str, digest: Digest) -> Digest:
        """Put ``digest``'s manifest bytes under ``tag``; the digest the registry answers
        must be ``digest`` (same bytes, same media type)."""
        tag = self._gate(tag)
        with self._http.operation():
            body, media = self._raw_manifest(digest)
            reply = self._http.request("PUT", f"{self._v2}/manifests/{tag}",
                                       headers={"Content-Type": media}, content=body,
                                       what=f"PUT manifest {tag}")
        if reply.status not in (200, 201):
            raise RegistryProtocolError(f"PUT manifest {tag}: HTTP {reply.status}")
        answered = reply.headers.get("docker-content-digest") or str(digest)
        if answered != digest:
            raise RegistryProtocolError(f"PUT manifest {tag}: the registry stored "
                                        f"{answered[:19]}, not {digest[:19]}")
        return _digest(answered, f"PUT manifest {tag}")

    def _raw_manifest(self, digest: Digest) -> tuple[bytes, str]:
        reply = self._http.request("GET", f"{self._v2}/manifests/{digest}",
                                   headers={"Accept": ACCEPT}, what=f"manifest {digest.short}")
        if reply.status == 404:
            raise ManifestNotFound(f"{self.name}@{digest} does not exist")
        if reply.status != 200 or reply.content_type not in MANIFEST_TYPES:
            raise RegistryProtocolError(f"manifest {digest.short}: HTTP {reply.status}, "
                                        f"{reply.content_type[:80]!r}")
        if sha256_digest(reply.body) != digest:
            raise RegistryProtocolError(f"manifest {digest.short}: the body does not match "
                                        "its digest")
        return reply.body, reply.content_type
