"""twilight-agent under a real systemd: what operators do with systemctl and journalctl."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from testbed.util import wait_until
from tests.conftest import Bed
from tests.e2e.conftest import CONFIG, UNIT, App, Machine, install, render_config

pytestmark = pytest.mark.e2e

POLL = 3.0  # TWILIGHT_POLL_INTERVAL in these tests
CLI = "/usr/local/bin/twilight-agent"


def report(request: pytest.FixtureRequest, line: str) -> None:
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)


def wait_serving(app: App, m: Machine, version: str, timeout: float) -> float:
    """Wait until the app answers as ``version``; return how long it took."""
    t0 = time.monotonic()
    try:
        wait_until(lambda: app.serving() == version, timeout=timeout, interval=0.2,
                   what=f"{version} to be served")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; serving {app.serving()!r}\n{m.journal_text()}") from None
    return time.monotonic() - t0


def wait_status(m: Machine, expected: str, timeout: float = 30) -> None:
    try:
        wait_until(lambda: m.prop("StatusText").startswith(expected), timeout=timeout,
                   interval=0.3, what=f"STATUS={expected}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; STATUS={m.prop('StatusText')!r}\n{m.journal_text()}"
                             ) from None


def test_start_notify_reload_refusal_and_hardening(
        bed: Bed, machine: Machine, repo: str, cleanup: str, wheelhouse: Path,
        request: pytest.FixtureRequest) -> None:
    app = App(bed, cleanup, repo)
    v1 = bed.push(repo, version="v1")
    app.start(v1)
    install(machine, wheelhouse, app.config())
    m = machine

    # Type=notify: active only once the agent said READY=1, with a STATUS= line.
    assert m.prop("Type") == "notify"
    wait_until(lambda: m.prop("ActiveState") == "active", timeout=30, what="active")
    wait_status(m, "following main at ")
    assert m.sh(f"systemctl is-active {UNIT}") == "active"
    assert m.prop("WatchdogUSec") == "1min"
    pid = m.prop("MainPID")

    # The unit is clean and hardened; the score goes into the README.
    assert m.sh(f"systemd-analyze verify {UNIT} 2>&1") == ""
    security = m.sh(f"systemd-analyze security {UNIT} --no-pager")
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", security).group(1))
    report(request, f"systemd-analyze security {UNIT}: {score} "
                    f"(boot {m.timings['boot_s']:.1f}s, install {m.timings['install_s']:.1f}s)")
    assert score <= 1.5, security

    # Events reach the journal with their own fields.
    started = m.events("daemon_started")
    assert started and started[-1]["TWILIGHT_TRACK"] == "main"
    assert started[-1]["SYSLOG_IDENTIFIER"] == "twilight-agent"

    # A bad config on reload: refused with one clear line, the unit stays up as it was.
    good = render_config(app.config())
    m.write(CONFIG, good + "TWILIGHT_POLL_INTERVAL=soon\n")
    m.sh(f"systemctl reload {UNIT}")
    refused = wait_until(lambda: m.events("reload_refused"), timeout=10, what="reload_refused")
    assert "TWILIGHT_POLL_INTERVAL" in refused[0]["TWILIGHT_ERROR"]
    assert refused[0]["PRIORITY"] == "3"
    time.sleep(POLL)  # a poll later it is still the same process, active, polling
    assert m.prop("ActiveState") == "active" and m.prop("MainPID") == pid
    assert "reload refused" in m.prop("StatusText") or m.prop("StatusText").startswith(
        "following main")

    # pin with a bad tag: exit 2 and the file untouched.
    m.write(CONFIG, good)
    before = m.sh(f"sha256sum {CONFIG}")
    code, out = m.run(f"{CLI} pin 'latest;reboot'")
    assert code == 2, out
    assert m.sh(f"sha256sum {CONFIG}") == before

    # The loop's WATCHDOG=1 pings keep a short watchdog happy: no restart.
    m.write(f"/etc/systemd/system/{UNIT}.d/watchdog.conf", "[Service]\nWatchdogSec=2s\n")
    m.sh(f"systemctl daemon-reload && systemctl restart {UNIT}")
    pid = m.prop("MainPID")
    time.sleep(6)
    assert (m.prop("ActiveState"), m.prop("MainPID"), m.prop("NRestarts")) == ("active", pid, "0")

    # A stop with nothing in flight: clean and quick.
    t0 = time.monotonic()
    m.sh(f"systemctl stop {UNIT}")
    assert time.monotonic() - t0 < 10
    assert m.prop("Result") == "success"
    assert m.events("daemon_stopped")


def test_follows_main_pins_and_unpins(bed: Bed, machine: Machine, repo: str, cleanup: str,
                                      wheelhouse: Path, request: pytest.FixtureRequest) -> None:
    m = machine
    app = App(bed, cleanup, repo)
    v1 = bed.push(repo, version="v1")
    app.start(v1)
    install(m, wheelhouse, app.config())
    wait_status(m, "following main at ")

    # A new main is deployed within one poll interval (+ the deploy itself).
    v2 = bed.push(repo, version="v2")
    took = wait_serving(app, m, "v2", timeout=POLL * 1.1 + 20)
    done = wait_until(lambda: m.events("deploy_finished", outcome="deployed"), timeout=15,
                      what="deploy_finished in the journal")
    assert done[-1]["TWILIGHT_TO"] == v2.sha_tag
    assert done[-1]["TWILIGHT_DIGEST"] == v2.digest
    assert done[-1]["TWILIGHT_DEPLOY_ID"]
    phases = [e["TWILIGHT_PHASE"] for e in
              m.events("phase", deploy_id=done[-1]["TWILIGHT_DEPLOY_ID"])]
    assert "SWAP" in phases and "VERIFY" in phases
    report(request, f"new main served {took:.1f}s after the push (poll interval {POLL:g}s)")
    # The unit's one capability at work: the published port's neighbour entry was set.
    assert m.events("neighbour_refreshed") and not m.events("neighbour_refresh_failed"), \
        m.journal_text()

    # Pin by editing the file + systemctl reload: the pinned tag is deployed...
    m.sh(f"sed -i 's/^TWILIGHT_PIN=.*//' {CONFIG} && echo TWILIGHT_PIN={v1.sha_tag} >> {CONFIG}")
    m.sh(f"systemctl reload {UNIT}")
    wait_serving(app, m, "v1", timeout=25)
    assert m.events("pin_changed")[-1]["TWILIGHT_PIN"] == v1.sha_tag
    wait_until(lambda: len(m.events("deploy_finished", outcome="deployed")) == 2, timeout=15,
               what="the pinned deploy to finish")
    wait_status(m, f"pinned to {v1.sha_tag}", timeout=10)
    # ...and the track is no longer followed.
    bed.push(repo, version="v3")
    time.sleep(POLL * 2.5)
    assert app.serving() == "v1"

    # unpin (the command: edits the file, reloads through systemd) resumes following.
    out = m.sh(f"{CLI} unpin")
    assert f"systemctl reload {UNIT}" in out, out
    wait_serving(app, m, "v3", timeout=POLL * 1.1 + 20)
    assert m.events("unpinned")
    wait_until(lambda: len(m.events("deploy_finished", outcome="deployed")) == 3, timeout=15,
               what="the v3 deploy to commit")
    assert app.containers() == [app.name]  # nothing parked or left behind


def test_rollback_in_the_journal_and_stop_during_a_deploy(
        bed: Bed, machine: Machine, repo: str, cleanup: str, wheelhouse: Path,
        request: pytest.FixtureRequest) -> None:
    m = machine
    app = App(bed, cleanup, repo)
    v1 = bed.push(repo, version="v1")
    app.start(v1)
    install(m, wheelhouse, app.config(health_timeout="6s"))
    wait_status(m, "following main at ")

    # A main that dies at boot is rolled back; the journal tells the story, by field.
    bad = bed.push(repo, version="v2-bad", mode="exit")
    done = wait_until(lambda: m.events("deploy_finished", outcome="rolled_back"),
                      timeout=POLL * 1.1 + 30, what="the rollback")[-1]
    assert done["TWILIGHT_TO"] == bad.sha_tag and done["TWILIGHT_DIGEST"] == bad.digest
    assert done["TWILIGHT_FROM"] == v1.sha_tag and done["TWILIGHT_REASON"]
    deploy_id = done["TWILIGHT_DEPLOY_ID"]
    assert m.events("phase", deploy_id=deploy_id, phase="ROLLBACK")
    assert m.events("quarantined", digest=bad.digest)
    assert app.serving() == "v1"
    text = m.sh(f"journalctl -u {UNIT} --no-pager -o cat TWILIGHT_EVENT=deploy_finished")
    assert "outcome=rolled_back" in text

    # systemctl stop while a (slow-booting) deploy is being verified: the service is left
    # healthy and whole, and the agent exits cleanly.
    bed.push(repo, version="v3-slow", boot_delay=4)
    wait_until(lambda: m.events("phase", phase="VERIFY")[-1:] and
               m.events("phase", phase="VERIFY")[-1]["TWILIGHT_DEPLOY_ID"] != deploy_id,
               timeout=POLL * 1.1 + 30, interval=0.2, what="the slow deploy to reach VERIFY")
    t0 = time.monotonic()
    m.sh(f"systemctl stop {UNIT}")
    stop_s = time.monotonic() - t0
    assert stop_s < 120, "TimeoutStopSec"
    assert m.prop("Result") == "success", m.journal_text()
    assert m.events("daemon_stopping")[-1]["TWILIGHT_DEPLOY_IN_FLIGHT"] == "true"
    assert app.containers() == [app.name], m.journal_text()  # nothing parked or half-made
    assert app.running()
    serving = wait_until(lambda: app.serving() in ("v1", "v3-slow") and app.serving(),
                         timeout=10, what="/healthz 200 after the stop")
    report(request, f"systemctl stop during VERIFY took {stop_s:.1f}s; serving {serving}")
