"""Reading the running target the same way everywhere (the decision, PREPARE, ``status``):
the target port's snapshot, with the tag it runs as."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from twilight_agent.adapters.state.envfile import read_image_tag
from twilight_agent.core.policy import running_tag
from twilight_agent.core.ports import Snapshot, StorePort, TargetPort


def observe_target(target: TargetPort, store: StorePort, env_file: Path | None,
                   pattern: str) -> Snapshot:
    """The running target; raises TargetNotFound / DockerUnavailable like the port."""
    snap = target.snapshot()
    env_tag = read_image_tag(env_file) if env_file else None
    tag = running_tag(snap.tag, snap.digest, store.meta().current, env_tag, pattern)
    return dataclasses.replace(snap, tag=tag)
