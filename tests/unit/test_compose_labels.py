"""The labels compose would give a service's new container: compose's own ``config --hash``
on a private copy of the rewritten ``.env``, and (v2) the new image's id."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from twilight_agent.adapters.docker import compose_labels as cl

DIGEST = "sha256:" + "d" * 64
V2 = {cl.PROJECT: "shop", cl.SERVICE: "web", cl.VERSION: "2.26.1", cl.IMAGE: "sha256:old",
      cl.CONFIG_HASH: "old", cl.WORKING_DIR: "/srv/shop",
      cl.CONFIG_FILES: "/srv/shop/compose.yml,/srv/shop/override.yml"}
V1 = {cl.PROJECT: "shop", cl.SERVICE: "web", cl.VERSION: "1.29.2", cl.CONFIG_HASH: "old",
      cl.WORKING_DIR: "/srv/shop", cl.CONFIG_FILES: "compose.yml"}


class Compose:
    """Stands in for ``subprocess.run``: records each call and the env file it was given,
    and answers ``web old`` for the .env as it is, ``web 0123abcd`` for the rewritten one."""

    def __init__(self, out: str = "web 0123abcd\n", code: int = 0, now: str = "old") -> None:
        self.out, self.code, self.now, self.calls = out, code, now, []  # type: ignore[var-annotated]

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        text = Path(argv[argv.index("--env-file") + 1]).read_text()
        self.calls.append((argv, kw, text))
        out = self.out if "IMAGE_DIGEST" in text else f"web {self.now}\n"
        return subprocess.CompletedProcess(argv, self.code, out, "")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(cl.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("IMAGE_TAG", "from-the-agent-env")
    f = tmp_path / ".env"
    f.write_text("COMPOSE_PROJECT_NAME=shop\nIMAGE_TAG=sha-1111111\n")
    return f


def test_v2_gets_compose_s_hash_for_the_rewritten_env_and_the_new_image_id(env: Path) -> None:
    run = Compose()
    relabel = cl.relabeller(env, "sha-2222222", DIGEST, "unix:///run/d.sock", run=run)
    assert relabel(V2, "sha256:new") == {cl.IMAGE: "sha256:new", cl.CONFIG_HASH: "0123abcd"}
    assert len(run.calls) == 2  # the .env as it is (agrees with the label), then the new one
    argv, kw, seen = run.calls[1]
    assert argv[:2] == ["/usr/bin/docker", "compose"]
    assert argv[-3:] == ["config", "--hash", "web"]
    assert argv.count("-f") == 2 and argv[argv.index("-p"):][:2] == ["-p", "shop"]
    assert seen == f"COMPOSE_PROJECT_NAME=shop\nIMAGE_TAG=sha-2222222\nIMAGE_DIGEST=@{DIGEST}\n"
    assert "IMAGE_TAG" not in kw["env"] and kw["env"]["DOCKER_HOST"] == "unix:///run/d.sock"
    assert kw["cwd"] == "/srv/shop"
    assert env.read_text() == "COMPOSE_PROJECT_NAME=shop\nIMAGE_TAG=sha-1111111\n"  # untouched
    assert not Path(argv[argv.index("--env-file") + 1]).exists()  # the copy is gone


def test_v1_uses_docker_compose_and_has_no_image_label(env: Path) -> None:
    run = Compose()
    relabel = cl.relabeller(env, "sha-2222222", DIGEST, "unix:///d.sock", run=run)
    assert relabel(V1, "sha256:new") == {cl.CONFIG_HASH: "0123abcd"}
    assert run.calls[1][0][0] == "/usr/bin/docker-compose"


def test_one_hash_per_service_however_many_replicas(env: Path) -> None:
    run = Compose()
    relabel = cl.relabeller(env, "sha-2222222", DIGEST, "", run=run)
    for number in ("1", "2", "3"):
        relabel({**V2, "com.docker.compose.container-number": number}, "sha256:new")
    assert len(run.calls) == 2


@pytest.mark.parametrize("run", [Compose(code=1), Compose(out="other 99\n"),
                                 Compose(now="edited-since")])
def test_no_answer_or_one_that_disagrees_with_the_old_label_changes_nothing(
        env: Path, run: Compose) -> None:
    """``now="edited-since"``: compose's hash of the .env as it is is not the container's
    (a compose file edited since, or compose 2.26 and env_file): up -d must still see it."""
    relabel = cl.relabeller(env, "sha-2222222", DIGEST, "", run=run)
    assert relabel(V2, "sha256:new") == {}


def test_not_a_compose_container_or_no_compose_on_the_host(
        env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = Compose()
    assert cl.relabeller(env, "t", DIGEST, "", run=run)({"a": "b"}, "sha256:new") == {}
    monkeypatch.setattr(cl.shutil, "which", lambda name: None)
    assert cl.relabeller(env, "sha-2222222", DIGEST, "", run=run)(V1, "sha256:new") == {}
    assert run.calls == []


def test_a_compose_that_prints_without_end_or_hangs_is_cut_off(tmp_path: Path) -> None:
    """``config --hash`` output is read under a byte cap and a deadline; the process and
    what it started (a child holding the pipe) are killed, and the answer is a failure."""
    env = {"PATH": "/usr/bin:/bin"}
    t0 = time.monotonic()
    endless = cl.capped_run(["sh", "-c", "yes web 0123abcd & wait"], cwd=str(tmp_path), env=env,
                            timeout=30, cap=4096)
    assert endless.returncode != 0 and len(endless.stdout) <= 4096
    hung = cl.capped_run(["sh", "-c", "echo web 1; sleep 60 & wait"], cwd=str(tmp_path),
                         env=env, timeout=0.5)
    assert hung.returncode != 0 and hung.stdout == "web 1\n"
    assert time.monotonic() - t0 < 10
    good = cl.capped_run(["sh", "-c", "echo web 0123abcd"], cwd=str(tmp_path), env=env,
                         timeout=5)
    assert (good.returncode, good.stdout) == (0, "web 0123abcd\n")
