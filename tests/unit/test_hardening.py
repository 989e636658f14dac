"""Files and settings a careless operator or a local attacker could get wrong: the agent
refuses, in one line, and changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog.testing

from twilight_agent.adapters.notify.webhook import tail_lines
from twilight_agent.adapters.state.envfile import read_image_tag, write_image_tag
from twilight_agent.adapters.state.lock import DeployLock
from twilight_agent.adapters.state.store import Store
from twilight_agent.errors import ConfigError, InvalidInput
from twilight_agent.settings import load_settings

GOOD = "TWILIGHT_IMAGE=ghcr.io/acme/app\nTWILIGHT_CONTAINER=app\n"


def test_env_file_behind_a_symlink_is_neither_read_nor_written(tmp_path: Path) -> None:
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    link = tmp_path / ".env"
    link.symlink_to(victim)
    assert read_image_tag(link) is None
    with pytest.raises(InvalidInput, match="is a symlink"):
        write_image_tag(link, "sha-abcdef0")
    assert victim.read_text() == "root:x:0:0\n" and link.is_symlink()


def test_env_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / ".env"
    os.mkfifo(fifo)
    assert read_image_tag(fifo) is None
    with pytest.raises(InvalidInput, match="not a regular file"):
        write_image_tag(fifo, "sha-abcdef0")


def test_lock_and_store_refuse_a_planted_symlink(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (state / "deploy.lock").symlink_to(target)
    with pytest.raises(InvalidInput, match="lock file"):
        DeployLock(state).acquire()
    (state / "state.db").symlink_to(target)
    with pytest.raises(InvalidInput, match="symlink"):
        Store(state).quarantined()
    assert target.read_text() == "keep\n"


@pytest.mark.parametrize(("line", "message"), [
    ("TWILIGHT_HEALTH_URL=ftp://x/healthz\n", "TWILIGHT_HEALTH_URL must be an http"),
    ("TWILIGHT_WEBHOOK_URL=hooks.example/x\n", "TWILIGHT_WEBHOOK_URL must be an http"),
    ("TWILIGHT_POLL_INTERVAL=0\n", "TWILIGHT_POLL_INTERVAL must be > 0"),
    ("TWILIGHT_PRUNE_AFTER=31d\n", "at most 30 days"),
    ("TWILIGHT_HEALTH_TIMEOUT=2s\nTWILIGHT_HEALTH_INTERVAL=5s\n", "longer than"),
    ("TWILIGHT_WEBHOOK_LOG_LINES=-1\n", "TWILIGHT_WEBHOOK_LOG_LINES"),
    ("TWILIGHT_PRE_DEPLOY=sh -c 'unclosed\n", "TWILIGHT_PRE_DEPLOY"),
])
def test_settings_out_of_range_are_one_line_config_errors(tmp_path: Path, line: str,
                                                          message: str) -> None:
    cfg = tmp_path / "agent.env"
    cfg.write_text(GOOD + line)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_webhook_log_tail_keeps_the_last_lines_or_none() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    assert tail_lines(text, 3) == "line 97\nline 98\nline 99\n"
    assert tail_lines(text, 0) == ""


def test_a_token_file_others_can_read_is_warned_about_once(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("ghp_secretsecretsecret\n")
    token.chmod(0o644)
    cfg = tmp_path / "agent.env"
    cfg.write_text(GOOD + f"TWILIGHT_REGISTRY_PASSWORD_FILE={token}\n")
    settings = load_settings(cfg)
    with structlog.testing.capture_logs() as logs:
        assert settings.registry_password() is not None
        settings.registry_password()
    warned = [e for e in logs if e["event"] == "password_file_readable_by_others"]
    assert len(warned) == 1 and warned[0]["fix"] == f"chmod 600 {token}"
    assert "ghp_secret" not in repr(logs)
