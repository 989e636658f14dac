"""Keyless verification on the real token-auth registry and engine: a Sigstore bundle from
the test bed's local Sigstore (testbed/sigstore_standin.py) attached to the image the way
``actions/attest-build-provenance`` pushes it (an OCI manifest whose subject is the image,
listed under the ``sha256-<hex>`` referrers tag: the bed's registry has no referrers API),
checked by the real sigstore-python against the stand-in's trusted root.

Each refusal the issue names (another ref, repository, issuer or commit, a tampered payload,
a timestamp from a TSA outside the root, an expired certificate without proof it signed in
time) happens before any layer is fetched and quarantines the build with the verifier's
reason; ``rollback``, a named tag and a pin go through the same verification.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from testbed.accesslog import AccessLog
from testbed.images import AppImage
from testbed.sigstore_oci import attach_bundle
from testbed.sigstore_standin import Proof, SigstoreStandin, WorkflowIdentity
from tests.integration.deploybed import Site, push
from tests.integration.test_signatures import assert_refused, engine_has, layers_fetched
from twilight_agent import app

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]

MAIN = WorkflowIdentity(repository="lacatfly/twilight-demo")


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> SigstoreStandin:
    return SigstoreStandin(tmp_path_factory.mktemp("sigstore"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> SigstoreStandin:
    """Another Sigstore altogether: its TSA is in no trust root here."""
    return SigstoreStandin(tmp_path_factory.mktemp("stranger"))


def attach(site: Site, digest: str, bundle: dict[str, Any]) -> None:
    attach_bundle(site.bed.raw, site.repo, digest, bundle)


def attest(site: Site, standin: SigstoreStandin, img: AppImage) -> None:
    """Provenance of ``img`` from the main workflow at its own commit: what CI attaches."""
    who = dataclasses.replace(MAIN, sha=img.revision)
    attach(site, img.digest, standin.provenance_bundle(img.digest, who,
                                                       image=f"{site.bed.host}/{site.repo}"))


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
    attest(site, standin, good)
    p = site.cli("deploy")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert site.running_digest() == good.digest
    row = site.history()[0]
    assert (row["outcome"], row["to_digest"], row.get("verified")) == (
        "deployed", good.digest, True), row




# ------------------------------------------------------------------ what is refused (#29)
Bad = Callable[[SigstoreStandin, SigstoreStandin, str], dict[str, Any]]


def ago(hours: float = 0) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=hours)


def claiming(**claims: str) -> Bad:
    """Provenance of the digest whose certificate says ``claims`` instead of main's."""
    who = dataclasses.replace(MAIN, **claims)
    return lambda ours, _, digest: ours.provenance_bundle(digest, who)


def proven(proof: Callable[[SigstoreStandin], Proof]) -> Bad:
    """Provenance from main whose proof of time is ``proof(stranger)``."""
    return lambda ours, stranger, digest: ours.provenance_bundle(digest, MAIN, proof(stranger))


def tampered(ours: SigstoreStandin, _: SigstoreStandin, digest: str) -> dict[str, Any]:
    """Provenance of another digest, its statement then edited to name this one."""
    bundle = ours.provenance_bundle("sha256:" + "00" * 32, MAIN)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = digest.removeprefix("sha256:")
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return bundle


# What the verifier says of each (tests/unit/test_keyless.py shows the same wording).
REFUSED: dict[str, tuple[Bad, str]] = {
    "a feature branch": (claiming(ref="refs/heads/feature"),
                           "GitHubWorkflowRef does not match (got 'refs/heads/feature', "
                           "expected 'refs/heads/main')"),
    "another repository": (claiming(repository="OTHER/REPO"),
                           "GitHubWorkflowRepository does not match (got 'OTHER/REPO', "
                           f"expected '{MAIN.repository}')"),
    "another issuer": (claiming(issuer="https://issuer.other.test"),
                       "OIDCIssuer does not match (got 'https://issuer.other.test'"),
    "a commit that is not the revision label": (
        claiming(sha="f" * 40),
        f"GitHubWorkflowSHA does not match (got '{'f' * 40}', expected '{MAIN.sha}')"),
    "a tampered payload": (tampered, "DSSE: invalid signature"),
    "a timestamp from a TSA outside the root": (
        proven(lambda stranger: Proof(log="v2", timestamp=True, tsa=stranger)),
        "not enough sources of verified time"),
    "an expired certificate logged after it expired": (
        proven(lambda _: Proof(signed_at=ago(2), proven_at=ago())),
        "cert is not valid at validation time"),
    "an expired certificate with no time at all": (
        proven(lambda _: Proof(log="v2", signed_at=ago(2))),
        "bundle must contain an inclusion promise or signed timestamp(s)"),
}


@pytest.mark.parametrize(("bad", "why"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_before_pull_and_quarantined_naming_the_mismatch(
        site: Site, standin: SigstoreStandin, stranger: SigstoreStandin, bad: Bad,
        why: str) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", revision=MAIN.sha)  # every claim but the one in question agrees
    attach(site, v2.digest, bad(standin, stranger, v2.digest))
    configure(site, standin)
    log = AccessLog()
    assert_refused(site, v2, v1, site.cli("deploy"), why)  # exit 1, quarantined, no image
    assert layers_fetched(site, v2, log) == []  # nor the retry: nothing of it was pulled
    (q,) = site.status()["quarantined"]
    (row,) = [r for r in site.history() if r["outcome"] == "untrusted"]
    assert why in q["reason"] and why in row["reason"], (q, row)


# ------------------------------------------------------------------ the other ways in
def test_rollback_verifies_a_digest_this_host_never_verified(
        site: Site, standin: SigstoreStandin) -> None:
    v1 = push(site, "v1")  # deployed before keyless verification was configured
    site.run_app(v1)
    v2 = push(site, "v2")
    assert site.cli("deploy").returncode == 0 and site.running_digest() == v2.digest
    configure(site, standin)

    refused = site.cli("rollback")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "rollback to" in refused.stderr and "signature is missing (no Sigstore bundle " \
        f"refers to {v1.digest[7:19]}" in refused.stderr, refused.stderr
    assert site.running_digest() == v2.digest
    attest(site, standin, v1)
    done = site.cli("rollback")
    assert done.returncode == 0 and site.running_digest() == v1.digest, done.stderr
    row = site.history()[0]
    assert (row["trigger"], row["to_digest"], row["verified"]) == ("rollback", v1.digest,
                                                                    True)


def test_a_named_tag_or_a_pin_without_provenance_is_refused_before_pull(
        site: Site, standin: SigstoreStandin) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", branch="feature")
    configure(site, standin)
    log = AccessLog()
    named = site.cli("deploy", v2.sha_tag)  # an operator: refused, nothing quarantined
    assert named.returncode == 2 and "has no signature (yet)" in named.stderr, named.stderr
    assert site.status()["quarantined"] == [] and not engine_has(site, v2)
    assert layers_fetched(site, v2, log) == []
    v3 = push(site, "v3", branch="feature")  # a daemon following a pin waits, then refuses
    agent = app.build_agent(site.settings(PIN=v3.sha_tag, VERIFY_GRACE="0.001"))
    try:
        seen, refused, again = agent.poll_once(), agent.poll_once(), agent.poll_once()
    finally:
        agent.close()
    assert seen.outcome == "waiting", seen  # its first sighting starts the grace
    assert (refused.outcome, refused.exit_code) == ("untrusted", 1), refused
    assert refused.reason.startswith("signature: missing (no Sigstore bundle refers to")
    assert again.outcome == "quarantined"  # waits for another pin or an attestation
    assert site.running_digest() == v1.digest and not engine_has(site, v3)
