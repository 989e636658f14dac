"""Several apps on one host: per-instance config, state, lock and journal field, and two
instances refused when they share a target."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.unit.test_journald import receive
from twilight_agent import cli, logs, settings
from twilight_agent.adapters.state.lock import DeployLock
from twilight_agent.commands.service import unit_name
from twilight_agent.errors import ConfigError, LockBusy
from twilight_agent.instances import refuse_overlap
from twilight_agent.settings import Settings, config_path, load_settings

IMAGE = "ghcr.io/acme/app"


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config directory standing in for /etc/twilight-agent; state under tmp_path."""
    conf = tmp_path / "etc"
    conf.mkdir()
    monkeypatch.setattr(settings, "CONFIG_DIR", conf)
    monkeypatch.setattr(settings, "STATE_BASE", tmp_path / "state")
    monkeypatch.setattr(settings, "RUNTIME_BASE", tmp_path / "run")
    for key in ("TWILIGHT_INSTANCE", "TWILIGHT_STATE_DIR", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(key, raising=False)
    return conf


def write(conf: Path, name: str, **values: str) -> Path:
    path = conf / f"{name}.env"
    path.write_text("".join(f"TWILIGHT_{k.upper()}={v}\n" for k, v in values.items()))
    return path


def test_an_instance_reads_its_own_file_and_keeps_its_state_apart(etc: Path,
                                                                tmp_path: Path) -> None:
    write(etc, "api", image=IMAGE, container="api")
    write(etc, "web", image=IMAGE, container="web", state_dir=str(tmp_path / "elsewhere"))
    api, web = load_settings(instance="api"), load_settings(instance="web")
    assert (api.instance, api.container) == ("api", "api")
    assert api.state_dir == tmp_path / "state" / "api"
    assert api.runtime_directory == tmp_path / "run" / "api"
    assert web.state_dir == tmp_path / "elsewhere"  # the file's own choice wins
    assert config_path(None, "api") == etc / "api.env"


def test_each_instance_has_its_own_lock(etc: Path) -> None:
    write(etc, "api", image=IMAGE, container="api")
    write(etc, "web", image=IMAGE, container="web")
    with DeployLock(load_settings(instance="api").state_dir):
        with DeployLock(load_settings(instance="web").state_dir):
            pass  # another app deploys at the same time
        with pytest.raises(LockBusy):
            DeployLock(load_settings(instance="api").state_dir).acquire()


@pytest.mark.parametrize("name", ["../etc", "API", "a/b", "-x", "a b"])
def test_a_bad_instance_name_is_a_config_error(etc: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not an instance name"):
        config_path(None, name)
    with pytest.raises(ValueError, match="not an instance name"):
        Settings(image=IMAGE, instance=name)


def test_a_missing_instance_file_is_one_line_exit_2(etc: Path, capsys) -> None:
    assert cli.main(["--instance", "nope", "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.env does not exist" in err


def test_two_instances_on_one_container_are_refused_naming_both(etc: Path) -> None:
    a = write(etc, "a", image=IMAGE, container="shop")
    b = write(etc, "b", image="ghcr.io/acme/other", container="shop")
    write(etc, "c", image=IMAGE, compose_project="shop", service="web")
    with pytest.raises(ConfigError) as info:
        refuse_overlap(load_settings(instance="b"), b)
    assert str(a) in str(info.value) and str(b) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_service_group_overlapping_another_instances_service_is_refused(etc: Path) -> None:
    write(etc, "a", image=IMAGE, compose_project="shop", service="worker")
    b = write(etc, "b", image=IMAGE, compose_project="shop", services="web,worker")
    with pytest.raises(ConfigError, match="both deploy into compose shop"):
        refuse_overlap(load_settings(instance="b"), b)
    c = write(etc, "c", image=IMAGE, compose_project="shop")  # the whole project
    with pytest.raises(ConfigError):
        refuse_overlap(load_settings(instance="c"), c)


def test_two_instances_on_one_swarm_service_are_refused(etc: Path) -> None:
    write(etc, "a", image=IMAGE, swarm_service="shop_web")
    b = write(etc, "b", image=IMAGE, swarm_service="shop_web")
    with pytest.raises(ConfigError, match="swarm service shop_web"):
        refuse_overlap(load_settings(instance="b"), b)
    c = write(etc, "c", image=IMAGE, container="shop_web")  # a container of that name
    refuse_overlap(load_settings(instance="c"), c)


def test_different_targets_or_engines_are_fine(etc: Path) -> None:
    write(etc, "a", image=IMAGE, container="shop")
    b = write(etc, "b", image=IMAGE, compose_project="shop", service="web")
    write(etc, "c", image=IMAGE, compose_project="shop", service="worker")
    write(etc, "d", image=IMAGE, container="shop", docker_host="unix:///run/other.sock")
    refuse_overlap(load_settings(instance="b"), b)  # no error
    assert unit_name("b") == "twilight-agent@b.service"
    assert unit_name() == "twilight-agent.service"


def test_every_event_of_an_instance_carries_its_name(
        journal: tuple[str, socket.socket]) -> None:
    path, sock = journal
    logs.configure("journald", journal_socket=path, instance="api")
    worker = threading.Thread(  # the daemon polls in the scheduler's thread
        target=lambda: logs.get_logger().info("deploy_finished", outcome="deployed"))
    worker.start()
    worker.join()
    fields = receive(sock)
    assert fields["TWILIGHT_INSTANCE"] == "api" and fields["TWILIGHT_EVENT"] == "deploy_finished"


def directives(path: Path) -> list[tuple[str, str]]:
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [tuple(ln.split("=", 1)) for ln in lines  # type: ignore[misc]
            if ln and not ln.startswith("#") and "=" in ln]


def test_the_template_unit_is_the_plain_unit_but_for_the_instance_lines() -> None:
    root = Path(__file__).resolve().parents[2] / "systemd"
    plain = directives(root / "twilight-agent.service")
    template = directives(root / "twilight-agent@.service")
    assert [k for k, _ in plain] == [k for k, _ in template]  # same directives, same order
    differ = {k: (a, b) for (k, a), (_, b) in zip(plain, template, strict=True) if a != b}
    assert set(differ) == {"Description", "ExecStart", "StateDirectory", "RuntimeDirectory",
                           "LoadCredential"}, differ
    assert differ["ExecStart"][1].endswith("twilight-agent --instance %i run")
    assert differ["StateDirectory"][1] == "twilight-agent/%i"
    assert differ["LoadCredential"][1] == "registry-token:/etc/twilight-agent/%i.registry-token"
