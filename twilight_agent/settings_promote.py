"""Settings of a canary host that promotes a build to a second tag, mixed into Settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field

from twilight_agent.core.durations import parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


class PromoteFields(BaseModel):
    """Promotion: once a deployed build stayed healthy long enough, tag it for the fleet."""

    promote_to: str = Field("", description="Tag this host points at a deployed build once it "
                            "stayed healthy for `TWILIGHT_PROMOTE_AFTER` (e.g. `stable`; the "
                            "rest of the fleet sets `TWILIGHT_TRACK=stable`). Empty: no "
                            "promotion.")
    promote_after: Duration = Field(600.0, description="How long a deployed build must stay "
                                    "healthy before it is promoted (journaled: a restart "
                                    "neither skips nor restarts the wait).")
    promote_password_file: Path | None = Field(None, description="File holding a registry "
                                               "token that may push (or the systemd "
                                               "credential `promote-token`), used only to "
                                               "promote.")
