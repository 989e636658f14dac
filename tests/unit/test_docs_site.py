"""The manual: README.md is a front door, docs/ builds strictly, every setting is in it.

The site is Sphinx + MyST (docs/conf.py, the `docs` extra); scripts/test builds it too.
A build that cannot run (Sphinx not installed) fails here with the reason, never skips.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from twilight_agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "configuration.md"


def sphinx_build(src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("sphinx") is None or importlib.util.find_spec(
            "myst_parser") is None:
        pytest.fail("Sphinx and MyST are not installed: the docs build cannot run; "
                    "install the docs extra: .venv/bin/pip install -e '.[docs]'")
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         str(src), str(out)],
        capture_output=True, text=True, timeout=300)


def test_the_manual_builds_strictly(tmp_path: Path) -> None:
    result = sphinx_build(DOCS, tmp_path / "html")
    assert result.returncode == 0, f"docs build failed:\n{result.stdout}{result.stderr}"
    assert (tmp_path / "html" / "configuration.html").is_file()


@pytest.mark.parametrize("link, why", [
    ("[gone](operations.md#no-such-heading)", "no-such-heading"),
    ("[gone](no-such-page.md)", "no-such-page"),
    ("[gone](#nor-here)", "nor-here"),
])
def test_a_broken_link_or_anchor_fails_the_build(tmp_path: Path, link: str, why: str) -> None:
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("_build"))
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")  # the changelog page's include
    page = tmp_path / "docs" / "fleet.md"
    page.write_text(page.read_text() + f"\nSee {link}.\n")
    result = sphinx_build(tmp_path / "docs", tmp_path / "html")
    assert result.returncode != 0
    assert why in result.stdout + result.stderr


def test_the_readme_is_a_front_door() -> None:
    text = README.read_text()
    lines = text.count("\n")
    assert lines < 250, f"README.md has {lines} lines; the manual belongs in docs/"
    for heading in ("## The two commands", "## Quick start"):
        assert heading in text
    steps = re.findall(r"^(\d+)\. \*\*", text.split("## Quick start", 1)[1], re.M)
    assert steps[:5] == ["1", "2", "3", "4", "5"]


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    two_commands = README.read_text().split("## The two commands", 1)[1].split("\n## ", 1)[0]
    assert "bash scripts/test" in two_commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "exec bash scripts/test" in ci


def test_the_readme_links_every_page_and_every_link_resolves() -> None:
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README links to {path}, which does not exist"
        else:
            assert anchor in slugs, f"README links to #{anchor}, which no heading makes"
    linked = {Path(t.split("#")[0]).name for t in targets if t.startswith("docs/")}
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md", "changelog.md"}
    assert pages <= linked, f"pages the README does not link: {sorted(pages - linked)}"


def accepted_names() -> set[str]:
    """Every environment name Settings reads, as pydantic-settings derives it: the
    prefix + the field name, or the field's alias choices."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names = set()
    for name, field in Settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        names |= {str(c) for c in choices} if choices else {prefix + name.upper()}
    return names


def test_every_twilight_setting_is_in_the_configuration_reference() -> None:
    rows = [line for line in REFERENCE.read_text().splitlines() if line.startswith("| `")]
    documented = {n for row in rows for n in re.findall(r"`([A-Z_]+)`", row.split(" | ")[0])}
    twilight = {n for n in accepted_names() if n.startswith("TWILIGHT_")}
    # the mixins' fields (swarm, promotion, verification, notification) are read too
    assert {"TWILIGHT_IMAGE", "TWILIGHT_SWARM_SERVICE", "TWILIGHT_PROMOTE_TO",
            "TWILIGHT_VERIFY_KEY", "TWILIGHT_NOTIFY", "TWILIGHT_RUNTIME_DIRECTORY"} <= twilight
    assert twilight <= documented, f"missing from docs/configuration.md: {twilight - documented}"
    assert documented <= accepted_names(), f"documented, not read: {documented - accepted_names()}"
    for row in rows:
        _setting, default, description = row.strip("|").split(" | ", 2)
        assert default.strip() and description.strip(" |"), row
