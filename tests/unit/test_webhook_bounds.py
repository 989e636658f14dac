"""The webhook's reply is streamed and capped, and its client ignores proxy settings from
the environment: a receiver answering 400 MiB leaves the sender under 80 MB of peak RSS
(measured in a child process, ``tests/peak_rss.py``), in a bounded time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.peak_rss import run_measured
from tests.unit.test_webhook import Receiver, closing, hook, receiver, rolled_back

__all__ = ["closing", "receiver"]  # fixtures

REPLY_BYTES = 400 * 1024 * 1024
SENDER = """
import sys, time
from twilight_agent.adapters.notify.webhook import Webhook
from twilight_agent.core.events import DeployFinished, DeployRef
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome
ref = DeployRef("20260101T000000Z-abc123", Release("sha-aaaaaaa", Digest("sha256:" + "a" * 64)),
                Release("sha-bbbbbbb", Digest("sha256:" + "b" * 64)), "poll")
w = Webhook(sys.argv[1], "ghcr.io/acme/app", host="web-1", attempts=1, timeout=5.0)
t0 = time.monotonic()
w.emit(DeployFinished(ref, Outcome.DEPLOYED, "COMMIT", "", 1.0))
done = w.join(30)
RESULT = {"joined": done, "delivered": w.delivered, "dropped": w.dropped,
          "seconds": round(time.monotonic() - t0, 2)}
w.close(2.0)
"""


class HugeReply:
    """Answers every POST with 200 and a 400 MiB body, written in 1 MiB pieces; counts
    what the sender took before it hung up."""

    def __init__(self) -> None:
        self.sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", str(REPLY_BYTES))
                self.end_headers()
                piece = b"x" * (1024 * 1024)
                try:
                    for _ in range(REPLY_BYTES // len(piece)):
                        self.wfile.write(piece)
                        outer.sent += len(piece)
                except OSError:  # the sender hung up: what a capped reader does
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def huge() -> Iterator[HugeReply]:
    h = HugeReply()
    yield h
    h.close()


def test_a_400_mib_reply_leaves_the_sender_under_80_mb(huge: HugeReply) -> None:
    t0 = time.monotonic()
    got = run_measured(SENDER, huge.url, timeout=60)
    print(f"400 MiB webhook reply: peak RSS {got['peak_kb'] / 1024:.1f} MiB, delivered in "
          f"{got['seconds']}s, {huge.sent // 2**20} MiB written before the sender hung up")
    assert got["joined"] and got["delivered"] == 1 and got["dropped"] == 0, got
    assert got["peak_kb"] < 80 * 1024, got
    assert huge.sent < REPLY_BYTES, huge.sent  # it hung up: the reply was never read whole
    assert time.monotonic() - t0 < 30


def test_proxy_settings_in_the_environment_are_not_read(
        receiver: Receiver, closing: list, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard: nothing answers there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    w = hook(closing, receiver.url, attempts=1)
    w.emit(rolled_back())
    assert w.join(10)
    assert (w.delivered, len(receiver.bodies)) == (1, 1)
