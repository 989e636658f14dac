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

from twilight_agent.adapters.notify.webhook import Webhook
from twilight_agent.core.events import DeployFinished, DeployRef, HaltedAlert, PhaseChanged
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome

OLD = "sha256:" + "a" * 64
BAD = "sha256:" + "b" * 64
IMAGE = "ghcr.io/lacatfly/twilight-drive"
GOOD_RELEASE = Release("sha-aaaaaaa", Digest(OLD))
BAD_RELEASE = Release("sha-bbbbbbb", Digest(BAD), revision="b" * 40)
# Exactly the keys a receiver gets: never settings, credentials or other event fields.
BODY_KEYS = {"event", "host", "image", "deploy_id", "timestamp", "outcome", "from", "to",
             "reason", "log_tail", "text"}


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


def ref(deploy_id: str) -> DeployRef:
    """A deploy from the good build to the bad one, started by a poll."""
    return DeployRef(deploy_id, GOOD_RELEASE, BAD_RELEASE, "poll")


def rolled_back(deploy_id: str = "20260101T000000Z-abc123") -> DeployFinished:
    return DeployFinished(
        ref(deploy_id), Outcome.ROLLED_BACK, "VERIFY_PREVIOUS",
        "health gate failed: http 500 (token=hunter2-should-never-leave)", 12.5,
        "booting\nAuthorization: Bearer abcdefghijklmnop1234\npanic: db")


def finished(deploy_id: str, outcome: Outcome, reason: str = "") -> DeployFinished:
    return DeployFinished(ref(deploy_id), outcome, "COMMIT", reason, 30.0)


def halted(deploy_id: str, reason: str = "x") -> HaltedAlert:
    return HaltedAlert(ref(deploy_id), reason)


def test_rollback_message_arrives_with_the_right_digests(receiver: Receiver,
                                                         closing: list[Webhook]) -> None:
    w = hook(closing, receiver.url)
    # Entering ROLLBACK is not a notification: the finished deploy is.
    w.emit(PhaseChanged(ref("20260101T000000Z-abc123"), "ROLLBACK", "VERIFY",
                        "health gate failed: http 500", 9.0))
    w.emit(rolled_back())
    assert w.join(5)
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["event"] == "rollback"
    assert body["host"] == "web-1"
    assert body["image"] == IMAGE
    assert body["deploy_id"] == "20260101T000000Z-abc123"
    assert body["from"] == {"tag": "sha-aaaaaaa", "digest": OLD}
    assert body["to"] == {"tag": "sha-bbbbbbb", "digest": BAD}
    assert body["outcome"] == "rolled_back"
    assert body["reason"].startswith("health gate failed: http 500")
    assert "panic: db" in body["log_tail"]
    assert body["timestamp"].endswith("Z")
    assert "sha-bbbbbbb -> sha-aaaaaaa" in body["text"]
    raw = json.dumps(body)
    assert "abcdefghijklmnop1234" not in raw  # a credential in the app's logs is blanked
    assert "hunter2" not in raw  # ... and one in the reason
    assert set(body) == BODY_KEYS  # only fixed keys


def test_deployed_and_halted_once_per_deploy(receiver: Receiver,
                                             closing: list[Webhook]) -> None:
    w = hook(closing, receiver.url)
    w.emit(finished("d1", Outcome.DEPLOYED))
    w.emit(halted("d2", "previous version unhealthy too"))
    w.emit(finished("d2", Outcome.HALTED, "previous version unhealthy too"))  # same halt
    w.emit(finished("d3", Outcome.FAILED, "pull failed"))  # no message
    w.emit(finished("d4", Outcome.ABORTED, "stop requested"))  # no message
    assert w.join(5)
    assert [(b["event"], b["deploy_id"]) for b in receiver.bodies] == [
        ("deployed", "d1"), ("halted", "d2")]
    assert receiver.bodies[0]["outcome"] == "deployed"
    assert receiver.bodies[0]["from"] == {"tag": "sha-aaaaaaa", "digest": OLD}
    assert receiver.bodies[0]["to"] == {"tag": "sha-bbbbbbb", "digest": BAD}
    assert "deployed " + IMAGE + " sha-aaaaaaa -> sha-bbbbbbb" in receiver.bodies[0]["text"]
    assert receiver.bodies[1]["outcome"] == "halted"
    assert "previous version unhealthy too" in receiver.bodies[1]["text"]


def test_retries_a_failing_receiver(receiver: Receiver, closing: list[Webhook]) -> None:
    receiver.statuses = [503, 502]
    w = hook(closing, receiver.url)
    w.emit(rolled_back())
    assert w.join(5)
    assert receiver.hits == 3
    assert len(receiver.bodies) == 1 and w.delivered == 1


def test_gives_up_after_three_attempts(receiver: Receiver, closing: list[Webhook]) -> None:
    receiver.statuses = [500, 500, 500, 500]
    w = hook(closing, receiver.url)
    w.emit(rolled_back())
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
    w.emit(rolled_back())
    assert time.monotonic() - t0 < 0.1
    assert w.join(5)  # three refused attempts, then given up
    assert w.dropped == 1 and w.delivered == 0


def test_slow_receiver_does_not_block_emit(receiver: Receiver,
                                           closing: list[Webhook]) -> None:
    receiver.delay = 30.0  # held until the test releases it
    w = hook(closing, receiver.url)
    t0 = time.monotonic()
    for i in range(5):
        w.emit(rolled_back(f"d{i}"))
    assert time.monotonic() - t0 < 0.1
    assert w.delivered == 0
    receiver.delay = 0.0
    receiver.release.set()
    assert w.join(10)
    assert sorted(b["deploy_id"] for b in receiver.bodies) == [f"d{i}" for i in range(5)]


def test_close_returns_even_when_the_receiver_hangs(receiver: Receiver) -> None:
    receiver.delay = 30.0
    w = Webhook(receiver.url, IMAGE, host="web-1", backoff=(0.05,), timeout=0.3)
    w.emit(halted("d1"))
    t0 = time.monotonic()
    w.close(timeout=0.5)
    assert time.monotonic() - t0 < 3
    w.emit(halted("d2"))  # after close: ignored, no raise
    assert w.dropped == 1


def test_idle_thread_ends_and_a_new_message_starts_another(receiver: Receiver,
                                                          closing: list[Webhook]) -> None:
    w = hook(closing, receiver.url, idle=0.05)
    w.emit(halted("d1"))
    assert w.join(5)
    deadline = time.monotonic() + 5
    while w._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w._thread is None  # nothing left running for a dropped instance
    w.emit(halted("d2"))
    assert w.join(5)
    assert [b["deploy_id"] for b in receiver.bodies] == ["d1", "d2"]


def test_rollback_body_from_the_agents_deploy_finished(receiver: Receiver,
                                                      closing: list[Webhook]) -> None:
    """What the agent hands the sinks when a deploy rolled back: the typed summary event."""
    w = hook(closing, receiver.url)
    w.emit(DeployFinished(
        DeployRef("d9", Release("sha-aaaaaaa", Digest(OLD)),
                  Release("sha-bbbbbbb", Digest(BAD), revision="b" * 40), "poll"),
        Outcome.ROLLED_BACK, "VERIFY_PREVIOUS", "health gate failed: exited with code 3",
        12.5, "panic: db\n"))
    assert w.join(5)
    (body,) = receiver.bodies
    assert body["event"] == "rollback"
    assert body["deploy_id"] == "d9"
    assert body["outcome"] == "rolled_back"
    assert body["from"] == {"tag": "sha-aaaaaaa", "digest": OLD}
    assert body["to"] == {"tag": "sha-bbbbbbb", "digest": BAD}
    assert body["reason"] == "health gate failed: exited with code 3"
    assert body["log_tail"] == "panic: db\n"
    assert body["text"] == (f"web-1: rolled back {IMAGE} sha-bbbbbbb -> sha-aaaaaaa: "
                            "health gate failed: exited with code 3")
