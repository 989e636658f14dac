"""structlog setup: console on a TTY, JSON otherwise; journald fields when under systemd.

Events, not prose: ``log.info("health_failed", deploy_id=..., probe=..., after_s=...)``.
Values of keys that look secret are redacted here, whatever the caller passed.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|credential|pat$", re.I)
_BEARER = re.compile(r"(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")
REDACTED = "[redacted]"


def redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: blank secret-looking keys and Bearer/Basic credentials inside strings."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEY.search(key) and value not in (None, "", False):
            event_dict[key] = REDACTED
        elif isinstance(value, str) and ("Bearer" in value or "Basic" in value):
            event_dict[key] = _BEARER.sub(r"\1 " + REDACTED, value)
    return event_dict


def configure(fmt: str = "auto", level: int = logging.INFO, stream: Any = None) -> None:
    """Set up structlog once per process. ``fmt``: auto | json | console | journald."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "twilight") -> Any:
    return structlog.get_logger(name)
