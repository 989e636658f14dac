"""A deliberately small registry client for the bed's own use (seeding, tag floods, indexes).

Independent of the agent's registry adapter, so tests of that adapter are not circular.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from testbed.services import PASSWORD, REGISTRY_URL, USERNAME

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RawRegistry:
    def __init__(self, base_url: str = REGISTRY_URL, username: str = USERNAME,
                 password: str = PASSWORD) -> None:
        self.base = base_url.rstrip("/")
        self._auth = (username, password)
        self._tokens: dict[str, str] = {}
        self._http = httpx.Client(timeout=30)

    def close(self) -> None:
        self._http.close()

    def _token(self, repo: str) -> str:
        if repo not in self._tokens:
            challenge = self._http.get(f"{self.base}/v2/").headers["www-authenticate"]
            params = dict(p.split("=", 1) for p in challenge[len("Bearer "):].split(","))
            realm = params["realm"].strip('"')
            service = params["service"].strip('"')
            r = self._http.get(realm, params={"service": service,
                                              "scope": f"repository:{repo}:pull,push,delete"},
                               auth=self._auth)
            r.raise_for_status()
            self._tokens[repo] = r.json()["token"]
        return self._tokens[repo]

    def _req(self, method: str, repo: str, path: str, **kw: object) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
        headers["Authorization"] = f"Bearer {self._token(repo)}"
        r = self._http.request(method, f"{self.base}/v2/{repo}/{path}", headers=headers, **kw)  # type: ignore[arg-type]
        return r

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        r = self._req("GET", repo, f"manifests/{ref}", headers={"Accept": ACCEPT})
        r.raise_for_status()
        return r.content, r.headers["content-type"], sha256(r.content)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        r = self._req("PUT", repo, f"manifests/{ref}", content=body,
                      headers={"Content-Type": media_type})
        if r.status_code >= 300:
            raise RuntimeError(f"PUT manifest {repo}:{ref} -> {r.status_code} {r.text[:300]}")
        return sha256(body)

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        r = self._req("POST", repo, "blobs/uploads/")
        r.raise_for_status()
        loc = r.headers["location"]
        url = loc if loc.startswith("http") else self.base + loc
        sep = "&" if "?" in url else "?"
        r2 = self._http.put(f"{url}{sep}digest={digest}", content=data,
                            headers={"Authorization": f"Bearer {self._token(repo)}",
                                     "Content-Type": "application/octet-stream"})
        if r2.status_code >= 300:
            raise RuntimeError(f"blob upload -> {r2.status_code} {r2.text[:300]}")
        return digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        r = self._req("GET", repo, f"blobs/{digest}", follow_redirects=True)
        r.raise_for_status()
        return r.content

    def delete_manifest(self, repo: str, digest: str) -> None:
        r = self._req("DELETE", repo, f"manifests/{digest}")
        if r.status_code >= 300:
            raise RuntimeError(f"DELETE {repo}@{digest} -> {r.status_code} {r.text[:300]}")

    def tags(self, repo: str) -> list[str]:
        out: list[str] = []
        path = "tags/list?n=1000"
        while path:
            r = self._req("GET", repo, path)
            r.raise_for_status()
            out += r.json().get("tags") or []
            link = r.headers.get("link", "")
            path = link.split(";")[0].strip("<> ").split(f"/v2/{repo}/", 1)[-1] if link else ""
        return out

    def tag(self, repo: str, src_ref: str, *new_tags: str) -> str:
        """Point ``new_tags`` at whatever ``src_ref`` is (a server-side retag)."""
        body, media_type, digest = self.get_manifest(repo, src_ref)
        if len(new_tags) < 50:
            for t in new_tags:
                self.put_manifest(repo, t, body, media_type)
            return digest
        # thousands of tags (the tag-count tests): eight at a time, the registry keeps up
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda t: self.put_manifest(repo, t, body, media_type), new_tags))
        return digest

    def make_index(self, repo: str, amd64_ref: str, *, tags: list[str],
                   media_type: str = OCI_INDEX, with_attestation: bool = True) -> str:
        """Publish a multi-arch index: the real amd64 image, a fake arm64 twin, an attestation.

        The arm64 entry reuses the layers with a config that says arm64, so only the
        daemon's own platform is runnable, as on a real multi-arch push.
        """
        body, mt, amd_digest = self.get_manifest(repo, amd64_ref)
        manifest = json.loads(body)
        config = json.loads(self.get_blob(repo, manifest["config"]["digest"]))
        config["architecture"] = "arm64"
        config["variant"] = "v8"
        cfg_bytes = json.dumps(config).encode()
        manifest["config"] = {**manifest["config"], "digest": self.put_blob(repo, cfg_bytes),
                              "size": len(cfg_bytes)}
        arm_body = json.dumps(manifest).encode()
        arm_digest = self.put_manifest(repo, sha256(arm_body), arm_body, mt)
        entries = [
            {"mediaType": mt, "digest": arm_digest, "size": len(arm_body),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": mt, "digest": amd_digest, "size": len(body),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]
        if with_attestation:
            att_cfg = self.put_blob(repo, b"{}")
            att = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                              "digest": att_cfg, "size": 2},
                   "layers": []}
            att_body = json.dumps(att).encode()
            att_digest = self.put_manifest(repo, sha256(att_body), att_body, OCI_MANIFEST)
            # buildx lists the attestation with an unknown platform; it must be skipped.
            entries.insert(0, {"mediaType": OCI_MANIFEST, "digest": att_digest,
                               "size": len(att_body),
                               "platform": {"architecture": "unknown", "os": "unknown"},
                               "annotations": {
                                   "vnd.docker.reference.type": "attestation-manifest",
                                   "vnd.docker.reference.digest": amd_digest}})
        index = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
        index_body = json.dumps(index).encode()
        digest = ""
        for t in tags:
            digest = self.put_manifest(repo, t, index_body, media_type)
        return digest
