"""sd_notify without a dependency.

``Notifier`` speaks the systemd notification protocol: one datagram of ``KEY=value``
lines to the AF_UNIX socket named in ``$NOTIFY_SOCKET`` (``@name`` = abstract namespace).
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the daemon code never
asks whether it runs under systemd. The environment is handed in by the caller
(``settings.environ()``); nothing here reads ``os.environ``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twilight_agent.logs import get_logger

log = get_logger("twilight.notify")


class Notifier:
    """Sends READY/RELOADING/STOPPING/STATUS/WATCHDOG to systemd; no-op without a socket."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address or None
        self.watchdog_usec = watchdog_usec
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """``$NOTIFY_SOCKET``; ``$WATCHDOG_USEC`` when ``$WATCHDOG_PID`` is unset or is us."""
        usec: int | None = None
        pid = env.get("WATCHDOG_PID", "")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"]) or None
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), None when off."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: object) -> bool:
        """Send one datagram; ``send(ready=1, status="x")`` -> ``READY=1\\nSTATUS=x``."""
        if self._address is None:
            return False
        payload = "\n".join(f"{k.upper()}={_one_line(v)}" for k, v in fields.items())
        try:  # a socket per message, like sd_notify(3): a few a minute at most
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload.encode(), _sockaddr(self._address))
        except OSError as exc:
            if not self._failed:  # once per process, not once per watchdog ping
                log.warning("sd_notify_failed", socket=self._address, error=str(exc))
                self._failed = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(ready=1, **_status(status))

    def reloading(self, status: str | None = None) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(reloading=1, monotonic_usec=usec, **_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send(stopping=1, **_status(status))

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)


def _status(status: str | None) -> dict[str, str]:
    return {"status": status} if status else {}


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _sockaddr(address: str) -> str | bytes:
    if address.startswith("@"):  # abstract namespace
        return b"\0" + address[1:].encode()
    return address
