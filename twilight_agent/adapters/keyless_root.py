"""The Sigstore trust root keyless verification checks against, as a sigstore-python
``TrustedRoot``: a ``TWILIGHT_VERIFY_TRUSTED_ROOT`` file, or Sigstore's public-good root.

Loaded with sigstore (``keyless_check``), so only when a candidate is checked.

**The public-good root** comes from Sigstore's TUF repository (sigstore-python's TUF
client checks its signatures, expiry and version rollback), at most once per
``REFRESH_S``; each copy it returns is kept on disk under the state directory
(``sigstore/trusted_root.json``, replaced atomically). When TUF cannot be reached or
refuses, the last good copy is used: a TUF outage neither blocks a deploy nor loosens the
check. With no copy at all yet, nothing is decided (``RegistryUnavailable``: the next poll
tries again); nothing is ever accepted without a root.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sigstore.models import ClientTrustConfig, TrustedRoot
from sigstore_models.trustroot import v1 as trustroot_v1

from twilight_agent.adapters.atomicfile import atomic_write
from twilight_agent.errors import RegistryUnavailable
from twilight_agent.logs import get_logger

log = get_logger("twilight.keyless")
REFRESH_S = 86400.0  # how often the public-good root is asked of TUF
CACHE_NAME = "sigstore/trusted_root.json"


def _tuf_root_json() -> str:
    """The public-good trusted root, fetched and checked by sigstore-python's TUF client."""
    return ClientTrustConfig.production().trusted_root._inner.to_json()


class FileRoot:
    """A ``trusted_root.json`` an operator names (another Sigstore instance, a test bed)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._loaded: tuple[float, TrustedRoot] | None = None

    def load(self) -> TrustedRoot:
        """The root, read again when the file changed; ``RegistryUnavailable`` if unreadable."""
        try:
            mtime = self._path.stat().st_mtime
            if self._loaded is None or self._loaded[0] != mtime:
                self._loaded = (mtime, TrustedRoot.from_file(str(self._path)))
        except Exception as exc:  # OSError, a JSON or protobuf error, sigstore's Error
            raise RegistryUnavailable(f"Sigstore trusted root {self._path}: "
                                      f"{_line(exc)}") from exc
        return self._loaded[1]


class PublicGoodRoot:
    """Sigstore's public-good root over TUF, with the last good copy in ``state_dir``."""

    def __init__(self, state_dir: Path, fetch: Callable[[], str] = _tuf_root_json,
                 clock: Callable[[], float] = time.time) -> None:
        self.cache = state_dir / CACHE_NAME
        self._fetch, self._clock = fetch, clock
        self._asked = float("-inf")  # when TUF was last asked
        self._loaded: TrustedRoot | None = None

    def load(self) -> TrustedRoot:
        now = self._clock()
        if self._loaded is None or now - self._asked >= REFRESH_S:
            self._asked = now
            self._loaded = self._refreshed() or self._kept()
        if self._loaded is None:
            raise RegistryUnavailable("Sigstore trusted root: TUF unreachable and no copy "
                                      f"kept in {self.cache}")
        return self._loaded

    def _refreshed(self) -> TrustedRoot | None:
        """A fresh root from TUF, kept on disk; None when TUF fails (logged)."""
        try:
            text = self._fetch()
            root = _parse(text)
        except Exception as exc:  # TUF's and the network's errors, a bad document
            log.warning("trusted_root_refresh_failed", error=_line(exc), kept=str(self.cache))
            return None
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache, text.encode())
        except OSError as exc:  # still verified with it; only the copy is missing
            log.warning("trusted_root_not_kept", error=_line(exc), path=str(self.cache))
        return root

    def _kept(self) -> TrustedRoot | None:
        try:
            return _parse(self.cache.read_text())
        except Exception:  # no copy yet, or a damaged one: as if none
            return None


def _parse(text: str) -> TrustedRoot:
    json.loads(text)  # a plain JSON error first: the one-line reason is clearer
    return TrustedRoot(trustroot_v1.TrustedRoot.from_json(text))


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
