"""Real notification receivers on free loopback ports, for the Apprise tests.

- SMTP: aiosmtpd (the test extras), a real SMTP server in this process; it keeps each
  message it accepts.
- MQTT: Debian's mosquitto broker started with a config of its own (no persistence, one
  loopback listener), and a paho-mqtt subscriber on ``twilight/#``.
The HTTP receiver is tests/unit/test_webhook.py's ``Receiver`` (Apprise's ``json://``).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1: ``messages`` are the parsed mails it accepted."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.messages.append(email.message_from_bytes(
                    envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def text(self, n: int = 0) -> str:
        msg = self.messages[n]
        part = msg.get_body(("plain", "html"))
        assert part is not None
        return str(part.get_content())

    def close(self) -> None:
        self.controller.stop()


class MqttBroker:
    """Debian's mosquitto on a free loopback port, with a subscriber on ``twilight/#``."""

    def __init__(self, workdir: Path) -> None:
        if not shutil.which(MOSQUITTO):
            raise RuntimeError(f"{MOSQUITTO} is missing: install Debian's mosquitto "
                               "(scripts/test installs it)")
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nlog_dest stderr\n")
        self.log = workdir / "mosquitto.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.close()
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-500:]}") from None
        self.received: list[tuple[str, str]] = []
        self._subscribed = threading.Event()
        self.client = self._subscribe()

    def _subscribe(self) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="twilight-test-sub")
        client.on_connect = lambda c, *_: c.subscribe("twilight/#", qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic, m.payload.decode()))
        client.connect("127.0.0.1", self.port, keepalive=30)
        client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber did not subscribe to the broker")
        return client

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.loop_stop()
            self.client.disconnect()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(cond: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[MqttBroker]:
    b = MqttBroker(workdir)
    try:
        yield b
    finally:
        b.close()
