"""A Sigstore bundle attached to an image in the bed's registry the way
``actions/attest-build-provenance`` pushes it: an OCI manifest whose one layer is the
bundle and whose subject is the image, listed in the ``sha256-<hex>`` referrers tag (the
OCI 1.1 tag schema: the bed's registry has no referrers API).

The media types are written out here rather than taken from the agent, so the bed says
what GitHub pushes, not what the agent expects.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from testbed.rawclient import RawRegistry

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
SLSA_V1 = "https://slsa.dev/provenance/v1"
EMPTY = b"{}"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attach_bundle(raw: RawRegistry, repo: str, digest: str, bundle: dict[str, Any]) -> str:
    """Push ``bundle`` as the referrer of ``repo@digest``; the referrer manifest's digest."""
    body = json.dumps(bundle).encode()
    raw.put_blob(repo, body)
    raw.put_blob(repo, EMPTY)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_V03,
        "config": {"mediaType": EMPTY_CONFIG, "digest": _sha(EMPTY), "size": len(EMPTY)},
        "layers": [{"mediaType": BUNDLE_V03, "digest": _sha(body), "size": len(body)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": 1}}).encode()
    referrer = raw.put_manifest(repo, _sha(manifest), manifest, OCI_MANIFEST)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": referrer, "size": len(manifest),
         "artifactType": BUNDLE_V03, "annotations": {PREDICATE_ANNOTATION: SLSA_V1}}]}).encode()
    raw.put_manifest(repo, digest.replace(":", "-", 1), index, OCI_INDEX)
    return referrer
