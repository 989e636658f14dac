"""deploy/install.sh, statically: it parses, shellcheck finds nothing, --help answers.

Installing, reinstalling (no change) and uninstalling for real happens in the systemd e2e
container; these checks keep the script sound between those runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "install.sh"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_parses_with_bash() -> None:
    result = run("bash", "-n", str(SCRIPT))
    assert result.returncode == 0, result.stderr


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: apt-get install shellcheck (scripts/test does)"
    result = run(shellcheck, "--severity=style", str(SCRIPT))
    assert result.returncode == 0, result.stdout + result.stderr


def test_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)


def test_help_describes_install_and_uninstall() -> None:
    result = run("bash", str(SCRIPT), "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for words in ("--token-file", "--promote-token-file", "--notify-file", "--uninstall",
                  "/etc/twilight-agent/agent.env",
                  "/opt/twilight-agent/venv", "enable --now", "never overwritten",
                  "Keeps /etc/twilight-agent", "/var/lib/twilight-agent", "0600"):
        assert words in out, words


def test_unknown_option_is_refused_before_touching_anything() -> None:
    result = run("bash", str(SCRIPT), "--frobnicate")
    assert result.returncode == 2
    assert "unknown option --frobnicate" in result.stderr
    assert result.stdout == ""


def test_missing_token_file_is_refused() -> None:
    if os.getuid() != 0:  # the root check comes first; as non-root that is the refusal
        result = run("bash", str(SCRIPT), "--token-file", "/nonexistent/token")
        assert result.returncode == 2 and "run as root" in result.stderr
        return
    result = run("bash", str(SCRIPT), "--token-file", "/nonexistent/token")
    assert result.returncode == 2
    assert "cannot read token file /nonexistent/token" in result.stderr
    assert result.stdout == ""  # refused before the first step


def test_missing_promote_token_file_is_refused() -> None:
    result = run("bash", str(SCRIPT), "--promote-token-file", "/nonexistent/push")
    if os.getuid() != 0:
        assert result.returncode == 2 and "run as root" in result.stderr
        return
    assert result.returncode == 2
    assert "cannot read promote token file /nonexistent/push" in result.stderr
    assert result.stdout == ""


def test_missing_or_empty_notify_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "notify-urls"
    empty.write_text("")
    for path, said in (("/nonexistent/urls", "cannot read notify URLs file"),
                       (str(empty), "notify URLs file")):
        result = run("bash", str(SCRIPT), "--notify-file", path)
        if os.getuid() != 0:
            assert result.returncode == 2 and "run as root" in result.stderr
            return
        assert result.returncode == 2
        assert said in result.stderr and result.stdout == ""
