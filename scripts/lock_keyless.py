"""Write deploy/requirements-keyless.txt: the hashed lock of the `keyless` extra beyond
what deploy/requirements.txt pins.

pip-compile locks the extra together with every runtime dependency, held to the versions of
deploy/requirements.txt by a constraint; this keeps only the packages that lock does not
have, so install.sh can pass both files to one pip run (a package named twice would be
checked against two hash lists). A shared package at another version is an error: the
two locks must agree.

    pip-compile --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \\
      --no-emit-find-links --extra keyless -c deploy/requirements.txt \\
      --output-file /tmp/keyless-full.txt pyproject.toml
    python3 scripts/lock_keyless.py /tmp/keyless-full.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "deploy" / "requirements.txt"
OUT = ROOT / "deploy" / "requirements-keyless.txt"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")

HEADER = """\
# The `keyless` extra (sigstore, for TWILIGHT_VERIFY_IDENTITY) and what it pulls in beyond
# deploy/requirements.txt, for Python 3.11 on Linux, each with its sha256 hashes.
# install.sh --keyless installs it with requirements.txt in one pip run (--require-hashes).
# Made by pip-compile with the extra, constrained to requirements.txt, then the packages
# requirements.txt already pins dropped (scripts/lock_keyless.py says how):
#
#    pip-compile --allow-unsafe --constraint=deploy/requirements.txt --extra=keyless \\
#      --generate-hashes --no-emit-find-links --no-emit-index-url \\
#      --output-file=/tmp/keyless-full.txt --strip-extras pyproject.toml
#    python3 scripts/lock_keyless.py /tmp/keyless-full.txt
#
"""


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(name, version, the entry's lines) for each pinned package of a pip-compile file."""
    out: list[tuple[str, str, str]] = []
    for line in text.splitlines(keepends=True):
        m = PIN.match(line)
        if m:
            out.append((m[1].lower(), m[2], line))
        elif out and line.startswith(" "):
            name, version, body = out[-1]
            out[-1] = (name, version, body + line)
    return out


def main(full: str) -> int:
    pinned = {name: version for name, version, _ in blocks(MAIN.read_text())}
    kept = []
    for name, version, body in blocks(Path(full).read_text()):
        if name not in pinned:
            kept.append(body)
        elif pinned[name] != version:
            print(f"{name}: {version} here, {pinned[name]} in {MAIN.name}", file=sys.stderr)
            return 1
    OUT.write_text(HEADER + "".join(kept))
    print(f"{OUT.relative_to(ROOT)}: {len(kept)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
