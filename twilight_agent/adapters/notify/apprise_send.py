"""One message to one Apprise URL. Loaded only when a message is sent (``lazy.py``):
Apprise and its plugins cost an idle daemon some 40 MB it has no use for.

Apprise logs through the standard ``logging`` module; its records do not reach the
journal (a plugin may name a target with its token): a failure's reason is read from
a capture here, stripped of every part of the URL but its scheme and host.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from urllib.parse import parse_qsl, unquote, urlsplit

from twilight_agent.core.scrub import REDACTED

with warnings.catch_warnings():  # Apprise's e-mail plugin imports imghdr (deprecated in 3.11,
    warnings.simplefilter("ignore", DeprecationWarning)  # gone in 3.13: Apprise shims it)
    import apprise

    with contextlib.suppress(ImportError):
        import imghdr  # noqa: F401

logging.getLogger("apprise").propagate = False
# One send at a time: the capture listens on Apprise's one logger, and a line about
# another target would be cleaned of the wrong URL's secrets.
_SENDING = threading.Lock()
_ASSET = apprise.AppriseAsset(app_id="twilight-agent",
                              app_desc="twilight-agent deploy notifications")


class NotAccepted(Exception):
    """Apprise does not know this URL (a typo, or the plugin's library is missing)."""


def send(url: str, title: str, body: str, level: str) -> str | None:
    """Deliver once: None when the service accepted it, else the reason (no secret)."""
    target = apprise.Apprise(asset=_ASSET)
    with _SENDING, apprise.LogCapture(level=logging.WARNING) as capture:  # type: ignore[no-untyped-call]
        if not target.add(url):  # what Apprise says about the URL stays in the capture
            raise NotAccepted("Apprise does not accept this URL (unknown scheme, a missing "
                              "part, or the service's library is not installed)")
        ok = target.notify(body=body, title=title, notify_type=level,
                           body_format=apprise.NotifyFormat.TEXT)
        logged = capture.getvalue()
    if ok:
        return None
    lines = [line.split(" - ", 2)[-1] for line in logged.splitlines() if line.strip()]
    return hide_secrets(lines[-1] if lines else "not delivered", url)[:200]


def hide_secrets(text: str, url: str) -> str:
    """``text`` with the URL's user, password, path parts and query values blanked."""
    rest = url.partition("://")[2]
    secrets: list[str | None] = [rest]
    try:
        parts = urlsplit(f"http://{rest}")
        secrets += [parts.username, parts.password, *parts.path.split("/"),
                    *(v for _, v in parse_qsl(parts.query))]
    except ValueError:
        pass
    for secret in sorted({unquote(s) for s in secrets if s and len(s) >= 3}, key=len,
                         reverse=True):
        text = text.replace(secret, REDACTED)
    return re.sub(r"\s+", " ", text).strip()
