"""The configuration reference and the example config are generated: they cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError

from twilight_agent.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "scripts" / "gen_docs.py"
sys.path.insert(0, str(GEN.parent))
import gen_docs  # noqa: E402


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(GEN), "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"{result.stdout}{result.stderr}run: .venv/bin/python scripts/gen_docs.py")


def test_every_setting_is_documented_in_both_files() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / "deploy" / "agent.env.example").read_text()
    for name, field in Settings.model_fields.items():
        env = gen_docs.env_name(name, field)
        assert f"| `{env}`" in reference, env
        assert field.description, f"{name} has no description"
        if gen_docs.systemd_only(name, field):
            assert f"{env}=" not in example, f"{env} is set by systemd, not in agent.env"
        else:
            assert f"{env}=" in example, env


def test_the_example_config_loads_as_is(tmp_path: Path) -> None:
    """What install.sh puts in /etc/twilight-agent/agent.env is a valid configuration,
    and every commented default is one the agent accepts."""
    example = ROOT / "deploy" / "agent.env.example"
    settings = load_settings(example)
    assert settings.image == "ghcr.io/lacatfly/twilight-drive"
    assert (settings.compose_project, settings.service) == ("twilight-drive", "app")
    uncommented = tmp_path / "all.env"
    lines = [line[1:] if line.startswith("#TWILIGHT_") else line
             for line in example.read_text().splitlines()]
    uncommented.write_text("\n".join(lines) + "\n")
    everything = load_settings(uncommented)
    assert everything.health_timeout == 60.0
    assert everything.prune_after == 7 * 86400.0


def test_durations_are_shown_the_way_the_parser_reads_them() -> None:
    for name, field in Settings.model_fields.items():
        if gen_docs.is_duration(field):
            text = gen_docs.default_text(field)
            data = {"image": "ghcr.io/a/b", name: text}
            try:
                value = getattr(Settings(**data), name)  # type: ignore[arg-type]
            except ValidationError as exc:  # pragma: no cover - reported by the assert
                raise AssertionError(f"{name}={text}: {exc}") from exc
            assert value == field.default, (name, text)


def test_compose_file_follows_the_env_file_and_names_no_container(tmp_path: Path) -> None:
    import shutil

    import yaml

    compose = yaml.safe_load((ROOT / "deploy" / "compose.yml").read_text())
    app = compose["services"]["app"]
    assert app["image"].endswith(":${IMAGE_TAG:-latest}${IMAGE_DIGEST-}")
    assert "container_name" not in app  # the agent finds it by its compose labels
    assert app["restart"] == "unless-stopped"
    assert "healthcheck" not in app and app["ports"] and compose["volumes"]
    env = (ROOT / "deploy" / "env.example").read_text().splitlines()
    assert "IMAGE_TAG=latest" in env
    assert "COMPOSE_PROJECT_NAME=twilight-drive" in env
    # Compose itself (Debian's docker-compose 1.29, installed by scripts/setup.sh) reads the
    # tag and the digest from .env as the agent writes them, and the tag alone from an
    # older .env without the digest.
    shutil.copy(ROOT / "deploy" / "compose.yml", tmp_path / "compose.yml")
    digest = "sha256:" + "e" * 64
    for env_text, image in (("IMAGE_TAG=sha-1a2b3c4\n", "sha-1a2b3c4"),
                            (f"IMAGE_TAG=sha-1a2b3c4\nIMAGE_DIGEST=@{digest}\n",
                             f"sha-1a2b3c4@{digest}")):
        (tmp_path / ".env").write_text(env_text)
        out = subprocess.run(["docker-compose", "-f", "compose.yml", "config"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        assert f"image: ghcr.io/lacatfly/twilight-drive:{image}\n" in out.stdout
        assert "WARNING" not in out.stderr
