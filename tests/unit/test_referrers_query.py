"""The referrers query names cosign's artifact type so that a server reads it back exactly.

``application/vnd.dev.cosign.artifact.sig.v1+json`` has a ``+``, which a query decoder
(``parse_qs``, Go's ``url.ParseQuery``) turns into a space: sent raw, a registry with the
referrers API filters on a type no signature has and answers with an empty index.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from twilight_agent.adapters.registry.client import HttpRegistry
from twilight_agent.core.models import Digest
from twilight_agent.core.registry_rules import OCI_INDEX
from twilight_agent.core.signatures import COSIGN_ARTIFACT

DIGEST = Digest("sha256:" + "ab" * 32)
INDEX = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()


def test_the_request_target_percent_encodes_the_artifact_type() -> None:
    seen: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": OCI_INDEX}, content=INDEX)

    with HttpRegistry("https://ghcr.io", "owner/app",
                      transport=httpx.MockTransport(reply)) as reg:
        assert reg.referrers(DIGEST, COSIGN_ARTIFACT) is not None
    (request,) = seen
    assert request.url.raw_path == (
        f"/v2/owner/app/referrers/{DIGEST}?artifactType="
        "application%2Fvnd.dev.cosign.artifact.sig.v1%2Bjson").encode()
    assert b"+" not in request.url.query
    assert parse_qs(request.url.query.decode()) == {"artifactType": [COSIGN_ARTIFACT]}


class _Registry(BaseHTTPRequestHandler):
    """A registry without auth that answers every referrers query with an empty index."""

    targets: list[str]

    def do_GET(self) -> None:
        self.targets.append(self.path)  # the request target exactly as it came in
        ok = "/referrers/" in self.path
        self.send_response(200 if ok else 404)
        self.send_header("content-type", OCI_INDEX if ok else "application/json")
        self.send_header("content-length", str(len(INDEX) if ok else 2))
        self.end_headers()
        self.wfile.write(INDEX if ok else b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    targets: list[str] = []
    handler = type("Handler", (_Registry,), {"targets": targets})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", targets
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_real_server_decodes_exactly_the_artifact_type(
        server: tuple[str, list[str]]) -> None:
    base, targets = server
    with HttpRegistry(base, "owner/app") as reg:
        assert reg.referrers(DIGEST, COSIGN_ARTIFACT) == json.loads(INDEX)
    (target,) = [t for t in targets if "/referrers/" in t]
    parts = urlsplit(target)
    assert parts.path == f"/v2/owner/app/referrers/{DIGEST}"
    # parse_qs decodes as a server does: `+` would come back as a space.
    assert parse_qs(parts.query, strict_parsing=True) == {"artifactType": [COSIGN_ARTIFACT]}
