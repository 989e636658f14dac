"""deploy/requirements.txt: what install.sh puts in the host's virtualenv. Every runtime
dependency of pyproject.toml (and everything they pull in) is pinned with its hashes, and
install.sh installs from it with pip's hash checking on."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "deploy" / "requirements.txt"


def pinned(lock: Path = LOCK) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a lock file (pip-compile's format)."""
    text = lock.read_text().replace("\\\n", " ")
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert m, f"not a pinned, hashed requirement: {line[:80]}"
        out[canonicalize_name(m[1])] = (m[2], re.findall(r"[0-9a-f]{64}", m[3]))
    return out


def test_every_runtime_dependency_is_pinned_with_hashes_and_meets_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = pinned()
    for spec in map(Requirement, deps):
        name = canonicalize_name(spec.name)
        assert name in lock, f"{spec.name} is not in deploy/requirements.txt (pip-compile)"
        version, hashes = lock[name]
        assert spec.specifier.contains(version), f"{name}=={version} does not meet {spec}"
        assert hashes
    for transitive in ("pydantic-core", "httpcore", "urllib3", "certifi"):
        assert transitive in lock, f"{transitive} (pulled in) must be pinned too"


def test_install_sh_installs_the_lock_with_hash_checking() -> None:
    script = (ROOT / "deploy" / "install.sh").read_text()
    assert 'locks=(-r "$REQUIREMENTS")' in script  # (+ the keyless lock: test_install_sh)
    assert re.search(r'--require-hashes .*"\$\{locks\[@\]\}"', script)
    assert '--no-deps --force-reinstall "$1"' in script  # our wheel adds no other package
    assert "REQUIREMENTS=$HERE/requirements.txt" in script
