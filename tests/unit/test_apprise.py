"""Notifications through Apprise, delivered to three real receivers on loopback.

An HTTP endpoint (Apprise's ``json://``, our own http.server), an SMTP server (aiosmtpd,
``mailto://``) and Debian's mosquitto broker (``mqtt://``, read by a paho subscriber):
each gets the rollback message with the failed build, the reason and the scrubbed log
tail. A receiver that is down costs ``emit`` (the deploy's side) nothing: it is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.receivers import MqttBroker, SmtpReceiver, broker, free_port, wait_for
from tests.unit.test_webhook import IMAGE, Receiver, halted, rolled_back
from twilight_agent import app
from twilight_agent.adapters.notify.apprise_sink import AppriseSink, split_urls, where
from twilight_agent.core.events import HELD_DOWNGRADE, Held
from twilight_agent.errors import ConfigError
from twilight_agent.settings import Settings, load_settings

FAILED_TAG = "sha-bbbbbbb"
REASON = "health gate failed: http 500"
SECRETS = ("abcdefghijklmnop1234", "hunter2")  # in the app's log and in the reason


@pytest.fixture
def http() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    yield r
    r.close()


@pytest.fixture
def mqtt(tmp_path: Path) -> Iterator[MqttBroker]:
    with broker(tmp_path) as b:
        yield b


@pytest.fixture
def sinks() -> Iterator[list[AppriseSink]]:
    made: list[AppriseSink] = []
    yield made
    for s in made:
        s.close(timeout=2.0)


def sink(made: list[AppriseSink], *urls: str, **kw: object) -> AppriseSink:
    s = AppriseSink(urls, IMAGE, host="web-1", backoff=(0.05, 0.1), timeout=1.0, **kw)
    made.append(s)
    return s


def assert_rollback_text(text: str) -> None:
    """What every receiver must show: the failed build, the reason, the scrubbed tail."""
    assert "ROLLED BACK" in text or "rolled back" in text
    assert f"failed build: {FAILED_TAG}" in text
    assert f"reason: {REASON}" in text
    assert "panic: db" in text and "Authorization: Bearer [redacted]" in text
    for secret in SECRETS:
        assert secret not in text


def test_the_rollback_reaches_http_smtp_and_mqtt(http: Receiver, smtp: SmtpReceiver,
                                                 mqtt: MqttBroker,
                                                 sinks: list[AppriseSink]) -> None:
    port = http.server.server_address[1]
    s = sink(sinks, f"json://127.0.0.1:{port}/hooks/s3cr3t-path",
             f"mailto://127.0.0.1:{smtp.port}?from=agent@example.com&to=ops@example.com",
             f"mqtt://127.0.0.1:{mqtt.port}/twilight/deploys")
    s.emit(rolled_back())
    assert s.join(30)
    assert s.delivered == 3, (s.delivered, s.dropped)

    (body,) = http.bodies  # Apprise's JSON: title, message, type
    assert body["title"] == f"web-1: ROLLED BACK {IMAGE}"
    assert body["type"] == "failure"
    assert_rollback_text(body["message"])

    assert len(smtp.messages) == 1
    assert smtp.envelopes[0][1] == ["ops@example.com"]
    assert smtp.messages[0]["Subject"] == f"web-1: ROLLED BACK {IMAGE}"
    assert_rollback_text(smtp.text())

    assert wait_for(lambda: mqtt.received)
    topic, payload = mqtt.received[0]
    assert topic == "twilight/deploys"
    assert_rollback_text(payload)


def test_a_receiver_that_is_down_costs_emit_nothing(tmp_path: Path,
                                                    sinks: list[AppriseSink]) -> None:
    """Nothing listens on these ports: emit still returns at once, the deploy goes on,
    and each message is given up on after its retries, in the delivery thread."""
    down = [f"json://127.0.0.1:{free_port()}/hook",
            f"mailto://127.0.0.1:{free_port()}?from=a@example.com&to=b@example.com",
            f"mqtt://127.0.0.1:{free_port()}/twilight/deploys"]
    s = sink(sinks, *down, attempts=2)
    t0 = time.perf_counter()
    s.emit(rolled_back())
    s.emit(halted("20260101T000000Z-other"))
    took_ms = (time.perf_counter() - t0) * 1000
    print(f"emit with 3 receivers down: {took_ms:.2f} ms for 2 messages")
    assert took_ms < 250, took_ms  # generous: it measures a few ms here
    assert s.join(60)
    assert (s.delivered, s.dropped) == (0, 6)


def test_a_failed_target_does_not_hold_up_the_others(http: Receiver,
                                                     sinks: list[AppriseSink]) -> None:
    port = http.server.server_address[1]
    s = sink(sinks, f"json://127.0.0.1:{free_port()}/down", f"json://127.0.0.1:{port}/up",
             attempts=1)
    s.emit(rolled_back())
    assert s.join(20)
    assert (s.delivered, s.dropped) == (1, 1)
    assert len(http.bodies) == 1


def test_one_message_per_deploy_and_event(http: Receiver, sinks: list[AppriseSink]) -> None:
    port = http.server.server_address[1]
    s = sink(sinks, f"json://127.0.0.1:{port}/x")
    s.emit(rolled_back())
    s.emit(rolled_back())
    assert s.join(10)
    assert len(http.bodies) == 1


def test_a_downgrade_is_a_warning_naming_the_held_build(http: Receiver,
                                                        sinks: list[AppriseSink]) -> None:
    from tests.unit.test_webhook import BAD_RELEASE, GOOD_RELEASE

    port = http.server.server_address[1]
    s = sink(sinks, f"json://127.0.0.1:{port}/x")
    s.emit(Held(BAD_RELEASE, GOOD_RELEASE, HELD_DOWNGRADE, "the track moved back"))
    assert s.join(10)
    (body,) = http.bodies
    assert body["type"] == "warning"
    assert "held build: sha-bbbbbbb" in body["message"]
    assert "serving: sha-aaaaaaa" in body["message"]


def test_send_now_says_which_target_failed_without_its_secret(http: Receiver) -> None:
    port = http.server.server_address[1]
    s = AppriseSink([f"json://user:pa55word@127.0.0.1:{port}/tok3n-path",
                     f"json://127.0.0.1:{free_port()}/tok3n-down", "nosuchscheme://x/y"],
                    IMAGE, host="web-1")
    from twilight_agent.adapters.notify.message import notify_test_body

    results = s.send_now(notify_test_body("web-1", IMAGE))
    assert [r[1] is None for r in results] == [True, False, False]
    assert results[0][0] == "json://127.0.0.1"
    text = json.dumps(results)
    assert "pa55word" not in text and "tok3n" not in text
    assert "test message" in http.bodies[0]["message"]


def test_urls_split_like_apprise_and_show_only_scheme_and_host() -> None:
    text = ("# ops chat\nslack://T1/B2/C3, ntfy://ntfy.example.com/deploys\n"
            "mailto://me:pw@mail.example.com?to=a@x.org,b@y.org mqtt://10.0.0.5:1883/t\n")
    urls = split_urls(text)
    assert urls == ["slack://T1/B2/C3", "ntfy://ntfy.example.com/deploys",
                    "mailto://me:pw@mail.example.com?to=a@x.org,b@y.org",
                    "mqtt://10.0.0.5:1883/t"]
    assert [where(u) for u in urls] == ["slack://…", "ntfy://ntfy.example.com",
                                        "mailto://mail.example.com", "mqtt://10.0.0.5"]
    assert where("tgram://123456:ABCdef/987") == "tgram://…"


def settings_with(tmp_path: Path, **over: object) -> Settings:
    config = tmp_path / "agent.env"  # not the host's /etc/twilight-agent/agent.env
    config.touch()
    return load_settings(config, None, image=IMAGE, container="app",
                         state_dir=tmp_path / "state", **over)


def test_urls_come_from_the_setting_the_file_and_the_credential(tmp_path: Path) -> None:
    urls = tmp_path / "notify-urls"
    urls.write_text("# the team's chat\ndiscord://1234/s3cr3t-token\n")
    urls.chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    s = settings_with(tmp_path, notify="ntfy://ntfy.example.com/deploys", notify_file=urls)
    assert s.notify_urls() == ["ntfy://ntfy.example.com/deploys",
                               "discord://1234/s3cr3t-token"]
    assert "s3cr3t" not in repr(s) and "ntfy.example.com" not in repr(s)
    (creds / "notify-urls").write_text("gotify://gotify.example.com/Atoken\n")
    s = settings_with(tmp_path, notify_file=urls, CREDENTIALS_DIRECTORY=creds)
    assert s.notify_urls() == ["gotify://gotify.example.com/Atoken"]  # the credential wins
    sinks = app.build_sinks(s)
    assert [type(x).__name__ for x in sinks] == ["AppriseSink"]
    assert [sinks[0].where(0)] == ["gotify://gotify.example.com"]
    assert app.build_sinks(settings_with(tmp_path)) == []


def test_a_bad_target_is_refused_at_load_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        settings_with(tmp_path, notify="ntfy://ntfy.example.com/a s3cr3t-not-a-url")
    assert "target 2 is not a URL" in str(exc.value) and "s3cr3t" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"TWILIGHT_NOTIFY_FILE .* does not exist"):
        settings_with(tmp_path, notify_file=tmp_path / "missing")


def notify_test(tmp_path: Path, *lines: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "agent.env"
    conf.write_text("\n".join([f"TWILIGHT_IMAGE={IMAGE}", "TWILIGHT_CONTAINER=app",
                               f"TWILIGHT_STATE_DIR={tmp_path}/state", *lines]) + "\n")
    return subprocess.run([sys.executable, "-m", "twilight_agent", "--config", str(conf),
                           "notify-test"], capture_output=True, text=True, timeout=120)


def test_notify_test_says_which_target_failed(tmp_path: Path, http: Receiver,
                                              smtp: SmtpReceiver) -> None:
    port = http.server.server_address[1]
    urls = tmp_path / "notify-urls"
    urls.write_text(f"json://127.0.0.1:{port}/tok3n-json\n"
                    f"mailto://127.0.0.1:{smtp.port}?from=a@example.com&to=ops@example.com\n"
                    f"json://127.0.0.1:{free_port()}/tok3n-down\n")
    urls.chmod(0o600)
    p = notify_test(tmp_path, f"TWILIGHT_WEBHOOK_URL={http.url}",
                    f"TWILIGHT_NOTIFY_FILE={urls}")
    print(p.stdout, p.stderr)
    assert p.returncode == 1, p.stderr
    lines = p.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["ok", "webhook"], ["ok", "notify"],
                                                ["ok", "notify"], ["FAIL", "notify"]]
    assert lines[3].split()[3].startswith("json://127.0.0.1:")  # scheme://host, the reason
    assert "1 notification target(s) failed" in p.stderr
    assert "tok3n" not in p.stdout + p.stderr and "s3cr3t" not in p.stdout + p.stderr
    assert len(http.bodies) == 2  # the webhook's JSON and Apprise's json://
    assert http.bodies[0]["event"] == "test"
    assert "test message" in smtp.text()


def test_notify_test_all_good_is_exit_0_and_none_configured_is_2(tmp_path: Path,
                                                                  http: Receiver) -> None:
    p = notify_test(tmp_path, f"TWILIGHT_WEBHOOK_URL={http.url}")
    assert (p.returncode, p.stdout.split()[:2]) == (0, ["ok", "webhook"]), p.stderr
    p = notify_test(tmp_path)
    assert p.returncode == 2 and "no notification target" in p.stderr


def test_a_reason_from_apprise_is_cleaned_of_the_url_secrets() -> None:
    from twilight_agent.adapters.notify.apprise_send import hide_secrets

    url = "json://bob:pa55word@hooks.example.com/tok3n-path?key=s3cr3t-value"
    said = ("Failed to send to bob:pa55word@hooks.example.com/tok3n-path?key=s3cr3t-value"
            " (key=s3cr3t-value, user bob)")
    clean = hide_secrets(said, url)
    for secret in ("pa55word", "tok3n", "s3cr3t", "bob"):
        assert secret not in clean, clean
    assert clean.startswith("Failed to send to [redacted]")
