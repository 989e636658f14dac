"""``twilight-agent check`` end to end: a real container, the bed's registry, the state store."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from testbed.images import AppImage
from twilight_agent import cli
from twilight_agent.app import build_store
from twilight_agent.settings import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``check`` sets up logging to the (captured) stderr; give later tests the defaults."""
    yield
    structlog.reset_defaults()


@dataclass
class Target:
    image: AppImage
    container_id: str
    name: str
    config: Path


@pytest.fixture
def target(bed, repo, cleanup, tmp_path: Path, monkeypatch) -> Target:
    """v1 pushed on main and running as ``<uid>-web`` (pulled by digest, tagged sha-*)."""
    for key in [k for k in os.environ if k.startswith("TWILIGHT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    img = bed.push(repo, version="v1")
    pulled = bed.docker.images.pull(f"{img.ref}@{img.digest}", auth_config=bed.auth)
    pulled.tag(img.ref, img.sha_tag)
    container = bed.docker.containers.run(f"{img.ref}:{img.sha_tag}", name=f"{cleanup}-web",
                                          detach=True)
    config = tmp_path / "agent.env"
    config.write_text(f"TWILIGHT_IMAGE={img.ref}\nTWILIGHT_REGISTRY_URL={bed.registry_url}\n"
                      f"TWILIGHT_CONTAINER={cleanup}-web\nTWILIGHT_STATE_DIR={tmp_path}/state\n")
    return Target(img, container.id, f"{cleanup}-web", config)


def run_check(capsys, target: Target, *extra: str, json_out: bool = True) -> tuple[int, dict]:
    if extra:
        target.config.write_text(target.config.read_text() + "".join(f"{e}\n" for e in extra))
    code = cli.main(["--config", str(target.config), "check", *(["--json"] if json_out else [])])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if json_out else {"text": out.out, "err": out.err})


def test_up_to_date_then_a_new_build_would_be_deployed(bed, repo, target, capsys) -> None:
    code, report = run_check(capsys, target)
    assert (code, report["decision"]) == (0, "up_to_date")
    assert report["running"] == {"container": target.name, "kind": "container",
                                 "tag": target.image.sha_tag,
                                 "digest": target.image.digest}
    v2 = bed.push(repo, version="v2")
    code, report = run_check(capsys, target)
    assert (code, report["decision"]) == (0, "deploy")
    assert report["candidate"]["tag"] == v2.sha_tag
    assert report["candidate"]["digest"] == v2.digest
    assert report["candidate"]["revision"] == v2.revision
    # check changed nothing: same container, same image, the new build not even pulled
    container = bed.docker.containers.get(target.container_id)
    assert container.status == "running" and container.image.id == target.image.image_id
    assert not [i for i in bed.docker.images.list(name=v2.ref)
                if f"{v2.ref}@{v2.digest}" in i.attrs.get("RepoDigests", [])]
    # human form
    code, text = run_check(capsys, target, json_out=False)
    assert code == 0
    assert f"running:   {target.image.sha_tag}  {target.image.digest}" in text["text"]
    assert f"candidate: {v2.sha_tag}  {v2.digest}  (track main" in text["text"]
    assert "decision:  deploy:" in text["text"]


def test_quarantined_candidate_is_not_deployed(bed, repo, target, capsys) -> None:
    v2 = bed.push(repo, version="v2", mode="exit")
    settings = load_settings(target.config)
    store = build_store(settings)
    store.quarantine(v2.digest, v2.sha_tag, "exited with code 3")
    code, report = run_check(capsys, target)
    assert (code, report["decision"]) == (0, "quarantined")
    assert report["candidate"]["digest"] == v2.digest


def test_pinned_version_running(bed, repo, target, capsys) -> None:
    bed.push(repo, version="v2")  # main moves on; the pin holds
    code, report = run_check(capsys, target, f"TWILIGHT_PIN={target.image.sha_tag}")
    assert (code, report["decision"]) == (0, "pinned")
    assert report["candidate"]["source"] == "pin"
    assert report["candidate"]["digest"] == target.image.digest


def test_registry_unreachable_exits_5(target, capsys) -> None:
    code, report = run_check(capsys, target, "TWILIGHT_REGISTRY_URL=http://127.0.0.1:9")
    assert (code, report["decision"]) == (5, "registry_unreachable")
    assert report["candidate"] is None
    assert "connection failed" in report["errors"][0]


def test_bad_pin_exits_2_with_one_line(target, capsys) -> None:
    code, out = run_check(capsys, target, "TWILIGHT_PIN=v1;reboot", json_out=False)
    assert code == 2 and out["text"] == ""
    assert out["err"].count("\n") == 1 and "TWILIGHT_PIN" in out["err"]
