"""Several apps on one host: each instance has its own config file in the config
directory; two of them must never deploy into the same container.

At start-up the daemon reads the other config files next to its own (as files, without
the environment: that belongs to this process) and refuses to start when one of them
targets what it targets, with one line naming both.
"""

from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values

from twilight_agent import target_kinds
from twilight_agent.errors import ConfigError
from twilight_agent.settings import Settings

Target = tuple[str, str, str, frozenset[str]]  # engine, kind, name, compose services


def target_key(values: dict[str, str]) -> Target | None:
    """What a config deploys into: ``(engine, kind, name, services)``, the kind and its
    key as its record says (``target_kinds.KINDS``): ``(engine, "container", name, {})``,
    ``(engine, "swarm service", name, {})`` or ``(engine, "compose", project, services)``
    (no services: all of the project's running the image); None when it names no
    target."""
    engine = values.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    found = target_kinds.instance_key(values)
    return None if found is None else (engine, *found)


def overlaps(a: Target, b: Target) -> bool:
    """Same kind and name, and a service in common when both list services (a compose
    project followed as a whole overlaps any of its services; other kinds list none)."""
    if a[:3] != b[:3]:
        return False
    return not a[3] or not b[3] or bool(a[3] & b[3])


def _own_key(settings: Settings) -> Target | None:
    return target_key({"DOCKER_HOST": settings.docker_host,
                       **target_kinds.target_values(settings)})


def _file_values(path: Path) -> dict[str, str]:
    raw = dotenv_values(path)
    return {k.upper().removeprefix("TWILIGHT_"): v or "" for k, v in raw.items()
            if k.upper().startswith("TWILIGHT_")}


def refuse_overlap(settings: Settings, config: Path) -> None:
    """Raise ``ConfigError`` when another config next to ``config`` has our target."""
    mine = _own_key(settings)
    if mine is None or not config.parent.is_dir():
        return
    for other in sorted(config.parent.glob("*.env")):
        if other.resolve() == config.resolve():
            continue
        try:
            theirs = target_key(_file_values(other))
        except (OSError, UnicodeDecodeError):
            continue  # not ours to judge: that instance reports its own config
        if theirs is not None and overlaps(mine, theirs):
            what = f"{mine[1]} {mine[2]}" + (f" ({', '.join(sorted(mine[3]))})"
                                              if mine[3] else "")
            raise ConfigError(f"{config} and {other} both deploy into {what}: two agents "
                              "would fight over it; give each instance its own target")
