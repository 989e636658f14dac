"""Settings of a Docker Swarm target (``TWILIGHT_SWARM_SERVICE``), mixed into Settings."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from twilight_agent.core.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


SWARM_SERVICE_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")  # swarm's name rule
# Settings that name another target kind or a step a swarm service has no place for.
NOT_WITH_SWARM = {"container": "TWILIGHT_CONTAINER", "compose_project":
                  "TWILIGHT_COMPOSE_PROJECT", "service": "TWILIGHT_SERVICE",
                  "services": "TWILIGHT_SERVICES", "pre_deploy": "TWILIGHT_PRE_DEPLOY"}


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

    @model_validator(mode="after")
    def _check_swarm(self) -> Any:
        """One-line errors: a swarm service excludes the other target kinds."""
        if not self.swarm_service:
            if self.swarm_order or self.swarm_parallelism is not None or self.swarm_monitor:
                raise ValueError("TWILIGHT_SWARM_ORDER, _PARALLELISM and _MONITOR need "
                                 "TWILIGHT_SWARM_SERVICE")
            return self
        if not SWARM_SERVICE_RE.fullmatch(self.swarm_service):
            raise ValueError(f"TWILIGHT_SWARM_SERVICE: {self.swarm_service[:40]!r} is not a "
                             "service name")
        clash = [env for name, env in NOT_WITH_SWARM.items() if getattr(self, name, "")]
        if clash:
            raise ValueError(f"set TWILIGHT_SWARM_SERVICE or {clash[0]}, not both")
        if getattr(self, "swap", "auto") != "auto":
            raise ValueError("TWILIGHT_SWAP does not apply to a swarm service: set "
                             "TWILIGHT_SWARM_ORDER (start-first or stop-first)")
        if self.swarm_monitor < 0 or self.swarm_monitor > 86400:
            raise ValueError("TWILIGHT_SWARM_MONITOR must be >= 0 and at most 24h")
        return self
