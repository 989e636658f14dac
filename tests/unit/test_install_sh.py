"""deploy/install.sh, statically: it parses, shellcheck finds nothing, --help answers.

Installing, reinstalling (no change) and uninstalling for real happens in the systemd e2e
container; these checks keep the script sound between those runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.test_requirements import LOCK, pinned

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "install.sh"
KEYLESS_LOCK = ROOT / "deploy" / "requirements-keyless.txt"


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
                  "--keyless", "deploy/requirements-keyless.txt", "TWILIGHT_VERIFY_IDENTITY",
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


# -- keyless verification: sigstore from its own hashed lock ------------------------------
def functions(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``body`` run after install.sh's definitions (not its main), pip replaced by echo."""
    text = SCRIPT.read_text()
    here = 'HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)'
    assert here in text and text.endswith('\nmain "$@"\n')
    defs = text.replace(here, f"HERE={SCRIPT.parent}").removesuffix('main "$@"\n')
    script = tmp_path / "defs.sh"
    script.write_text(defs + '\nPIP=(echo pip)\n' + body + "\n")
    return run("bash", str(script))


def test_the_keyless_lock_is_hashed_and_adds_only_what_the_main_lock_lacks() -> None:
    main, keyless = pinned(LOCK), pinned(KEYLESS_LOCK)
    assert "sigstore" in keyless and all(hashes for _, hashes in keyless.values())
    assert not set(main) & set(keyless), "a package in both locks is checked twice"


def test_every_package_of_the_keyless_extra_is_in_the_lock() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = pinned(KEYLESS_LOCK)
    for spec in map(Requirement, extras["optional-dependencies"]["keyless"]):
        version, _ = lock[canonicalize_name(spec.name)]
        assert spec.specifier.contains(version), f"{spec.name}=={version} does not meet {spec}"


def test_the_two_locks_hold_everything_sigstore_needs() -> None:
    """sigstore's dependencies, and theirs, for a Linux host on Python 3.11, as the
    installed sigstore declares them: each is pinned in one of the two locks."""
    try:
        metadata.version("sigstore")
    except metadata.PackageNotFoundError:
        pytest.skip("sigstore is not installed here (the test extra has it)")
    locked = set(pinned(LOCK)) | set(pinned(KEYLESS_LOCK))
    env = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": ""}
    todo, seen = ["sigstore"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in locked, f"{name} (needed by sigstore) is in neither lock"
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))


def test_keyless_installs_both_locks_in_one_hash_checked_run(tmp_path: Path) -> None:
    plain = functions("install_requirements", tmp_path).stdout
    assert "--require-hashes" in plain and "requirements-keyless" not in plain
    keyless = functions("KEYLESS=1; want_keyless; install_requirements", tmp_path)
    assert keyless.returncode == 0, keyless.stderr
    words = keyless.stdout.split()
    assert "--require-hashes" in words and "--only-binary=:all:" in words
    assert words[-4:] == ["-r", str(LOCK), "-r", str(KEYLESS_LOCK)]


def test_keyless_follows_the_config_and_an_earlier_install(tmp_path: Path) -> None:
    conf, stamp = tmp_path / "agent.env", tmp_path / "installed-from"
    ask = f'CONF={conf}; STAMP={stamp}; want_keyless; echo "KEYLESS=$KEYLESS"'
    cases = [("#TWILIGHT_VERIFY_IDENTITY=https://github.com/o/r/\n", "", "KEYLESS=0"),
             ("TWILIGHT_VERIFY_IDENTITY=\n", "", "KEYLESS=0"),
             ("TWILIGHT_VERIFY_IDENTITY=https://github.com/o/r/.github/workflows/r.yml@"
              "refs/heads/main\n", "", "KEYLESS=1"),
             ("", "requirements:ab keyless:cd dir:/src:ef\n", "KEYLESS=1"),
             ("", "requirements:ab dir:/src:ef\n", "KEYLESS=0")]
    for config, installed, expected in cases:
        conf.write_text(config)
        stamp.write_text(installed)
        result = functions(ask, tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == expected, (config, installed)
    conf.write_text("TWILIGHT_VERIFY_IDENTITY=https://github.com/o/r/x@refs/heads/main\n")
    said = functions(ask, tmp_path).stdout
    assert "TWILIGHT_VERIFY_IDENTITY is set in" in said


def test_keyless_flag_is_an_option() -> None:
    """Parsed like the others; with a token file that is missing, so that as root too the
    run stops before its first step (never an install from a test)."""
    result = run("bash", str(SCRIPT), "--keyless", "--token-file", "/nonexistent/token")
    assert result.returncode == 2 and "unknown option" not in result.stderr
    said = "run as root" if os.getuid() != 0 else "cannot read token file /nonexistent/token"
    assert said in result.stderr and result.stdout == ""
