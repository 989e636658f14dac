"""The exception tree of twilight-agent.

Every error the agent raises on purpose derives from ``TwilightError`` and carries the
CLI exit code it maps to::

    TwilightError                      exit 1 unless a subclass says otherwise
    ├── ConfigError                    2  settings file or environment is invalid
    │   └── InvalidTag                 2  a tag failed the tag gate
    ├── InvalidInput                   2  a CLI argument or a file we read is malformed
    ├── RegistryError                  5  anything the registry did wrong
    │   ├── RegistryUnavailable        5  timed out, refused, 429 or 5xx after retries
    │   ├── RegistryAuthError          2  credentials refused / token endpoint said no
    │   ├── RegistryProtocolError      5  garbage: bad JSON, wrong type, digest mismatch, loops
    │   └── ManifestNotFound           2  the tag or digest does not exist
    ├── RuntimeError_                  5  anything the Docker engine did wrong
    │   ├── DockerUnavailable          5  the engine does not answer
    │   ├── TargetNotFound             2  the container to deploy into does not exist
    │   └── PullFailed                 5  the pull failed (HTTP error or in-band stream error)
    └── LockBusy                       3  another deploy holds the lock

A deploy that failed its gate (exit 1) or halted (exit 4) is not an exception: it is an
``Outcome`` of the run (``core/outcomes.py``), which knows its exit code.
Adapters translate third-party exceptions into these, always ``raise ... from exc``.
"""

from __future__ import annotations


class TwilightError(Exception):
    """Base of every error twilight-agent raises on purpose."""

    exit_code = 1


class ConfigError(TwilightError):
    """The settings file or the environment holds an invalid value."""

    exit_code = 2


class InvalidTag(ConfigError):
    """A tag failed the tag gate (pattern, length, characters)."""


class InvalidInput(TwilightError):
    """A CLI argument or a file the agent reads is malformed."""

    exit_code = 2


class RegistryError(TwilightError):
    """The registry could not give a usable answer."""

    exit_code = 5


class RegistryUnavailable(RegistryError):
    """Timed out, refused, rate-limited (429) or 5xx after retries."""


class RegistryAuthError(RegistryError):
    """The token endpoint or the registry refused our credentials."""

    exit_code = 2


class RegistryProtocolError(RegistryError):
    """The registry answered garbage: bad JSON, wrong content type, digest mismatch, loops."""


class ManifestNotFound(RegistryError):
    """The tag or digest does not exist in the repository."""

    exit_code = 2


class RuntimeError_(TwilightError):
    """The Docker engine could not do what was asked."""

    exit_code = 5


class DockerUnavailable(RuntimeError_):
    """The Docker engine does not answer on its socket."""


class TargetNotFound(RuntimeError_):
    """The container to deploy into does not exist."""

    exit_code = 2


class NodeLost(RuntimeError_):
    """A swarm rollout stalled on tasks of a node that went down: not the build's fault."""


class PullFailed(RuntimeError_):
    """Pulling the image failed, including in-band errors in the progress stream."""


class LockBusy(TwilightError):
    """Another deploy holds the lock."""

    exit_code = 3
