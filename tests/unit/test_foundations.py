"""Settings, durations, image references, the tag gate and log redaction."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twilight_agent import logs
from twilight_agent.core.durations import parse_duration
from twilight_agent.core.models import Digest, ImageRef
from twilight_agent.core.policy import DEFAULT_TAG_PATTERN, check_tag, sha_tag
from twilight_agent.errors import ConfigError
from twilight_agent.settings import load_settings

GOOD = "TWILIGHT_IMAGE=ghcr.io/lacatfly/twilight-drive\nTWILIGHT_CONTAINER=app\n"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("TWILIGHT_") or key == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(key)


def _cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.env"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("2m", 120), ("168h", 604800), ("1h30m", 5400), ("500ms", 0.5),
    (" 7d ", 604800), (5, 5.0),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "m5", "-5", "5m abc", "1.2.3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_settings_from_file_and_defaults(tmp_path: Path) -> None:
    s = load_settings(_cfg(tmp_path, GOOD + "TWILIGHT_HEALTH_TIMEOUT=2m\n"))
    assert s.health_timeout == 120 and s.health_interval == 2 and s.health_soak == 10
    assert s.track == "main" and s.pin == "" and s.poll_interval == 60
    assert s.registry_base == "https://ghcr.io"
    assert s.image_ref == ImageRef("ghcr.io", "lacatfly/twilight-drive")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIGHT_TRACK", "latest")
    assert load_settings(_cfg(tmp_path, GOOD + "TWILIGHT_TRACK=main\n")).track == "latest"


@pytest.mark.parametrize(("extra", "needle"), [
    ("TWILIGHT_HEALTH_TIMOUT=3\n", "unknown setting TWILIGHT_HEALTH_TIMOUT"),
    ("TWILIGHT_HEALTH_TIMEOUT=soon\n", "TWILIGHT_HEALTH_TIMEOUT: invalid duration"),
    ("TWILIGHT_PIN=$(reboot)\n", "TWILIGHT_PIN: tag"),
    ("TWILIGHT_PIN=feature-x\n", "does not match the tag pattern"),
    ("TWILIGHT_COMPOSE_PROJECT=p\n", "not both"),
    ("TWILIGHT_REGISTRY_URL=ftp://x\n", "http:// or https://"),
    ("TWILIGHT_LOG_FORMAT=xml\n", "TWILIGHT_LOG_FORMAT"),
])
def test_broken_config_is_one_clear_line(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(_cfg(tmp_path, GOOD + extra))
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_image_without_registry_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registry host"):
        load_settings(_cfg(tmp_path, "TWILIGHT_IMAGE=lacatfly/twilight-drive\n"))


def test_missing_config_file_named_explicitly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.env")


def test_registry_token_prefers_systemd_credential(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "registry-token").write_text("ghp_fromcredential\n")
    (tmp_path / "pat").write_text("ghp_fromfile\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings(_cfg(tmp_path, GOOD + f"TWILIGHT_REGISTRY_PASSWORD_FILE={tmp_path}/pat\n"))
    secret = s.registry_password()
    assert secret is not None and secret.get_secret_value() == "ghp_fromcredential"
    assert "ghp_" not in repr(s) and "ghp_" not in str(secret)


def test_missing_password_file_is_a_config_error(tmp_path: Path) -> None:
    s = load_settings(_cfg(tmp_path, GOOD + "TWILIGHT_REGISTRY_PASSWORD_FILE=/nonexistent\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        s.registry_password()


@pytest.mark.parametrize("text", ["ghcr.io/a/b", "127.0.0.1:5000/bed/x/app", "localhost/a"])
def test_image_refs(text: str) -> None:
    assert str(ImageRef.parse(text)) == text


@pytest.mark.parametrize("text", ["a/b", "ghcr.io/a/b:latest", "ghcr.io/a/b@sha256:00",
                                  "ghcr.io/A/b", "ghcr.io/", "ghcr.io/a//b", "ghcr.io/a/b;rm"])
def test_bad_image_refs(text: str) -> None:
    with pytest.raises(ValueError):
        ImageRef.parse(text)


def test_digest() -> None:
    d = Digest("sha256:" + "ab" * 32)
    assert d.short == "abababababab"
    for bad in ["sha256:abc", "sha512:" + "a" * 64, "sha256:" + "A" * 64, ""]:
        with pytest.raises(ValueError):
            Digest(bad)


@pytest.mark.parametrize("tag", ["sha-1a2b3c4", "latest", "main", "v1.2.3"])
def test_tag_gate_accepts(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize(("tag", "needle"), [
    ("", "empty"), ("x" * 300, "300 characters"), ("sha-1a2b3c4; rm -rf /", "characters"),
    ("$(id)", "characters"), ("sha-1A2B3C4", "pattern"), ("feature", "pattern"),
    ("v1.2", "pattern"), ("../etc", "characters"),
])
def test_tag_gate_refuses(tag: str, needle: str) -> None:
    with pytest.raises(ValueError) as exc:
        check_tag(tag)
    assert needle in str(exc.value) and len(str(exc.value)) < 200


@given(st.text(max_size=400))
def test_tag_gate_never_passes_what_the_pattern_refuses(tag: str) -> None:
    import re

    try:
        check_tag(tag)
    except ValueError as exc:
        assert "\n" not in str(exc) or "\n" in tag[:40]
        return
    assert re.match(DEFAULT_TAG_PATTERN, tag) and len(tag) <= 128


def test_sha_tag() -> None:
    assert sha_tag("1A2B3C4D5E6F") == "sha-1a2b3c4"


def test_log_redaction() -> None:
    out = io.StringIO()
    logs.configure("json", stream=out)
    logs.get_logger().info("token_fetched", token="ghp_secret123", password="hunter2",
                           header="Authorization: Bearer abcdefghijklmnop", user="ci")
    line = json.loads(out.getvalue())
    assert line["token"] == line["password"] == logs.REDACTED
    assert "abcdefghijklmnop" not in out.getvalue() and "ghp_secret123" not in out.getvalue()
    assert line["user"] == "ci" and line["event"] == "token_fetched"
