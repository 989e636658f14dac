"""Where registry credentials come from: token file / systemd credential, docker config, none."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from twilight_agent.adapters.registry.credentials import find_credentials, from_docker_config
from twilight_agent.app import credential_source, registry_auth
from twilight_agent.errors import ConfigError
from twilight_agent.settings import Settings, load_settings

IMAGE = "ghcr.io/lacatfly/twilight-drive"
PAT = "ghp_CredentialUnitTest0123456789"


def _docker_config(tmp_path: Path, entries: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(entries))
    return path


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_token_file_with_username(tmp_path: Path) -> None:
    token = tmp_path / "pat"
    token.write_text(PAT + "\n")
    creds = find_credentials(credential_source(Settings(image=IMAGE, registry_username="octo",
                                                        registry_password_file=token)))
    assert creds is not None
    assert (creds.username, creds.password.get_secret_value(), creds.source) == (
        "octo", PAT, "token file")
    assert PAT not in repr(creds) and PAT not in str(creds)


def test_systemd_credential_wins_over_the_docker_config(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "registry-token").write_text(PAT)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _docker_config(tmp_path, {"auths": {"ghcr.io": {"auth": _auth("other", "x")}}})
    settings = Settings(image=IMAGE, registry_username="octo", CREDENTIALS_DIRECTORY=tmp_path)
    assert registry_auth(settings) == {"username": "octo", "password": PAT}


def test_token_without_username_is_a_config_error(tmp_path: Path) -> None:
    token = tmp_path / "pat"
    token.write_text(PAT)
    with pytest.raises(ConfigError, match="TWILIGHT_REGISTRY_USERNAME is required"):
        find_credentials(credential_source(Settings(image=IMAGE, registry_password_file=token)))


def test_docker_config_entry_for_the_registry_host(tmp_path: Path) -> None:
    path = _docker_config(tmp_path, {"auths": {
        "ghcr.io": {"auth": _auth("octo", PAT)},
        "https://127.0.0.1:5000": {"auth": _auth("bed", "pw")}}})
    creds = find_credentials(credential_source(Settings(image=IMAGE)), docker_config=path)
    assert creds is not None and creds.source == "docker config"
    assert creds.auth_config() == {"username": "octo", "password": PAT}
    bed = from_docker_config("127.0.0.1:5000", path)
    assert bed is not None and bed.username == "bed"
    assert from_docker_config("registry.example", path) is None


@pytest.mark.parametrize("content", [
    {"auths": {"ghcr.io": {"identitytoken": "opaque"}}},
    {"auths": {}},
    {},
])
def test_unusable_docker_config_means_anonymous(tmp_path: Path, content: dict) -> None:
    assert from_docker_config("ghcr.io", _docker_config(tmp_path, content)) is None


def test_broken_docker_config_means_anonymous(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"ghcr.io": "not-an-object"}}')
    assert from_docker_config("ghcr.io", path) is None


def test_nothing_configured_is_anonymous(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert registry_auth(Settings(image=IMAGE)) is None


@pytest.mark.parametrize("image", ["lacatfly/twilight-drive", "twilight-drive",
                                   "ghcr.io/lacatfly/twilight-drive:main"])
def test_image_without_a_registry_host_is_a_config_error(tmp_path: Path, monkeypatch,
                                                         image: str) -> None:
    config = tmp_path / "agent.env"
    config.write_text(f"TWILIGHT_IMAGE={image}\n")
    monkeypatch.delenv("TWILIGHT_IMAGE", raising=False)
    with pytest.raises(ConfigError, match="TWILIGHT_IMAGE") as info:
        load_settings(config)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
