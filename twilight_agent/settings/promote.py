"""Settings of a canary host that promotes a build to a second tag, mixed into Settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, model_validator

from twilight_agent.adapters.registry.secret_file import read_token
from twilight_agent.core.durations import parse_duration
from twilight_agent.core.policy import check_tag

Duration = Annotated[float, BeforeValidator(parse_duration)]
PROMOTE_CREDENTIAL = "promote-token"
MAX_PROMOTE_AFTER = 30 * 86400.0


class PromoteFields(BaseModel):
    """Promotion: once a deployed build stayed healthy long enough, tag it for the fleet."""

    if TYPE_CHECKING:  # Settings' own fields, which these rules read
        tag_pattern: str
        track: str
        registry_username: str
        credentials_directory: Path | None

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

    @model_validator(mode="after")
    def _check_promote(self) -> Any:
        """A promote tag passes the tag gate, is not the track, and comes with a user and
        a push token: a mistake is exit 2 at load, not a failed promotion hours later."""
        if self.promote_after < 0 or self.promote_after > MAX_PROMOTE_AFTER:
            raise ValueError("TWILIGHT_PROMOTE_AFTER must be >= 0 and at most 30 days")
        if not self.promote_to:
            return self
        try:
            check_tag(self.promote_to, self.tag_pattern)
        except ValueError as exc:
            raise ValueError(f"TWILIGHT_PROMOTE_TO: {exc}") from None
        if self.promote_to == self.track:
            raise ValueError("TWILIGHT_PROMOTE_TO must differ from TWILIGHT_TRACK")
        if not self.registry_username:
            raise ValueError("TWILIGHT_PROMOTE_TO needs TWILIGHT_REGISTRY_USERNAME (the user "
                             "of the push token)")
        if self.promote_password() is None:
            raise ValueError("TWILIGHT_PROMOTE_TO needs a token that may push: "
                             "TWILIGHT_PROMOTE_PASSWORD_FILE or the systemd credential "
                             f"{PROMOTE_CREDENTIAL}")
        return self

    def promote_password(self) -> SecretStr | None:
        """The push token: the systemd credential first, then the password file."""
        return read_token(self.credentials_directory, PROMOTE_CREDENTIAL,
                          self.promote_password_file, "promote token")
