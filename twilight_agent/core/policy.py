"""Pure policy: the tag gate, and (filled in by the engine) selection and quarantine rules."""

from __future__ import annotations

import re

DEFAULT_TAG_PATTERN = r"^(sha-[0-9a-f]{7}|latest|main|v[0-9]+\.[0-9]+\.[0-9]+)$"
# The OCI distribution spec's own limit on tags; anything outside is never sent anywhere.
_OCI_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")


def check_tag(tag: str, pattern: str = DEFAULT_TAG_PATTERN) -> str:
    """Return ``tag`` if it passes the gate, else raise ``ValueError`` with a one-line reason.

    The reason never echoes more than 40 characters of the input, so a hostile tag cannot
    flood a log line.
    """
    shown = repr(tag[:40]) + ("..." if len(tag) > 40 else "")
    if not tag:
        raise ValueError("tag is empty")
    if len(tag) > 128:
        raise ValueError(f"tag {shown} is {len(tag)} characters; the limit is 128")
    if not _OCI_TAG.match(tag):
        raise ValueError(f"tag {shown} has characters a registry tag cannot have")
    if not re.match(pattern, tag):
        raise ValueError(f"tag {shown} does not match the tag pattern {pattern}")
    return tag


def sha_tag(revision: str) -> str:
    """The tag docker/metadata-action gives a commit: ``sha-`` + the first 7 hex digits."""
    return "sha-" + revision[:7].lower()
