"""Keyless verification on the real token-auth registry and engine: a Sigstore bundle from
the test bed's local Sigstore (testbed/sigstore_standin.py) attached to the image the way
``actions/attest-build-provenance`` pushes it (an OCI manifest whose subject is the image,
listed under the ``sha256-<hex>`` referrers tag: the bed's registry has no referrers API),
checked by the real sigstore-python against the stand-in's trusted root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from testbed.sigstore_standin import SigstoreStandin, WorkflowIdentity
from tests.integration.deploybed import Site, push
from tests.integration.test_signatures import engine_has
from twilight_agent.core import keyless as kl
from twilight_agent.core import registry_rules as rr
from twilight_agent.core.signatures import referrers_tag

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]

MAIN = WorkflowIdentity(repository="lacatfly/twilight-demo")
EMPTY = b"{}"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> SigstoreStandin:
    return SigstoreStandin(tmp_path_factory.mktemp("sigstore"))


def attach(site: Site, digest: str, bundle: dict[str, Any]) -> None:
    """The bundle as a layer of an OCI manifest whose subject is the image, and that
    manifest listed in the ``sha256-<hex>`` index (the referrers tag schema)."""
    raw, raw_reg, repo = json.dumps(bundle).encode(), site.bed.raw, site.repo
    raw_reg.put_blob(repo, raw)
    raw_reg.put_blob(repo, EMPTY)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": rr.OCI_MANIFEST, "artifactType": kl.BUNDLE_V03,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(EMPTY),
                   "size": 2},
        "layers": [{"mediaType": kl.BUNDLE_V03, "digest": sha(raw), "size": len(raw)}],
        "subject": {"mediaType": rr.OCI_MANIFEST, "digest": digest, "size": 1}}).encode()
    m_digest = raw_reg.put_manifest(repo, sha(manifest), manifest, rr.OCI_MANIFEST)
    index = json.dumps({"schemaVersion": 2, "mediaType": rr.OCI_INDEX, "manifests": [
        {"mediaType": rr.OCI_MANIFEST, "digest": m_digest, "size": len(manifest),
         "artifactType": kl.BUNDLE_V03,
         "annotations": {kl.PREDICATE_ANNOTATION: kl.SLSA_V1}}]}).encode()
    raw_reg.put_manifest(repo, referrers_tag(digest), index, rr.OCI_INDEX)


def configure(site: Site, standin: SigstoreStandin) -> None:
    root = standin.write_trusted_root(site.tmp / "trusted_root.json")
    site.config.update(VERIFY_IDENTITY=MAIN.san, VERIFY_TRUSTED_ROOT=str(root))


def test_provenance_of_the_main_workflow_is_deployed_and_a_feature_one_refused(
        site: Site, standin: SigstoreStandin) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    feature = push(site, "v2", revision=MAIN.sha)
    who = dataclasses.replace(MAIN, ref="refs/heads/feature")
    attach(site, feature.digest, standin.provenance_bundle(feature.digest, who,
                                                           image=f"{site.bed.host}/{site.repo}"))
    configure(site, standin)
    refused = site.cli("deploy")
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "GitHubWorkflowRef does not match" in refused.stderr, refused.stderr
    assert site.running_digest() == v1.digest and not engine_has(site, feature)
    assert site.history()[0]["outcome"] == "untrusted"

    good = push(site, "v3", revision=MAIN.sha.replace("0", "a"))
    mine = dataclasses.replace(MAIN, sha=good.revision)
    attach(site, good.digest, standin.provenance_bundle(good.digest, mine,
                                                        image=f"{site.bed.host}/{site.repo}"))
    p = site.cli("deploy")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert site.running_digest() == good.digest
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"], row.get("verified")) == (
        "deployed", good.digest, True), row


