"""deploy/install.sh on a real systemd: install, install again (no change), uninstall.

What an operator sees: the unit reaches active; a second run reports "unchanged" for every
step and leaves the running agent alone (same MainPID); ``--uninstall`` removes the unit,
the virtualenv, the command and the user, and keeps the config and the state directory.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testbed.util import wait_until
from tests.conftest import Bed
from tests.e2e.conftest import (
    CONFIG,
    INSTALL_DIR,
    OFFLINE,
    UNIT,
    App,
    Machine,
    install,
    install_command,
)

pytestmark = pytest.mark.e2e

STATE_DIR = "/var/lib/twilight-agent"


def steps(out: str) -> dict[str, str]:
    """install.sh's report, ``{step: what happened}`` (the final summary line aside)."""
    lines = [ln for ln in out.splitlines() if not ln.startswith("install.sh:")]
    return {k.strip(): v.strip() for k, _, v in (ln.partition(": ") for ln in lines)}


def exists(m: Machine, path: str) -> bool:
    return m.run(f"test -e {path}")[0] == 0


def test_install_reinstall_uninstall(bed: Bed, machine: Machine, repo: str, cleanup: str,
                                     wheelhouse: Path, request: pytest.FixtureRequest) -> None:
    m = machine
    app = App(bed, cleanup, repo)
    app.start(bed.push(repo, version="v1"))

    # First run: every step does something, and the unit comes up through READY.
    first = install(m, wheelhouse, app.config())
    done = steps(first)
    assert done["user twilight-agent"].startswith("created"), first
    assert done["service twilight-agent"] == "enabled and started", first
    assert first.splitlines()[-1].endswith("change(s) made"), first
    wait_until(lambda: m.prop("ActiveState") == "active", timeout=30, what="active")
    wait_until(lambda: m.prop("StatusText").startswith("following main at "), timeout=30,
               what="the first poll")
    assert m.sh("systemctl is-enabled twilight-agent") == "enabled"
    assert m.sh("stat -c '%a %U' /etc/twilight-agent/registry-token") == "600 root"
    assert m.sh("/usr/local/bin/twilight-agent --version").startswith("twilight-agent ")
    pid, started = m.prop("MainPID"), m.prop("ExecMainStartTimestampMonotonic")
    assert pid != "0"

    # Second run: nothing to do, said step by step; the agent was not restarted.
    t0 = time.monotonic()
    code, again = m.run(install_command(wheelhouse), env=OFFLINE)
    rerun_s = time.monotonic() - t0
    assert code == 0, again
    report = steps(again)
    assert len(report) >= 9, again
    assert all(v.startswith("unchanged") for v in report.values()), again
    assert again.splitlines()[-1] == "install.sh: nothing to do", again
    assert (m.prop("ActiveState"), m.prop("MainPID"), m.prop("NRestarts")) == \
        ("active", pid, "0")
    assert m.prop("ExecMainStartTimestampMonotonic") == started
    config = m.sh(f"sha256sum {CONFIG}")

    # Uninstall: the unit and the venv go; the config and the state directory stay.
    code, gone = m.run(f"bash {INSTALL_DIR}/deploy/install.sh --uninstall")
    assert code == 0, gone
    assert m.run(f"systemctl is-active {UNIT}")[1] != "active"
    assert m.prop("LoadState") == "not-found"
    for path in (f"/etc/systemd/system/{UNIT}", "/opt/twilight-agent",
                 "/usr/local/bin/twilight-agent"):
        assert not exists(m, path), f"{path} still there after --uninstall:\n{gone}"
    assert m.run("getent passwd twilight-agent")[0] != 0
    assert m.sh(f"sha256sum {CONFIG}") == config
    assert exists(m, "/etc/twilight-agent/registry-token")
    assert exists(m, f"{STATE_DIR}/state.db"), gone  # history, quarantine
    assert "kept: /etc/twilight-agent" in gone
    assert app.serving() == "v1"  # the app itself is never touched by the installer

    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"install.sh: first run {m.timings['install_s']:.1f}s, "
                      f"second run {rerun_s:.1f}s (no change)")


def test_env_file_the_hardened_unit_may_rewrite(bed: Bed, machine: Machine, repo: str,
                                                cleanup: str, wheelhouse: Path) -> None:
    """``install.sh --env-file``: the compose .env outside the agent's own directories is
    rewritten on a deploy, although the unit runs with ProtectSystem=strict."""
    m = machine
    app = App(bed, cleanup, repo)
    v1 = bed.push(repo, version="v1")
    app.start(v1)
    m.sh(f"install -d -m 0755 /srv/shop && printf 'A=1\\nIMAGE_TAG={v1.sha_tag}\\n' "
         "> /srv/shop/.env")
    install(m, wheelhouse, app.config(env_file="/srv/shop/.env"))
    code, out = m.run(install_command(wheelhouse, "--env-file", "/srv/shop/.env"), env=OFFLINE)
    assert code == 0, out
    assert "ReadWritePaths=/srv/shop" in m.sh(
        "cat /etc/systemd/system/twilight-agent.service.d/env-file.conf")
    assert m.prop("ReadWritePaths") == "/srv/shop"
    v2 = bed.push(repo, version="v2")
    wait_until(lambda: app.serving() == "v2", timeout=40, what="v2 served")
    wait_until(lambda: f"IMAGE_TAG={v2.sha_tag}" in m.sh("cat /srv/shop/.env"), timeout=15,
               what="the .env rewritten")
    assert m.sh("cat /srv/shop/.env").startswith("A=1\n")
    again = m.run(install_command(wheelhouse, "--env-file", "/srv/shop/.env"), env=OFFLINE)[1]
    assert again.splitlines()[-1] == "install.sh: nothing to do", again


@pytest.mark.parametrize(("option", "credential", "secret"), [
    ("--promote-token-file", "promote-token", "push-secret-e2e"),
    ("--notify-file", "notify-urls", "json://127.0.0.1:9/notify-s3cret-e2e"),
])
def test_a_credential_file_is_placed_for_the_unit_and_kept(
        bed: Bed, machine: Machine, repo: str, cleanup: str, wheelhouse: Path, option: str,
        credential: str, secret: str) -> None:
    """``install.sh --promote-token-file`` (a canary's push token) and ``--notify-file``
    (Apprise URLs): the file is placed root-only and named in a drop-in
    ``LoadCredential=<name>:...`` of the unit, which restarts; a second run changes
    nothing. (That the agent reads the credential is a unit test: systemd in a container
    cannot hand credentials over, see ``E2E_DROPIN``.)"""
    m = machine
    app = App(bed, cleanup, repo)
    app.start(bed.push(repo, version="v1"))
    install(m, wheelhouse, app.config())
    wait_until(lambda: m.prop("ActiveState") == "active", timeout=30, what="active")
    pid = m.prop("MainPID")
    m.sh(f"(umask 077; printf '{secret}\\n' > /root/{credential})")
    code, out = m.run(install_command(wheelhouse, option, f"/root/{credential}"),
                      env=OFFLINE)
    assert code == 0, out
    assert steps(out)[f"drop-in LoadCredential={credential}"].startswith("installed"), out
    assert m.sh(f"stat -c '%a %U' /etc/twilight-agent/{credential}") == "600 root"
    assert m.sh(f"cat /etc/twilight-agent/{credential}") == secret
    unit = m.sh("systemctl cat twilight-agent")
    assert f"LoadCredential={credential}:/etc/twilight-agent/{credential}" in unit, unit
    wait_until(lambda: m.prop("MainPID") not in ("0", pid), timeout=30, what="a restart")
    wait_until(lambda: m.prop("StatusText").startswith("following main at "), timeout=30,
               what="the first poll after the restart")
    assert secret not in m.sh("journalctl -u twilight-agent --no-pager -o cat")
    again = m.run(install_command(wheelhouse, option, f"/root/{credential}"),
                  env=OFFLINE)[1]
    assert again.splitlines()[-1] == "install.sh: nothing to do", again
