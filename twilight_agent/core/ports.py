"""Ports: the Protocols the core and the agent talk to. Adapters implement them.

Unit tests hand in small fakes; integration tests use the real adapters.
"""

from __future__ import annotations

from typing import Protocol

from twilight_agent.core.models import Digest, Release


class RegistryPort(Protocol):
    """What the agent needs from the registry (adapters/registry.py)."""

    def track_digest(self, track: str) -> Digest:
        """One HEAD on ``track``: the digest it points at now."""
        ...

    def resolve_track(self, track: str, known: Release | None = None) -> Release:
        """The newest build on ``track`` as ``Release(sha-tag, digest, revision, created)``."""
        ...

    def resolve_tag(self, tag: str) -> Release:
        """A pinned or operator-given tag, resolved to a digest (after the tag gate)."""
        ...
