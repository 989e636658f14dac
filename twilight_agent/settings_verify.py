"""Settings of image verification, mixed into Settings: which signatures a build needs,
how long a build may wait for its signature, and whether the track may move back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from twilight_agent.core.durations import parse_duration
from twilight_agent.core.signatures import parse_annotations
from twilight_agent.lazy import lazy_module

# cryptography is loaded only when TWILIGHT_VERIFY_KEY names a key (twilight_agent/lazy.py)
verify_keys = lazy_module("twilight_agent.adapters.verify_keys")

Duration = Annotated[float, BeforeValidator(parse_duration)]
MAX_GRACE = 7 * 86400.0


class VerifyFields(BaseModel):
    """Verification: signatures before any pull, and no silent downgrade."""

    verify_key: str = Field("", description="Public keys (PEM, as `cosign generate-key-pair` "
                            "writes `cosign.pub`; comma-separated paths, any one valid is "
                            "enough): a candidate is pulled only when its cosign signature "
                            "(`sha256-<hex>.sig`) verifies, signs its digest and this "
                            "repository. Otherwise it is quarantined (`signature: ...`). "
                            "Empty: signatures are not checked.")
    verify_annotations: str = Field("", description="Annotations a signature must carry, "
                                    "as `cosign sign -a` writes them: `ref=refs/heads/main`.")
    verify_grace: Duration = Field(900.0, description="How long a build with no signature "
                                   "yet waits for one (counted from when the agent first saw "
                                   "its digest): CI signs after it pushes. A signature that "
                                   "exists but does not verify is refused at once; no "
                                   "signature by the end of the grace is refused too.")
    allow_downgrade: bool = Field(False, description="Follow the track when it moves to a "
                                  "build older than the one running (by the `created` "
                                  "labels, else this host's deploy order). Off: such a move is "
                                  "held and reported; `deploy TAG`, a pin or `rollback` go "
                                  "back on purpose.")

    @model_validator(mode="after")
    def _check_verification(self) -> Any:
        """Every key is read and parsed at load: a typo is exit 2, not a refused deploy."""
        if self.verify_annotations.strip() and not self.verify_key_paths:
            raise ValueError("TWILIGHT_VERIFY_ANNOTATIONS needs TWILIGHT_VERIFY_KEY")
        if not 0 < self.verify_grace <= MAX_GRACE:
            raise ValueError("TWILIGHT_VERIFY_GRACE must be > 0 and at most 7 days")
        for name, check in (("ANNOTATIONS", lambda: self.required_annotations),
                            ("KEY", lambda: self.verify_key_paths
                             and verify_keys.load_keys(self.verify_key_paths))):
            try:
                check()
            except ValueError as exc:
                raise ValueError(f"TWILIGHT_VERIFY_{name}: {exc}") from None
        return self

    @property
    def verifies(self) -> bool:
        """True when candidates must carry a valid signature."""
        return bool(self.verify_key_paths)

    @property
    def verify_key_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p.strip()) for p in self.verify_key.split(",") if p.strip())

    @property
    def required_annotations(self) -> dict[str, str]:
        return parse_annotations(self.verify_annotations)
