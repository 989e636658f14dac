"""A compose project of web + worker sharing one image and a named volume, deployed as one
unit, with a migration before the swap: on the real engine, with the real compose."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed.images import AppImage
from tests.integration.composebed import ComposeSite, lane_flavours
from tests.integration.deploybed import push, python_child

pytestmark = pytest.mark.integration

GROUP_FILE = """\
services:
  web:
    image: ${IMAGE_REPO}:${IMAGE_TAG}${IMAGE_DIGEST-}
    restart: unless-stopped
    stop_grace_period: 2s
    ports:
      - "127.0.0.1:${APP_PORT}:8080"
    environment:
      APP_ROLE: web
    volumes:
      - data:/www/data
  worker:
    image: ${IMAGE_REPO}:${IMAGE_TAG}${IMAGE_DIGEST-}
    restart: unless-stopped
    stop_grace_period: 2s
    environment:
      APP_ROLE: worker
    volumes:
      - data:/www/data
volumes:
  data: {}
"""
FAST = {"HEALTH_INTERVAL": "0.3", "HEALTH_SOAK": "1", "HEALTH_TIMEOUT": "8"}


@dataclass
class GroupSite(ComposeSite):
    """Project ``uid`` with services web and worker; the agent deploys both."""

    @property
    def name(self) -> str:
        """The web container's name (also while the agent has it parked)."""
        names = {c.name.split(".twilight-")[0] for c in self.containers_of("web", True)}
        assert len(names) == 1, names
        return names.pop()

    def containers_of(self, service: str, parked: bool = False) -> list:  # type: ignore[type-arg]
        labels = [f"com.docker.compose.project={self.uid}",
                  f"com.docker.compose.service={service}"]
        return [c for c in self.bed.docker.containers.list(all=True, filters={"label": labels})
                if parked or ".twilight-" not in c.name]

    def service_ids(self, service: str) -> list[str]:
        return sorted(c.id for c in self.containers_of(service))

    def base_config(self, **over: object) -> dict[str, str]:
        cfg = super().base_config(**over)
        cfg.pop("SERVICE")
        cfg.update(SERVICES="web,worker", **FAST)
        cfg.update({k.upper(): str(v) for k, v in over.items()})
        return cfg

    def up(self, img: AppImage) -> str:
        self.project_dir.mkdir(parents=True, exist_ok=True)
        (self.project_dir / "compose.yml").write_text(GROUP_FILE)
        self.env_file.write_text(f"COMPOSE_PROJECT_NAME={self.uid}\nIMAGE_REPO={img.ref}\n"
                                 f"IMAGE_TAG={img.sha_tag}\nAPP_PORT={self.port}\n")
        self.bed.docker.images.pull(img.ref, tag=img.sha_tag)
        self.compose("-f", "compose.yml", "up", "-d")
        self.wait_serving(img.version)
        self.exec("echo kept > /www/data/kept")
        return self.name

    def ids(self) -> dict[str, list[str]]:
        return {s: self.service_ids(s) for s in ("web", "worker")}

    def versions(self) -> dict[str, set[str]]:
        """Which build each service's containers run (the image's APP_VERSION)."""
        out: dict[str, set[str]] = {}
        for service, ids in self.ids().items():
            for cid in ids:
                env = self.bed.docker.api.inspect_container(cid)["Config"]["Env"]
                version = next(e.split("=", 1)[1] for e in env if e.startswith("APP_VERSION="))
                out.setdefault(service, set()).add(version)
        return out

    def settled(self, version: str) -> None:
        """What a user checks: one running container per service, all on ``version``,
        the web answering, the shared volume's data there, nothing parked or left over."""
        rows = self.ps()
        assert sorted(r["service"] for r in rows) == ["web", "worker"], rows
        assert all(r["state"] == "running" for r in rows), rows
        assert self.versions() == {"web": {version}, "worker": {version}}
        self.wait_serving(version)
        assert self.exec("cat /www/data/kept") == "kept"
        assert [c for c in self.project_containers() if ".twilight-" in c] == []


@pytest.fixture(params=lane_flavours())
def group(request: pytest.FixtureRequest, bed, repo, cleanup, tmp_path) -> Iterator[GroupSite]:
    s = GroupSite(bed, cleanup, repo, tmp_path, flavour=request.param)
    yield s
    s.down()


def test_a_good_build_swaps_both_services_and_keeps_the_data(group: GroupSite) -> None:
    group.up(push(group, "v1"))
    v2 = push(group, "v2")
    p = group.cli("deploy")
    assert p.returncode == 0, p.stderr
    group.settled("v2")
    assert group.env_tag() == group.history()[0]["to_tag"]
    deployed = group.ids()
    # compose by hand afterwards finds nothing to change, the first time too: the same
    # containers (no restart), no second replica, data kept
    group.compose("-f", "compose.yml", "up", "-d")
    assert group.ids() == deployed
    group.settled("v2")
    # and the tag moved to another build: pull + up still run the deployed digest
    push(group, "v3", revision=v2.revision)
    group.compose("-f", "compose.yml", "pull")
    group.compose("-f", "compose.yml", "up", "-d")
    assert group.ids() == deployed
    group.settled("v2")


def test_a_worker_that_exits_at_boot_rolls_both_back(group: GroupSite) -> None:
    group.up(push(group, "v1"))
    before = group.ids()
    bad = push(group, "v2", mode="worker-exit")
    p = group.cli("deploy")
    assert p.returncode == 1, p.stderr
    group.settled("v1")
    assert group.ids() == before  # the parked containers came back, not new ones
    st = group.status()
    assert bad.digest in {q["digest"] for q in st["quarantined"]}
    row = group.history()[0]
    assert row["outcome"] == "rolled_back" and "worker" in row["reason"], row
    assert "queue unreachable" in row["log_tail"]


def test_a_migration_runs_before_the_swap_and_the_new_web_sees_it(group: GroupSite) -> None:
    group.up(push(group, "v1"))
    push(group, "v2")
    p = group.cli("deploy", PRE_DEPLOY="sh -c 'echo schema-$APP_VERSION > /www/data/schema'")
    assert p.returncode == 0, p.stderr
    group.settled("v2")
    assert group.exec("cat /www/data/schema") == "schema-v2"
    assert group.containers() == sorted(group.project_containers())  # no task left


@pytest.mark.parametrize(("task", "timeout", "why"), [
    ("sh -c 'echo relation exists >&2; exit 4'", "60", "exited with code 4"),
    ("sleep 3600", "3", "killed after the 3s timeout"),
])
def test_a_failing_or_hanging_migration_touches_nothing(group: GroupSite, task: str,
                                                       timeout: str, why: str) -> None:
    group.up(push(group, "v1"))
    before = group.ids()
    bad = push(group, "v2")
    p = group.cli("deploy", PRE_DEPLOY=task, PRE_DEPLOY_TIMEOUT=timeout)
    assert p.returncode == 1, p.stderr
    assert group.ids() == before
    group.settled("v1")
    (q,) = group.status()["quarantined"]
    assert q["digest"] == bad.digest and why in q["reason"], q
    row = group.history()[0]
    assert (row["outcome"], row["phase"]) == ("rolled_back", "PRE_DEPLOY"), row
    assert not [c for c in group.containers() if "pre-deploy" in c]


CHILD = r"""
import os, signal, sys, threading
from pathlib import Path
from twilight_agent import app
from twilight_agent.settings import load_settings

settings = load_settings(Path(sys.argv[1]))
method, nth, when = sys.argv[2], int(sys.argv[3]), sys.argv[4]

class KillAt:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != method:
            return attr
        def call(*a, **k):
            self.calls += 1
            if self.calls == nth and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.calls == nth and when.startswith("after:"):
                threading.Timer(float(when[6:]), os.kill, (os.getpid(), signal.SIGKILL)).start()
            return attr(*a, **k)
        return call

agent = app.build_agent(settings, runtime=KillAt(app.build_runtime(settings)))
agent.deploy()
print("not killed")
"""


@pytest.mark.parametrize(("mode", "method", "nth", "when", "pre_deploy"), [
    ("good", "run_task", 1, "after:1", "sleep 30"),   # during the migration
    ("good", "park", 2, "before", ""),                 # during the second service's swap
    ("worker-exit", "unpark", 2, "before", ""),        # rolling back the first service
], ids=["pre-deploy", "second-swap", "rollback-of-first"])
def test_killed_mid_group_deploy_recovery_ends_on_one_version(
        group: GroupSite, mode: str, method: str, nth: int, when: str,
        pre_deploy: str) -> None:
    group.up(push(group, "v1"))
    push(group, "v2", mode=mode)
    cfg = group.write_config(PRE_DEPLOY=pre_deploy) if pre_deploy else group.write_config()
    proc = python_child(CHILD, group.tmp, str(cfg), method, str(nth), when)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (out, err)
    p = group.cli("deploy", PRE_DEPLOY="")  # start-up recovery first, then the decision
    assert p.returncode in (0, 1), p.stderr
    rows = group.history()
    recovered = [r for r in rows if r["reason"].startswith("recovered at start-up")]
    assert recovered, rows
    version = "v2" if mode == "good" and rows[0]["outcome"] == "deployed" else "v1"
    group.settled(version)
    assert not [c for c in group.containers() if "pre-deploy" in c]
