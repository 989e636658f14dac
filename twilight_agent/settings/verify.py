"""Settings of image verification, mixed into Settings: which signatures a build needs,
how long a build may wait for its signature, and whether the track may move back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from twilight_agent.core.durations import parse_duration
from twilight_agent.core.keyless import GITHUB_ISSUER, IdentityRule
from twilight_agent.core.signatures import parse_annotations
from twilight_agent.lazy import lazy_module

# cryptography is loaded only when TWILIGHT_VERIFY_KEY names a key (twilight_agent/lazy.py)
verify_keys = lazy_module("twilight_agent.adapters.verify.keys")

Duration = Annotated[float, BeforeValidator(parse_duration)]
MAX_GRACE = 7 * 86400.0
TRUSTED_ROOT_TYPE = "application/vnd.dev.sigstore.trustedroot+json"


class VerifyFields(BaseModel):
    """Verification: signatures before any pull, and no silent downgrade."""

    verify_key: str = Field("", description="Public keys (PEM, as `cosign generate-key-pair` "
                            "writes `cosign.pub`; comma-separated paths, any one valid is "
                            "enough): a candidate is pulled only when its cosign signature "
                            "(`sha256-<hex>.sig`) verifies, signs its digest and this "
                            "repository. Otherwise it is quarantined (`signature: ...`). "
                            "Empty: signatures are not checked.")
    verify_identity: str = Field("", description="Keyless verification (Sigstore): the "
                                 "GitHub workflow identity that must have signed or attested "
                                 "a build, `https://github.com/OWNER/REPO/.github/workflows/"
                                 "FILE@refs/heads/main` (exact), or a full-match regular "
                                 "expression written `^...$`. The repository and ref it names "
                                 "and the image's revision label (the commit) are checked too. "
                                 "Not together with TWILIGHT_VERIFY_KEY. Needs sigstore: "
                                 "`deploy/install.sh --keyless` installs it.")
    verify_issuer: str = Field(GITHUB_ISSUER, description="The OIDC issuer the keyless "
                               "certificate must name (GitHub Actions' by default).")
    verify_trusted_root: str = Field("", description="A Sigstore `trusted_root.json` for "
                                     "keyless verification (another Sigstore instance). "
                                     "Empty: Sigstore's public-good root over TUF, its last "
                                     "good copy kept under the state directory.")
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
        self._check_keyless()
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

    def _check_keyless(self) -> None:
        """One way of trust at a time: a key and an identity together would have to mean
        "either", and a stolen key would then deploy anything on its own."""
        identity = self.verify_identity.strip()
        if identity and self.verify_key.strip():
            raise ValueError("TWILIGHT_VERIFY_IDENTITY and TWILIGHT_VERIFY_KEY exclude each "
                             "other: choose keyless or key-based verification")
        if not identity:
            if self.verify_trusted_root.strip():
                raise ValueError("TWILIGHT_VERIFY_TRUSTED_ROOT needs TWILIGHT_VERIFY_IDENTITY")
            return
        if importlib.util.find_spec("sigstore") is None:  # found, not imported
            raise ValueError("TWILIGHT_VERIFY_IDENTITY needs sigstore-python, which is not "
                             "installed: run deploy/install.sh --keyless (it adds the hashed "
                             "lock deploy/requirements-keyless.txt), or pip install "
                             "'twilight-agent[keyless]'")
        try:
            IdentityRule(identity).check()
        except ValueError as exc:
            raise ValueError(f"TWILIGHT_VERIFY_IDENTITY: {exc}") from None
        if not self.verify_issuer.startswith("https://") or any(
                c.isspace() for c in self.verify_issuer):
            raise ValueError("TWILIGHT_VERIFY_ISSUER must be an https:// URL")
        problem = self.trusted_root_path and _trusted_root_problem(self.trusted_root_path)
        if problem:
            raise ValueError(f"TWILIGHT_VERIFY_TRUSTED_ROOT: {problem}")

    @property
    def verifies(self) -> bool:
        """True when candidates must carry a valid signature (by key or by identity)."""
        return bool(self.verify_key_paths) or self.identity_rule is not None

    @property
    def identity_rule(self) -> IdentityRule | None:
        """``TWILIGHT_VERIFY_IDENTITY`` as a rule; None when keyless verification is off."""
        identity = self.verify_identity.strip()
        return IdentityRule(identity) if identity else None

    @property
    def trusted_root_path(self) -> Path | None:
        root = self.verify_trusted_root.strip()
        return Path(root) if root else None

    @property
    def verify_key_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p.strip()) for p in self.verify_key.split(",") if p.strip())

    @property
    def required_annotations(self) -> dict[str, str]:
        return parse_annotations(self.verify_annotations)


def _trusted_root_problem(path: Path) -> str | None:
    """Why ``path`` is not a Sigstore trusted root, at a glance (sigstore parses it in full
    when the first candidate is checked: loading it here would grow the idle daemon)."""
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f"{path} is not JSON"
    media = doc.get("mediaType") if isinstance(doc, dict) else None
    if not isinstance(media, str) or not media.startswith(TRUSTED_ROOT_TYPE):
        return f"{path} is not a Sigstore trusted root (mediaType {TRUSTED_ROOT_TYPE}...)"
    return None
