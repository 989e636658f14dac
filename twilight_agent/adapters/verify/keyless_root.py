"""The Sigstore trust root keyless verification checks against, as a sigstore-python
``TrustedRoot``: a ``TWILIGHT_VERIFY_TRUSTED_ROOT`` file, or Sigstore's public-good root.

Loaded with sigstore (``keyless_check``), so only when a candidate is checked.

**The public-good root** comes from Sigstore's TUF repository through python-tuf's
client (sigstore-python's dependency), which checks the metadata's signatures, expiry and
version rollback, starting from the ``root.json`` sigstore-python ships; its metadata and
targets live under the state directory (``sigstore/tuf/``), not in a home directory the
service user may not have. Asked at most once per ``REFRESH_S``, within ``TUF_DEADLINE_S``
(a hung network must not stall the poll past the systemd watchdog). Each root it returns
is kept on disk (``sigstore/trusted_root.json``, replaced atomically). When TUF cannot be
reached or refuses, the last good copy is used: a TUF outage neither blocks a deploy nor
loosens the check. With no copy at all yet, nothing is decided (``RegistryUnavailable``:
the next poll tries again); nothing is ever accepted without a root.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sigstore._utils import read_embedded  # the TUF root.json sigstore-python ships
from sigstore.models import TrustedRoot
from sigstore_models.trustroot import v1 as trustroot_v1
from tuf.ngclient.updater import Updater
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from twilight_agent.adapters.state.atomicfile import atomic_write
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.errors import RegistryUnavailable
from twilight_agent.logs import get_logger

log = get_logger("twilight.keyless")
REFRESH_S = 86400.0  # how often the public-good root is asked of TUF
TUF_DEADLINE_S = 20.0  # one refresh, all requests together (the watchdog allows 60 s)
TUF_URL = "https://tuf-repo-cdn.sigstore.dev"  # Sigstore's public-good TUF repository
CACHE_NAME = "sigstore/trusted_root.json"


def tuf_fetch(directory: Path, updater: Callable[..., Any] = Updater) -> Callable[[], str]:
    """A fetch of the public-good ``trusted_root.json`` over TUF, its metadata and targets
    kept under ``directory``; raises whatever TUF or the network raise."""
    def fetch() -> str:
        meta, targets = directory / "metadata", directory / "targets"
        meta.mkdir(parents=True, exist_ok=True)
        targets.mkdir(parents=True, exist_ok=True)
        client = updater(metadata_dir=str(meta), metadata_base_url=TUF_URL,
                         target_dir=str(targets), target_base_url=f"{TUF_URL}/targets/",
                         fetcher=Urllib3Fetcher(socket_timeout=5),
                         bootstrap=read_embedded("root.json", TUF_URL))
        client.refresh()
        info = client.get_targetinfo("trusted_root.json")
        if info is None:
            raise ValueError("the TUF repository lists no trusted_root.json")
        path = client.find_cached_target(info) or client.download_target(info)
        return Path(path).read_text()
    return fetch


def bounded(fetch: Callable[[], str], deadline: float) -> str:
    """``fetch()``, or ``TimeoutError`` after ``deadline`` seconds (the thread is left to
    finish on its own: at most one a day)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["text"] = fetch()
        except Exception as exc:  # handed to the caller below
            box["error"] = exc
    thread = threading.Thread(target=run, name="tuf-refresh", daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise TimeoutError(f"TUF did not answer within {deadline:.0f} s")
    if "error" in box:
        raise box["error"]
    return str(box["text"])


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

    def __init__(self, state_dir: Path, fetch: Callable[[], str] | None = None,
                 clock: Clock = SYSTEM,
                 deadline: float = TUF_DEADLINE_S) -> None:
        self.cache = state_dir / CACHE_NAME
        self._fetch = fetch or tuf_fetch(state_dir / "sigstore" / "tuf")
        self._clock, self._deadline = clock, deadline
        self._asked = float("-inf")  # when TUF was last asked
        self._loaded: TrustedRoot | None = None

    def load(self) -> TrustedRoot:
        now = self._clock.now()
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
            text = bounded(self._fetch, self._deadline)
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
