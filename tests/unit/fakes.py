"""Small in-memory fakes of the ports for the agent's unit tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twilight_agent.adapters.docker.runtime import Listed
from twilight_agent.core.clock import SYSTEM
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.ports import ContainerState, HealthVerdict, Snapshot, TaskResult
from twilight_agent.errors import ManifestNotFound, RegistryUnavailable

REPO = "ghcr.io/acme/app"


def digest(n: int) -> Digest:
    return Digest("sha256:" + f"{n:x}".rjust(64, "0"))


def release(n: int) -> Release:
    return Release(tag=f"sha-{n:07x}", digest=digest(n))


class FakeRegistry:
    def __init__(self, track: Release) -> None:
        self.track = track
        self.tags: dict[str, Release] = {track.tag: track}
        self.down = False
        self.calls: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise RegistryUnavailable("registry at http://127.0.0.1:1 refused the connection")

    def track_digest(self, track: str) -> Digest:
        self.calls.append("head")
        self._check()
        return self.track.digest

    def resolve_track(self, track: str, known: Release | None = None,
                      digest: Digest | None = None) -> Release:
        self.calls.append("resolve_track")
        self._check()
        return self.track

    def resolve_tag(self, tag: str) -> Release:
        self.calls.append("resolve_tag")
        self._check()
        if tag not in self.tags:
            raise ManifestNotFound(f"{tag} does not exist")
        return self.tags[tag]

    def created(self, digest: Digest) -> str | None:
        """The ``created`` label of the build under ``digest`` (the tags it knows)."""
        self.calls.append("created")
        self._check()
        known = [r for r in (self.track, *self.tags.values()) if r.digest == digest]
        if not known:
            raise ManifestNotFound(f"{digest} does not exist")
        return known[0].created


@dataclass
class C:
    name: str
    image: str  # digest
    running: bool = True
    status: str = "running"
    policy: dict[str, Any] = field(default_factory=lambda: {"Name": "unless-stopped"})
    labels: dict[str, str] = field(default_factory=dict)
    repo: str = REPO  # the repository the container's image reference names


class FakeRuntime:
    def __init__(self, name: str, current: Release) -> None:
        self.ids = (f"c{i:063d}" for i in itertools.count(1))
        self.containers: dict[str, C] = {}
        self.images = {str(current.digest)}
        self.tags: dict[str, str] = {str(current.digest): current.tag}
        self.cid = self.add(C(name, str(current.digest)))
        self.fail: dict[str, Exception] = {}
        self.calls: list[str] = []
        self.task: tuple[int | None, str] = (0, "migrated\n")
        self.tasks: list[tuple[str, str, tuple[str, ...], float]] = []
        self.on: dict[str, Callable[[], None]] = {}
        self.ports = True  # the target publishes a host port: auto swaps stop-first

    def add(self, c: C) -> str:
        cid = next(self.ids)
        self.containers[cid] = c
        return cid

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.on:
            self.on[name]()
        if name in self.fail:
            raise self.fail[name]

    def by_name(self, name: str) -> C | None:
        cid = self.find_by_name(name)
        return self.containers[cid] if cid else None

    def find_by_name(self, name: str) -> str | None:
        return next((i for i, c in self.containers.items() if c.name == name), None)

    def find_target(self) -> str:
        from twilight_agent.errors import TargetNotFound

        self._step("find_target")
        cid = self.find_by_name("app")
        if cid is None:
            raise TargetNotFound("no container named app")
        return cid

    def snapshot(self, container_id: str) -> Snapshot:
        c = self.containers[container_id]
        return Snapshot(container_id=container_id, name=c.name.removesuffix(".twilight-prev"),
                        image_id="img-" + c.image[-6:], digest=c.image,
                        tag=self.tags.get(c.image), restart_policy=dict(c.policy),
                        service=c.labels.get("com.docker.compose.service", ""))

    def find_by_labels(self, labels: Mapping[str, str]) -> list[Listed]:
        return [Listed(i, c.name, dict(c.labels), f"{c.repo}@{c.image}")
                for i, c in self.containers.items()
                if all(c.labels.get(k) == v for k, v in labels.items())]

    def run_task(self, unit: Snapshot, image: str, argv: tuple[str, ...],
                 timeout: float) -> TaskResult:
        """Scripted by ``task``: ``(exit code or None, output)``; records what ran."""
        self._step("run_task")
        self.tasks.append((unit.name, image, argv, timeout))
        code, output = self.task
        return TaskResult(code, output, 0.1)

    def remove_task(self, unit: Snapshot) -> bool:
        self._step("remove_task")
        return False

    def pull(self, repository: str, digest: Digest, auth: Mapping[str, str] | None,
             progress: Callable[[str], None] | None = None,
             moved: Callable[[str], None] | None = None) -> str:
        self._step("pull")
        self.images.add(str(digest))
        return "img-" + str(digest)[-6:]

    def park(self, snap: Snapshot) -> None:
        self._step("park")
        c = self.containers[snap.container_id]
        c.policy, c.name = {"Name": "no"}, snap.parked_name

    def stop(self, container_id: str) -> None:
        self._step("stop")
        c = self.containers[container_id]
        c.running, c.status = False, "exited"

    def rename(self, container_id: str, name: str) -> None:
        self._step("rename")
        self.containers[container_id].name = name

    def publishes_ports(self, container_id: str) -> bool:
        return self.ports

    def address(self, container_id: str) -> str:
        return "172.18.0." + str(list(self.containers).index(container_id) + 2)

    def expose(self, container_id: str, snap: Snapshot) -> None:
        self._step("expose")
        self.containers[container_id].labels["aliases"] = "exposed"

    def create_from(self, snap: Snapshot, image: str, name: str | None = None,
                    hidden: bool = False, relabel: Any = None) -> str:
        self._step("create")
        old = self.containers[snap.container_id]
        labels = dict(old.labels)
        labels.update(relabel(labels, "sha256:new-image") if relabel else {})
        return self.add(C(name or snap.name, image.split("@")[1], running=False,
                          status="created", policy=dict(snap.restart_policy), labels=labels))

    def start(self, container_id: str) -> None:
        self._step("start")
        c = self.containers[container_id]
        c.running, c.status = True, "running"

    def state(self, container_id: str) -> ContainerState:
        c = self.containers.get(container_id)
        if c is None:
            return ContainerState(status="missing", running=False)
        return ContainerState(status=c.status, running=c.running)

    def logs_tail(self, container_id: str, lines: int = 50) -> str:
        return "fatal: cannot open database\n"

    def remove(self, container_id: str) -> None:
        self._step("remove")
        self.containers.pop(container_id, None)

    def unpark(self, snap: Snapshot) -> str:
        self._step("unpark")
        cid = self.find_by_name(snap.parked_name) or snap.container_id
        if cid not in self.containers:
            from twilight_agent.errors import TargetNotFound

            raise TargetNotFound("parked container is gone")
        c = self.containers[cid]
        c.name, c.policy = snap.name, dict(snap.restart_policy)
        c.running, c.status = True, "running"
        return cid

    def tag_image(self, image: str, repository: str, tag: str) -> None:
        self._step("tag")
        self.tags[image] = tag

    def prune_images(self, repository: str, keep: set[str], older_than_s: float) -> list[str]:
        self._step("prune")
        return []

    def published_url(self, container_id: str, path: str = "/healthz") -> str | None:
        return f"http://127.0.0.1:8080{path}"

    def platform(self) -> tuple[str, ...]:
        return ("linux", "amd64")

    def running_digest(self) -> str | None:
        c = self.by_name("app")
        return c.image if c and c.running else None


class FakeHealth:
    """Healthy unless the container's digest is in ``bad``."""

    def __init__(self, rt: FakeRuntime) -> None:
        self.rt = rt
        self.bad: set[str] = set()
        self.bad_names: set[str] = set()  # containers that fail on a new image
        self.good_images: set[str] = set()  # ... but not on these (the old one)
        self.calls: list[str] = []
        self.watched: list[list[str]] = []
        self.hook: Callable[[], None] | None = None
        self.dies_later: set[str] = set()  # images that pass the gate, die in the watch
        self.watches: list[tuple[list[str], float]] = []  # (containers, seconds) per watch
        self.watch_hook: Callable[[], None] | None = None

    def verify(self, container_id: str, url: str | None, *, timeout: float, interval: float,
               soak: float, should_stop: Callable[[], bool] | None = None,
               watch: Any = (), failures: int = 0) -> HealthVerdict:
        c = self.rt.containers[container_id]
        self.calls.append(c.image)
        self.watched.append(list(watch))
        if self.hook:
            self.hook()
        if c.image in self.bad or (c.name in self.bad_names and c.status == "running"
                                   and c.image not in self.good_images):
            return HealthVerdict(False, "exited with code 3", 0.5)
        if should_stop is not None and should_stop():
            return HealthVerdict(False, "stop requested", 0.1)
        return HealthVerdict(True, "healthy", 0.2)

    def watch_over(self, units: Any, *, seconds: float, timeout: float, interval: float,
                   should_stop: Callable[[], bool] | None = None) -> HealthVerdict:
        self.watches.append(([cid for cid, _ in units], seconds))
        if self.watch_hook:
            self.watch_hook()
        for index, (cid, _) in enumerate(units):
            c = self.rt.containers.get(cid)
            if c is None or c.status != "running":
                return HealthVerdict(False, "container disappeared", 0.1, {"unit": index})
            if c.image in self.dies_later:
                c.status = "exited"
                return HealthVerdict(False, "exited with code 3", 20.0, {"unit": index})
        if should_stop is not None and should_stop():
            return HealthVerdict(False, "interrupted", 0.1, {"interrupted": True})
        return HealthVerdict(True, "no failure during the watch", seconds)


class Sink:
    """Records the typed events; ``named`` gives their audit-log fields by event name."""

    def __init__(self) -> None:
        self.typed: list[Any] = []

    def emit(self, event: Any) -> None:
        self.typed.append(event)

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.name, e.fields()) for e in self.typed]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event]


class WallClock:
    """The system's monotonic time and sleep, with the wall-clock time a test sets."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall

    def now(self) -> float:
        return SYSTEM.now()

    def wall(self) -> float:
        return self._wall()

    def sleep(self, seconds: float) -> None:
        SYSTEM.sleep(seconds)


class StepClock:
    """A ``Clock`` that only moves when slept on: ``sleep`` adds to both times at once and
    is recorded (``slept``), so a backoff costs no real time and its waits can be read."""

    def __init__(self, t: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.t, self.epoch = t, wall
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.epoch

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        self.epoch += seconds
