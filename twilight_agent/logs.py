"""structlog setup: console on a TTY, JSON otherwise; journald fields when under systemd.

Events, not prose: ``log.info("health_failed", deploy_id=..., probe=..., after_s=...)``.
Values of keys that look secret are redacted here, whatever the caller passed, and
credentials inside any string value are blanked (``core/scrub.py``).

Under systemd (``fmt="journald"``, or ``auto`` when ``$JOURNAL_STREAM`` names our stderr
and the journal socket exists) each event goes to journald over its native protocol with
fields ``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER=twilight-agent``,
``TWILIGHT_EVENT=<event>`` and ``TWILIGHT_<KEY>`` for every key (``deploy_id`` ->
``TWILIGHT_DEPLOY_ID``), so ``journalctl -u twilight-agent TWILIGHT_EVENT=rollback`` works.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from typing import Any

import structlog

from twilight_agent.core.scrub import REDACTED, scrub

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|authorization|credential|pat$", re.I)
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "twilight-agent"


def redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: blank secret-looking keys, and credentials inside strings (the shapes of
    ``core/scrub.py``)."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEY.search(key) and value not in (None, "", False):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


class InstanceField:
    """Processor: ``instance=NAME`` on every event, from whichever thread logs it (the
    poll runs in the scheduler's thread, where context variables of the main thread are
    not set)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance

    def __call__(self, _: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("instance", self.instance)
        return event_dict


def configure(fmt: str = "auto", level: int = logging.INFO, stream: Any = None,
              env: Mapping[str, str] | None = None,
              journal_socket: str = JOURNAL_SOCKET, instance: str = "") -> str:
    """Set up structlog once per process. ``fmt``: auto | json | console | journald.

    ``env`` (``settings.environ()``) lets ``auto`` see ``$JOURNAL_STREAM``. ``instance``
    (several apps on one host) goes into every event (``TWILIGHT_INSTANCE=api``). Returns
    the format chosen.
    """
    stream = stream or sys.stderr
    fmt = resolve_format(fmt, stream, env or {}, journal_socket)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        *([InstanceField(instance)] if instance else []),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    factory: Any = structlog.PrintLoggerFactory(file=stream)
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    elif fmt == "journald":
        processors += [structlog.processors.format_exc_info, journal_renderer]
        factory = JournalLoggerFactory(journal_socket, stream)
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    return fmt


def get_logger(name: str = "twilight") -> Any:
    return structlog.get_logger(name)


# --------------------------------------------------------------------------- journald
_PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6,
             "debug": 7}
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")
_MAX_FIELD = 64 * 1024  # a log tail is plenty at this size; keeps datagrams small


def stream_is_journal(stream: Any, env: Mapping[str, str]) -> bool:
    """True when ``$JOURNAL_STREAM`` (``dev:inode``) names ``stream``: systemd's own test."""
    value = env.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return bool(value) and value == f"{st.st_dev}:{st.st_ino}"


def resolve_format(fmt: str, stream: Any, env: Mapping[str, str],
                   journal_socket: str = JOURNAL_SOCKET) -> str:
    """``auto`` -> console on a TTY, journald under systemd, else json."""
    if fmt != "auto":
        return fmt
    if getattr(stream, "isatty", lambda: False)():
        return "console"
    if stream_is_journal(stream, env) and os.path.exists(journal_socket):
        return "journald"
    return "json"


def field_name(key: str) -> str:
    """``deploy_id`` -> ``TWILIGHT_DEPLOY_ID``: journald wants [A-Z0-9_], max 64 chars."""
    return ("TWILIGHT_" + _FIELD_BAD.sub("_", key.upper()))[:64]


def _text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str, separators=(",", ":"))
    return text[:_MAX_FIELD]


def _logfmt(value: Any) -> str:
    text = _text(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


def journal_renderer(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: the event as journal fields, handed to ``JournalLogger`` as ``fields=``."""
    event = str(event_dict.pop("event", ""))
    level = str(event_dict.pop("level", "info"))
    event_dict.pop("timestamp", None)  # the journal stamps every entry itself
    exc = event_dict.pop("exception", None)
    items = {k: v for k, v in event_dict.items() if v is not None}
    message = " ".join([event, *(f"{k}={_logfmt(v)}" for k, v in items.items())])
    if exc:
        message += "\n" + str(exc)
    fields = [("MESSAGE", message), ("PRIORITY", str(_PRIORITY.get(level, 6))),
              ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER), ("TWILIGHT_EVENT", event)]
    fields += [(field_name(k), _text(v)) for k, v in items.items()]
    return {"fields": fields}


def encode_journal(fields: list[tuple[str, str]]) -> bytes:
    """The native protocol: ``KEY=value\n``, or ``KEY\n<u64 le length><value>\n`` when the
    value holds a newline."""
    out = bytearray()
    for key, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalLogger:
    """structlog logger that sends entries to journald; falls back to ``stream`` if it can't."""

    def __init__(self, path: str = JOURNAL_SOCKET, fallback: Any = None) -> None:
        self._path = path
        self._fallback = fallback or sys.stderr

    def msg(self, fields: list[tuple[str, str]]) -> None:
        payload = encode_journal(fields)
        try:
            self._send(payload)
        except OSError:
            message = next((v for k, v in fields if k == "MESSAGE"), "")
            print(message, file=self._fallback, flush=True)

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = msg

    def _send(self, payload: bytes) -> None:
        # A socket per entry, like sd_journal_send: the daemon logs a few lines a minute.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(payload, self._path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self.send_memfd(sock, payload)

    def send_memfd(self, sock: socket.socket, payload: bytes) -> None:
        """Too big for a datagram: pass a sealed memfd, as sd_journal_send does."""
        fd = os.memfd_create("twilight-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
                         0, self._path)
        finally:
            os.close(fd)


class JournalLoggerFactory:
    """One shared ``JournalLogger`` for every ``get_logger`` call."""

    def __init__(self, path: str, fallback: Any) -> None:
        self._logger = JournalLogger(path, fallback)

    def __call__(self, *args: Any) -> JournalLogger:
        return self._logger
