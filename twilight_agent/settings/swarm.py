"""Settings of a Docker Swarm target (``TWILIGHT_SWARM_SERVICE``), mixed into Settings.

Their rules (a swarm service excludes the other target kinds) are its record's,
``target_kinds.SWARM``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

from twilight_agent.core.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]




def _empty_is_none(value: object) -> object:
    return None if value == "" else value


class SwarmFields(BaseModel):
    """A swarm service as the target, instead of a container or a compose service."""

    swarm_service: str = Field("", description="Swarm service to roll forward (the agent runs "
                               "on a manager node), instead of `TWILIGHT_CONTAINER` or a "
                               "compose service. Updated to `repo@sha256:...` with the "
                               "registry credentials passed on, so every node can pull.")
    swarm_order: Literal["", "start-first", "stop-first"] = Field(
        "", description="Update order of the swarm service; empty keeps the service's own.")
    swarm_parallelism: Annotated[int | None, BeforeValidator(_empty_is_none)] = Field(
        None, ge=0, le=1000, description="Tasks updated "
                                          "at once (0 = all); empty keeps the service's own.")
    swarm_monitor: Duration = Field(0.0, description="How long swarm watches each updated "
                                    "task for failure; never shorter than the health gate "
                                    "(timeout + soak). 0 = the longer of the service's own "
                                    "and the health gate.")
