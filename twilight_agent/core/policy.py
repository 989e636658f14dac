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


# --------------------------------------------------------------------------- selection
DEPLOY = "deploy"  # deploy the candidate
UP_TO_DATE = "up_to_date"  # the candidate is what runs now
QUARANTINED = "quarantined"  # the candidate failed before; never deployed automatically
REFUSED = "refused"  # an operator asked for a quarantined digest: unquarantine it first


def decide(candidate: str, current: str | None, quarantined: frozenset[str] | set[str], *,
           explicit: bool, halted_on: str | None = None) -> str:
    """What to do with ``candidate`` (a digest). Pure; the agent acts on the answer.

    A quarantined digest is never auto-deployed, and an operator's explicit request for one
    is refused until it is unquarantined. While HALTED (``halted_on`` = the digest the
    failed rollback was about) nothing is deployed automatically except a newer candidate
    that is not quarantined; an operator command always goes ahead.
    """
    if candidate in quarantined:
        return REFUSED if explicit else QUARANTINED
    if not explicit and candidate == halted_on:
        return QUARANTINED
    if candidate == current and not (explicit and halted_on is not None):
        return UP_TO_DATE
    return DEPLOY


def quarantine_reason(reason: str, limit: int = 200) -> str:
    """One line, bounded: what goes into the quarantine table and ``status``."""
    line = " ".join(reason.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def previous_good(history: list[dict[str, object]],
                  current: str | None) -> dict[str, object] | None:
    """The release to go back to: the ``from`` side of the newest successful deploy that
    brought in ``current``; rows are newest first. None when history does not know one."""
    for row in history:
        if row.get("outcome") == "deployed" and row.get("to_digest") == current \
                and row.get("from_digest") and row.get("from_digest") != current:
            return row
    return None


# --------------------------------------------------------------------------- check
PINNED = "pinned"  # the pinned tag runs; the track is not followed
REGISTRY_UNREACHABLE = "registry_unreachable"  # the registry gave no candidate


def check_verdict(running: str | None, candidate: str | None,
                  quarantined: frozenset[str] | set[str], *, pinned: bool,
                  source: str) -> tuple[str, str]:
    """``(action, reason)`` for ``twilight-agent check``: what the daemon would do now.

    ``running`` and ``candidate`` are digests (``candidate`` None: the registry gave no
    answer); ``source`` names where the candidate came from (``"main"``, ``"pin v1.2.3"``).
    A quarantined digest is never deployed automatically, pinned or not.
    """
    if candidate is None:
        return REGISTRY_UNREACHABLE, "the registry gave no answer; nothing would change"
    if candidate in quarantined:
        return "quarantined", (f"{source} points at a digest that failed before; it is not "
                               "deployed again until `twilight-agent unquarantine`")
    if candidate == running:
        if pinned:
            return PINNED, f"the {source} runs; the track is not followed while pinned"
        return "up_to_date", f"{source} points at what runs now"
    if running is None:
        return "deploy", f"{source} would be deployed (the running digest is unknown)"
    return "deploy", f"{source} points at a different build than what runs"
