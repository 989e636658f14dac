"""The deploy engine end to end on the real engine and registry, driven through the CLI."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from tests.integration.deploybed import Site, one_line, push

pytestmark = pytest.mark.integration


def test_good_image_is_swapped_in_with_the_same_config_and_data(site: Site) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    before = site.inspect()
    v2 = push(site, "v2")

    p = site.cli("deploy")
    assert p.returncode == 0, p.stderr
    assert f"deployed: {v2.sha_tag}" in p.stdout
    after = site.inspect()
    assert after["Id"] != old_id and after["Name"] == f"/{site.name}"
    assert site.running_digest() == v2.digest
    site.wait_serving("v2", timeout=3)
    assert after["HostConfig"]["PortBindings"] == before["HostConfig"]["PortBindings"]
    assert after["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped",
                                                    "MaximumRetryCount": 0}
    assert "RUNTIME_VAR=hello" in after["Config"]["Env"]
    assert "APP_VERSION=v2" in after["Config"]["Env"]
    assert after["Config"]["Labels"]["runtime.label"] == "kept"
    assert "web" in after["NetworkSettings"]["Networks"][f"{site.uid}-net"]["Aliases"]
    assert site.data_intact()
    assert site.env_tag() == v2.sha_tag
    assert site.env_file.read_text().startswith("# compose env\nPOSTGRES_DB=app\n")
    assert site.containers() == [site.name]  # the parked one is gone
    tags = site.bed.docker.images.get(after["Image"]).tags
    assert f"{v2.ref}:{v2.sha_tag}" in tags
    (row,) = site.history()
    assert (row["outcome"], row["from_digest"], row["to_digest"], row["to_tag"]) == (
        "deployed", v1.digest, v2.digest, v2.sha_tag)
    st = site.status()
    assert st["current"] == {"tag": v2.sha_tag, "digest": v2.digest}
    assert st["previous"]["digest"] == v1.digest and st["phase"] == "IDLE"

    again = site.cli("deploy")
    assert again.returncode == 0 and "up_to_date" in again.stdout
    assert site.inspect()["Id"] == after["Id"]


def test_image_that_exits_at_boot_is_rolled_back_fast_and_quarantined(site: Site) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    bad = push(site, "v2", mode="exit")

    t0 = time.monotonic()
    p = site.cli("deploy")
    wall = time.monotonic() - t0
    assert p.returncode == 1, p.stderr
    assert site.inspect()["Id"] == old_id and site.running_digest() == v1.digest
    assert site.serving() == "ok v1"
    assert site.data_intact() and site.env_tag() == v1.sha_tag
    assert site.containers() == [site.name]
    (row,) = site.history()
    assert row["outcome"] == "rolled_back"
    assert re.search(r"health gate failed: (exited|restarting)", row["reason"]), row["reason"]
    assert "cannot open database" in row["log_tail"]
    # from the start of verify (the boot exits at once) to the old container started again
    to_rollback = row["timings"]["VERIFY"] + row["timings"]["ROLLBACK"]
    print(f"\nexit-to-rollback {to_rollback:.2f}s (verify {row['timings']['VERIFY']:.2f}s, "
          f"whole deploy {wall:.1f}s)")
    assert to_rollback < 5
    st = site.status()
    assert [q["digest"] for q in st["quarantined"]] == [bad.digest]

    nxt = site.cli("deploy")
    assert nxt.returncode == 0, nxt.stderr
    assert "quarantined" in nxt.stdout
    assert site.inspect()["Id"] == old_id and len(site.history()) == 1

    refused = site.cli("deploy", bad.sha_tag)
    assert refused.returncode == 2
    assert "unquarantine" in one_line(refused.stderr)


@pytest.mark.parametrize(("mode", "failures"), [("500", "0"), ("hang", "5")])
def test_unhealthy_http_is_rolled_back_after_the_timeout(site: Site, mode: str,
                                                         failures: str) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    push(site, "v2", mode=mode)
    t0 = time.monotonic()
    p = site.cli("deploy", HEALTH_TIMEOUT="4", HEALTH_FAILURES=failures)
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stderr
    assert took >= 4
    assert site.inspect()["Id"] == old_id and site.serving() == "ok v1"
    (row,) = site.history()
    assert row["outcome"] == "rolled_back" and row["timings"]["VERIFY"] >= 4


def test_an_app_answering_500_fails_within_failures_times_interval_plus_1s(
        site: Site) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    push(site, "v2", mode="500")
    p = site.cli("deploy", HEALTH_TIMEOUT="60", HEALTH_INTERVAL="0.5", HEALTH_FAILURES="5")
    assert p.returncode == 1, p.stderr
    assert site.inspect()["Id"] == old_id and site.serving() == "ok v1"
    (row,) = site.history()
    assert "5 http 500 answers in a row" in row["reason"], row["reason"]
    verify_s = row["timings"]["verify_s"]
    print(f"\n500 verdict after {verify_s:.2f}s of verify (limit {5 * 0.5 + 1:g}s)")
    assert verify_s <= 5 * 0.5 + 1


def test_slow_but_healthy_boot_within_the_window_is_kept(site: Site) -> None:
    site.run_app(push(site, "v1"))
    v2 = push(site, "v2", boot_delay=3)
    p = site.cli("deploy")
    assert p.returncode == 0, p.stderr
    assert site.running_digest() == v2.digest and site.serving() == "ok v2"
    assert site.history()[0]["timings"]["VERIFY"] >= 3


def test_second_concurrent_deploy_is_refused_at_once(site: Site) -> None:
    site.run_app(push(site, "v1"))
    v2 = push(site, "v2", boot_delay=3)
    first = site.popen("deploy")
    site.wait_journal("Verify", proc=first)  # swapped; the slow boot is being verified
    second = site.cli("deploy")  # how fast it is refused: bench/lock_refusal.py
    assert second.returncode == 3
    assert "another deploy holds the lock" in one_line(second.stderr)
    assert site.journal_step() == "Verify"  # refused while the first one was still at it
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert site.running_digest() == v2.digest


def _untouched(site: Site, old_id: str) -> None:
    info = site.inspect()
    assert info["Id"] == old_id and info["State"]["Running"]
    assert site.serving() == "ok v1"
    assert site.history() == []


def test_invalid_tag_is_exit_2_and_touches_nothing(site: Site) -> None:
    old_id = site.run_app(push(site, "v1"))
    p = site.cli("deploy", "sha-NOT;OK")
    assert p.returncode == 2
    assert "tag" in one_line(p.stderr)
    _untouched(site, old_id)


def test_missing_image_is_exit_2(site: Site) -> None:
    old_id = site.run_app(push(site, "v1"))
    p = site.cli("deploy", "sha-0000000")
    assert p.returncode == 2, p.stderr
    assert "sha-0000000" in one_line(p.stderr)
    _untouched(site, old_id)


def test_missing_target_container_is_exit_2(site: Site) -> None:
    old_id = site.run_app(push(site, "v1"))
    push(site, "v2")
    p = site.cli("deploy", CONTAINER=f"{site.uid}-nothere")
    assert p.returncode == 2, p.stderr
    assert f"{site.uid}-nothere" in one_line(p.stderr)
    _untouched(site, old_id)


def test_registry_down_is_exit_5(site: Site) -> None:
    old_id = site.run_app(push(site, "v1"))
    p = site.cli("deploy", REGISTRY_URL="http://127.0.0.1:9")
    assert p.returncode == 5, p.stderr
    one_line(p.stderr)
    _untouched(site, old_id)


def test_rollback_and_unquarantine_by_hand(site: Site) -> None:
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2")
    assert site.cli("deploy").returncode == 0
    p = site.cli("rollback")
    assert p.returncode == 0, p.stderr
    assert site.running_digest() == v1.digest and site.env_tag() == v1.sha_tag
    assert site.data_intact()
    assert site.history()[0]["trigger"] == "rollback"

    site.cli("deploy")  # back on v2
    bad = push(site, "v3", mode="exit")
    assert site.cli("deploy").returncode == 1
    assert site.running_digest() == v2.digest
    u = site.cli("unquarantine", bad.sha_tag)
    assert u.returncode == 0 and bad.digest in u.stdout
    assert site.status()["quarantined"] == []
    assert json.loads(site.cli("history", "--json", "-n", "1").stdout)[0]["outcome"] == \
        "rolled_back"


def test_docker_unreachable_is_exit_5(site: Site) -> None:
    old_id = site.run_app(push(site, "v1"))
    p = site.cli("deploy", DOCKER_HOST=f"unix://{site.tmp}/no-docker.sock")
    assert p.returncode == 5, p.stderr
    assert "Docker" in one_line(p.stderr) or "docker" in p.stderr
    _untouched(site, old_id)


ONCE = ["/bin/sh", "-c", "if [ -f /data/booted ]; then echo 'refusing a second boot' >&2; "
        "exit 4; fi; touch /data/booted; exec /bin/sh /app/run"]


def test_failed_rollback_halts_keeps_everything_and_deploys_nothing_automatically(
        site: Site) -> None:
    """The operator's container boots once only (its own entrypoint, kept for the new
    container too): the new one fails, and so does the restored old one."""
    v1 = push(site, "v1")
    old_id = site.run_app(v1, entrypoint=ONCE)
    bad = push(site, "v2")
    p = site.cli("deploy")
    assert p.returncode == 4, p.stderr
    assert "halted" in p.stderr
    st = site.status()
    assert st["halted"] and st["phase"] == "HALTED"
    assert [q["digest"] for q in st["quarantined"]] == [bad.digest]
    assert site.inspect()["Id"] == old_id  # nothing deleted: the old container is kept
    assert site.containers() == [site.name]
    (row,) = site.history()
    assert row["outcome"] == "halted" and "previous version unhealthy" in row["reason"]
    nxt = site.cli("deploy")
    assert nxt.returncode == 0 and "quarantined" in nxt.stdout
    assert len(site.history()) == 1


def test_sigterm_during_verify_undoes_the_swap_without_blaming_the_image(site: Site) -> None:
    v1 = push(site, "v1")
    old_id = site.run_app(v1)
    v2 = push(site, "v2", boot_delay=4)
    first = site.popen("deploy")
    site.wait_journal("Verify", proc=first)  # swapped; verify waits for the slow boot
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 1, err
    assert "SIGTERM" in err
    assert site.inspect()["Id"] == old_id and site.serving() == "ok v1"
    assert site.containers() == [site.name] and site.data_intact()
    assert site.status()["quarantined"] == []
    assert "stop requested" in site.history()[0]["reason"]
    p = site.cli("deploy")  # the build was not blamed: the next deploy takes it
    assert p.returncode == 0, p.stderr
    assert site.running_digest() == v2.digest
