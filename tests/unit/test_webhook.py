"""Webhook notifications against a real HTTP receiver on 127.0.0.1 (our own test server)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from twilight_agent.adapters.webhook import Webhook

OLD = "sha256:" + "a" * 64
BAD = "sha256:" + "b" * 64
IMAGE = "ghcr.io/lacatfly/twilight-drive"


class Receiver:
    """Records every JSON body POSTed to it. ``status`` answers; ``delay`` stalls."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hits = 0
        self.statuses: list[int] = []  # answers for the next requests, then 200
        self.delay = 0.0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.hits += 1
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                if receiver.delay:
                    receiver.release.wait(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cr3t-path"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def closing() -> Iterator[list[Webhook]]:
    """Webhooks to close at the end of the test (their threads must not outlive it)."""
    hooks: list[Webhook] = []
    yield hooks
    for h in hooks:
        h.close(timeout=2.0)


def hook(closing: list[Webhook], url: str, **kw: Any) -> Webhook:
    w = Webhook(url, IMAGE, host="web-1", backoff=(0.05, 0.1), timeout=1.0, **kw)
    closing.append(w)
    return w


def rolled_back(deploy_id: str = "20260101T000000Z-abc123") -> dict[str, Any]:
    return {"deploy_id": deploy_id, "outcome": "rolled_back", "trigger": "poll",
            "from": {"tag": "sha-aaaaaaa", "digest": OLD},
            "to": {"tag": "sha-bbbbbbb", "digest": BAD},
            "reason": "health gate failed: http 500",
            "log_tail": "booting\nAuthorization: Bearer abcdefghijklmnop1234\npanic: db",
            "registry_password": "hunter2-should-never-leave"}


def test_rollback_message_arrives_with_the_right_digests(receiver: Receiver,
                                                         closing: list[Webhook]) -> None:
    w = hook(closing, receiver.url)
    w.emit("phase", {"deploy_id": "x", "phase": "ROLLBACK"})  # not a notification
    w.emit("deploy_finished", rolled_back())
    assert w.join(5)
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["event"] == "rollback"
    assert body["host"] == "web-1"
    assert body["image"] == IMAGE
    assert body["deploy_id"] == "20260101T000000Z-abc123"
    assert body["from"] == {"tag": "sha-aaaaaaa", "digest": OLD}
    assert body["to"] == {"tag": "sha-bbbbbbb", "digest": BAD}
    assert body["reason"] == "health gate failed: http 500"
    assert "panic: db" in body["log_tail"]
    assert body["timestamp"].endswith("Z")
    assert "sha-bbbbbbb -> sha-aaaaaaa" in body["text"]
    raw = json.dumps(body)
    assert "abcdefghijklmnop1234" not in raw  # a credential in the app's logs is blanked
    assert "hunter2" not in raw and "registry_password" not in raw  # only fixed keys


def test_deployed_and_halted_once_per_deploy(receiver: Receiver,
                                             closing: list[Webhook]) -> None:
    w = hook(closing, receiver.url)
    w.emit("deploy_finished", {"deploy_id": "d1", "outcome": "deployed",
                               "from": "sha-aaaaaaa@" + OLD, "to": "sha-bbbbbbb@" + BAD})
    w.emit("halted", {"deploy_id": "d2", "reason": "previous version unhealthy too"})
    w.emit("deploy_finished", {"deploy_id": "d2", "outcome": "halted"})  # same halt
    w.emit("deploy_finished", {"deploy_id": "d3", "outcome": "failed_pull"})  # no message
    assert w.join(5)
    assert [(b["event"], b["deploy_id"]) for b in receiver.bodies] == [
        ("deployed", "d1"), ("halted", "d2")]
    assert receiver.bodies[0]["to"] == {"tag": "sha-bbbbbbb", "digest": BAD}
    assert "previous version unhealthy too" in receiver.bodies[1]["text"]


def test_retries_a_failing_receiver(receiver: Receiver, closing: list[Webhook]) -> None:
    receiver.statuses = [503, 502]
    w = hook(closing, receiver.url)
    w.emit("rollback", rolled_back())
    assert w.join(5)
    assert receiver.hits == 3
    assert len(receiver.bodies) == 1 and w.delivered == 1


def test_gives_up_after_three_attempts(receiver: Receiver, closing: list[Webhook]) -> None:
    receiver.statuses = [500, 500, 500, 500]
    w = hook(closing, receiver.url)
    w.emit("rollback", rolled_back())
    assert w.join(5)
    assert receiver.hits == 3 and receiver.bodies == [] and w.dropped == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_receiver_down_emit_returns_at_once_and_nothing_raises(
        closing: list[Webhook]) -> None:
    w = hook(closing, f"http://127.0.0.1:{free_port()}/hook")
    t0 = time.monotonic()
    w.emit("deploy_finished", rolled_back())
    assert time.monotonic() - t0 < 0.1
    assert w.join(5)  # three refused attempts, then given up
    assert w.dropped == 1 and w.delivered == 0


def test_slow_receiver_does_not_block_emit(receiver: Receiver,
                                           closing: list[Webhook]) -> None:
    receiver.delay = 30.0  # held until the test releases it
    w = hook(closing, receiver.url)
    t0 = time.monotonic()
    for i in range(5):
        w.emit("deploy_finished", rolled_back(f"d{i}"))
    assert time.monotonic() - t0 < 0.1
    assert w.delivered == 0
    receiver.delay = 0.0
    receiver.release.set()
    assert w.join(10)
    assert sorted(b["deploy_id"] for b in receiver.bodies) == [f"d{i}" for i in range(5)]


def test_close_returns_even_when_the_receiver_hangs(receiver: Receiver) -> None:
    receiver.delay = 30.0
    w = Webhook(receiver.url, IMAGE, host="web-1", backoff=(0.05,), timeout=0.3)
    w.emit("halted", {"deploy_id": "d1", "reason": "x"})
    t0 = time.monotonic()
    w.close(timeout=0.5)
    assert time.monotonic() - t0 < 3
    w.emit("halted", {"deploy_id": "d2", "reason": "x"})  # after close: ignored, no raise
    assert w.dropped == 1


def test_idle_thread_ends_and_a_new_message_starts_another(receiver: Receiver,
                                                          closing: list[Webhook]) -> None:
    w = hook(closing, receiver.url, idle=0.05)
    w.emit("halted", {"deploy_id": "d1", "reason": "x"})
    assert w.join(5)
    deadline = time.monotonic() + 5
    while w._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w._thread is None  # nothing left running for a dropped instance
    w.emit("halted", {"deploy_id": "d2", "reason": "x"})
    assert w.join(5)
    assert [b["deploy_id"] for b in receiver.bodies] == ["d1", "d2"]


def test_rollback_from_the_agents_deploy_finished_fields(receiver: Receiver,
                                                        closing: list[Webhook]) -> None:
    """The shape Agent.record emits: flat tags and digests, the log tail, the revision."""
    w = hook(closing, receiver.url)
    w.emit("deploy_finished", {
        "deploy_id": "d9", "outcome": "rolled_back", "phase": "VERIFY_PREVIOUS",
        "from": "sha-aaaaaaa", "to": "sha-bbbbbbb", "digest": BAD,
        "from_tag": "sha-aaaaaaa", "from_digest": OLD, "to_tag": "sha-bbbbbbb",
        "to_digest": BAD, "revision": "b" * 40, "log_tail": "panic: db\n",
        "reason": "health gate failed: exited with code 3", "duration_s": 12.5,
        "trigger": "poll"})
    assert w.join(5)
    (body,) = receiver.bodies
    assert body["event"] == "rollback"
    assert body["from"] == {"tag": "sha-aaaaaaa", "digest": OLD}
    assert body["to"] == {"tag": "sha-bbbbbbb", "digest": BAD}
    assert body["log_tail"] == "panic: db\n"
