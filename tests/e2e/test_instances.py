"""Several apps on one host under a real systemd: two template instances, each following
its own repository, pinned and reloaded one at a time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testbed.util import wait_until
from tests.conftest import Bed
from tests.e2e.conftest import App, Machine, install

pytestmark = pytest.mark.e2e

POLL = 3.0
CLI = "/usr/local/bin/twilight-agent"


def unit(name: str) -> str:
    return f"twilight-agent@{name}.service"


def wait_serving(app: App, m: Machine, version: str, instance: str, timeout: float) -> None:
    try:
        wait_until(lambda: app.serving() == version, timeout=timeout, interval=0.2,
                   what=f"{app.name} to serve {version}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; serving {app.serving()!r}\n"
                             f"{m.journal_text(unit(instance))}") from None


def test_two_instances_follow_their_own_repositories_and_pin_alone(
        bed: Bed, machine: Machine, cleanup: str, wheelhouse: Path) -> None:
    m = machine
    apps = {name: App(bed, f"{cleanup}{name}", f"bed/{cleanup}/{name}") for name in "ab"}
    first = {name: bed.push(app.repo, version="v1") for name, app in apps.items()}
    for name, app in apps.items():
        app.start(first[name])
        install(m, wheelhouse, app.config(), instance=name)
        wait_until(lambda n=name: m.prop("ActiveState", unit(n)) == "active", timeout=30,
                   what=f"{unit(name)} active")

    # Each instance deploys its own app's new main, and nothing of the other's.
    second = {name: bed.push(app.repo, version="v2") for name, app in apps.items()}
    for name, app in apps.items():
        wait_serving(app, m, "v2", name, timeout=POLL * 1.1 + 20)
        done = wait_until(lambda n=name: m.events("deploy_finished", unit(n),
                                                  outcome="deployed"), timeout=15,
                          what=f"{name}'s deploy_finished")
        assert {e["TWILIGHT_DIGEST"] for e in done} == {second[name].digest}
        assert {e["TWILIGHT_INSTANCE"] for e in done} == {name}
    assert m.sh("ls /var/lib/twilight-agent").split() == ["a", "b"]  # state apart

    # Pin only `a` (the command reloads that app's unit): `b` keeps following main.
    out = m.sh(f"{CLI} --instance a pin {first['a'].sha_tag}")
    assert f"systemctl reload {unit('a')}" in out, out
    wait_serving(apps["a"], m, "v1", "a", timeout=25)
    assert m.events("pin_changed", unit("a"))[-1]["TWILIGHT_PIN"] == first["a"].sha_tag
    assert not m.events("pin_changed", unit("b"))
    for app in apps.values():
        bed.push(app.repo, version="v3")
    wait_serving(apps["b"], m, "v3", "b", timeout=POLL * 1.1 + 20)
    time.sleep(POLL * 2)
    assert apps["a"].serving() == "v1"  # pinned: the new main is not followed
    assert m.prop("StatusText", unit("a")).startswith(f"pinned to {first['a'].sha_tag}")
    assert m.prop("StatusText", unit("b")).startswith("following main")


def test_a_second_instance_on_the_same_container_is_refused(
        bed: Bed, machine: Machine, cleanup: str, wheelhouse: Path) -> None:
    m = machine
    app = App(bed, cleanup, f"bed/{cleanup}/app")
    app.start(bed.push(app.repo, version="v1"))
    install(m, wheelhouse, app.config(), instance="a")
    m.write("/etc/twilight-agent/b.env", "".join(
        f"TWILIGHT_{k.upper()}={v}\n" for k, v in app.config().items()))
    code, out = m.run(f"timeout 20 {CLI} --instance b run 2>&1")
    assert code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "/etc/twilight-agent/a.env" in lines[0] \
        and "/etc/twilight-agent/b.env" in lines[0], out
    assert m.prop("ActiveState", unit("a")) == "active"
