"""Value objects shared by the core and the adapters."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Registry path components, as the distribution spec defines them.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_RE = re.compile(r"(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]{1,5})?")
# The OCI distribution spec's own limit on tags; anything outside is never sent anywhere.
_OCI_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DEFAULT_TAG_PATTERN = r"^(sha-[0-9a-f]{7}|latest|main|stable|v[0-9]+\.[0-9]+\.[0-9]+)$"


class Digest(str):
    """A content digest, ``sha256:`` followed by 64 lowercase hex digits."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
            raise ValueError(f"not a sha256 digest: {value[:80]!r}")
        return super().__new__(cls, value)

    @property
    def short(self) -> str:
        """The first 12 hex digits, as Docker shows image ids."""
        return self[7:19]


class Tag(str):
    """A tag that passed the tag gate: parsed once at each edge (CLI, settings, registry).

    ``Tag.parse`` raises ``ValueError`` with a one-line reason that never echoes more than
    40 characters of the input, so a hostile tag cannot flood a log line.
    """

    __slots__ = ()

    @classmethod
    def parse(cls, text: str, pattern: str = DEFAULT_TAG_PATTERN) -> Tag:
        if not isinstance(text, str):
            raise ValueError("a tag is text")
        shown = repr(text[:40]) + ("..." if len(text) > 40 else "")
        if not text:
            raise ValueError("tag is empty")
        if len(text) > 128:
            raise ValueError(f"tag {shown} is {len(text)} characters; the limit is 128")
        if not _OCI_TAG.fullmatch(text):
            raise ValueError(f"tag {shown} has characters a registry tag cannot have")
        if not re.fullmatch(pattern, text):
            raise ValueError(f"tag {shown} does not match the tag pattern {pattern}")
        return cls(text)


@dataclass(frozen=True)
class ImageRef:
    """A repository in a registry: ``ghcr.io/owner/name``. Tags and digests are separate."""

    host: str
    repository: str

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse ``host/owner/name``; the host is required (no Docker Hub guessing)."""
        text = text.strip()
        if "@" in text or text.count(":") > 1 or (":" in text and "/" not in text.split(":")[-1]):
            raise ValueError(f"image must be host/owner/name without a tag or digest: {text!r}")
        host, sep, repository = text.partition("/")
        if not sep or not ("." in host or ":" in host or host == "localhost"):
            raise ValueError(f"image must start with a registry host (e.g. ghcr.io/...): {text!r}")
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"invalid registry host: {host!r}")
        if not _REPO_RE.fullmatch(repository) or len(repository) > 255:
            raise ValueError(f"invalid repository name: {repository!r}")
        return cls(host=host, repository=repository)

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"

    def with_digest(self, digest: str) -> str:
        return f"{self}@{digest}"


@dataclass(frozen=True)
class Release:
    """One build on the registry, as the agent chose it."""

    tag: str
    digest: Digest
    revision: str | None = None
    created: str | None = None

    @property
    def label(self) -> str:
        return f"{self.tag}@{self.digest.short}"
