"""Check that no fact of the old README was lost when the manual moved to docs/.

The README used to be the whole manual; its text was moved, not rewritten, into the
pages of docs/ and the new front door. This reads README.md as it was at a revision
(default: the last one before the move), splits it into sentences, table rows and code
lines, and reports each one that appears neither in today's README.md nor in any page
of docs/ (compared with whitespace, link targets, quotes and emphasis ignored). It also
lists every `TWILIGHT_*` name, command and path in backticks that went missing.

    .venv/bin/python scripts/check_readme_moved.py            # exit 1 if anything is lost
    .venv/bin/python scripts/check_readme_moved.py --rev REV  # compare with another README
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE_THE_MOVE = "84dfc3d"

# Navigation of the old single page (its contents line and the sections that only
# pointed elsewhere): replaced by the new README's links and the docs' table of contents.
NAVIGATION = (
    "Contents:",
    "[the two commands](#the-two-commands)",
)


# Pieces whose words changed in the move, each with the text that now carries the same
# fact (which must be found instead): a "see below" that became a link to another page,
# and the README's configuration section, now the head of the generated reference.
REWORDED = {
    "`scripts/demo` installs what is missing": "token-auth registry (the test bed) on Docker 26",
    "`twilight-agent check` reads the running container": (
        "it is a dry run of the very decision a deploy makes (architecture), so the two "
        "never disagree."),
    "Larger fleets: a token (account) per ring": (
        "a 429 is backed off with the service untouched (see troubleshooting)."),
    "Every setting, its default and its meaning is in": (
        "generated from the settings model by `python scripts/gen_docs.py`; a test fails "
        "when this page or `deploy/agent.env.example` is stale"),
    "Settings come from `/etc/twilight-agent/agent.env`": (
        "twilight-agent reads `/etc/twilight-agent/agent.env` (or `--config PATH`); the "
        "process environment overrides it. Every name carries the `TWILIGHT_` prefix."),
    "Durations accept `90`, `90s`, `2m`, `168h`.": (
        "Durations accept `90`, `90s`, `2m`, `168h`, `7d`, `1h30m`."),
    "`tests/e2e` boots a Debian 12 rootfs": (
        "a bad build is rolled back and the journal has the events and fields of the audit "
        "trail;"),
    "How each figure is taken: bench/README.md;": (
        "How each figure is taken: `bench/README.md`; the latest figures, the machine they "
        "ran on and how they compare with the targets: `bench/results.md`;"),
}


def normalise(text: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](target) -> text
    text = re.sub(r"[\"“”*]", "", text)
    return " ".join(text.split())


def pieces(readme: str) -> list[str]:
    """Sentences of prose, rows of tables, lines of code blocks."""
    out: list[str] = []
    fence = False
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            prose = normalise(" ".join(paragraph))
            out.extend(s for s in re.split(r"(?<=[.:;!?])\s+(?=[A-Z`(*])", prose) if s)
            paragraph.clear()

    for line in readme.splitlines():
        if line.startswith("```"):
            flush()
            fence = not fence
            continue
        if fence or line.startswith("|"):
            flush()
            if line.strip() and not re.fullmatch(r"[|\-: ]+", line):
                out.append(normalise(line))
            continue
        if not line.strip() or line.startswith("#") or re.match(r"\s*(- |\d+\. )", line):
            flush()
            if line.startswith("#") or not line.strip():
                continue
        paragraph.append(line)
    flush()
    return out


def missing(before: str, after: str) -> tuple[list[str], list[str]]:
    haystack = normalise(after)
    lost = []
    for piece in pieces(before):
        if piece in haystack or any(piece.startswith(n) for n in NAVIGATION):
            continue
        instead = next((new for old, new in REWORDED.items() if piece.startswith(old)), None)
        if instead is None or normalise(instead) not in haystack:
            lost.append(piece)
    spans = set(re.findall(r"`([^`\n]+)`", before))
    lost_spans = sorted(s for s in spans if f"`{s}`" not in after and s not in after)
    return lost, lost_spans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=BEFORE_THE_MOVE,
                        help="the revision whose README.md to compare (default: %(default)s)")
    args = parser.parse_args(argv)
    before = subprocess.run(["git", "show", f"{args.rev}:README.md"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    after = "\n".join(p.read_text(encoding="utf-8")
                      for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    lost, lost_spans = missing(before, after)
    for piece in lost:
        print(f"not found: {piece}")
    for span in lost_spans:
        print(f"code span not found: `{span}`")
    total = len(pieces(before))
    print(f"{total - len(lost)} of {total} pieces of the README at {args.rev} found "
          f"in README.md and docs/; {len(lost_spans)} code spans missing")
    return 1 if lost or lost_spans else 0


if __name__ == "__main__":
    sys.exit(main())
