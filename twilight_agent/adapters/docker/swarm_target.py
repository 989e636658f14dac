"""TargetPort for a Docker Swarm service (``TWILIGHT_SWARM_SERVICE``), on a manager node.

The machine runs its one-unit stop-first path; swarm does the rollout itself:
``create`` posts a service update to ``repo@digest`` (never a tag: the engine does not
resolve tags for services) with the registry credentials in ``X-Registry-Auth`` (what
``docker service update --with-registry-auth`` does, so every node can pull), failure
action ``rollback`` and a monitor window no shorter than the health gate. ``settle``
waits for swarm's ``UpdateStatus`` to end; the gate then probes the health URL and
soaks. An undo waits for swarm's own rollback, or, when swarm did not roll back (it
completed and the agent's gate failed, or it paused), updates the service back to the
image it ran before (failure action ``pause``: a rollback never re-applies the bad spec).
Park, stop, expose, promote and remove_parked have nothing to do: no old container is
set aside, the service's tasks are swarm's.

Instances are ``<service id>@<digest>``; ``swarm_spec`` says how one is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import docker.auth
import docker.errors

from twilight_agent.adapters.docker import swarm_spec as ss
from twilight_agent.adapters.docker.errors import engine_errors
from twilight_agent.adapters.docker.logs import LOG_CAP, capped_text, frame_payloads
from twilight_agent.adapters.docker.refs import tag_of
from twilight_agent.adapters.docker.runtime import DockerRuntime
from twilight_agent.core.clock import SYSTEM, Clock
from twilight_agent.core.ports import ContainerState, Snapshot
from twilight_agent.core.progress import Progress
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import NodeLost, RuntimeError_, TargetNotFound


class SwarmTarget:
    """The deploy target as one swarm service. Cheap to build; connects on first use."""

    def __init__(self, runtime: DockerRuntime, *, service: str, health_url: str = "",
                 auth: Callable[[], Mapping[str, str] | None] = lambda: None,
                 registry_host: str = "", order: str = "", parallelism: int | None = None,
                 monitor_s: float = 0.0, gate_s: float = 0.0, clock: Clock = SYSTEM) -> None:
        self.runtime = runtime
        self.service = service
        self._health_url = health_url
        self._auth, self._host = auth, registry_host
        self._order, self._parallelism = order, parallelism
        self._monitor, self._gate = monitor_s, gate_s
        self._clock = clock

    # ------------------------------------------------------------------ reading
    def _inspect(self, service: str) -> dict[str, Any] | None:
        with engine_errors(f"inspecting swarm service {service}"):
            try:
                return dict(self.runtime.api.inspect_service(service))
            except docker.errors.NotFound:
                return None

    def _tasks(self, service_id: str) -> list[dict[str, Any]]:
        with engine_errors(f"listing the tasks of swarm service {self.service}"):
            return [dict(t) for t in self.runtime.api.tasks(filters={"service": service_id})]

    def snapshot(self) -> Snapshot:
        svc = self._inspect(self.service)
        if svc is None:
            raise TargetNotFound(f"swarm service {self.service} does not exist (or this "
                                 "engine is not a swarm manager)")
        image = ss.spec_image(svc.get("Spec"))
        return Snapshot(container_id=str(svc["ID"]), name=self.service, image_id=image,
                        digest=ss.digest_of(image) or None, tag=tag_of(image.split("@")[0]))

    def state(self, instance: str) -> ContainerState:
        sid, digest = ss.split_instance(instance)
        svc = self._inspect(sid)
        return ss.classify(svc, self._tasks(sid) if svc else [], digest)

    def new_instance(self, snap: Snapshot, hint: str | None) -> str | None:
        """The digest the spec runs when it is not the old one, or the one swarm just
        rolled back from; else ``hint`` (the run's own instance)."""
        svc = self._inspect(snap.container_id)
        if svc is None:
            return None
        now = ss.digest_of(ss.spec_image(svc.get("Spec")))
        if now and now != snap.digest:
            return ss.instance_id(snap.container_id, now)
        before = ss.digest_of(ss.spec_image(svc.get("PreviousSpec")))
        if before and before != snap.digest and ss.update_state(svc).startswith("rollback"):
            return ss.instance_id(snap.container_id, before)
        return hint

    def serving(self, snap: Snapshot) -> str:
        return ss.instance_id(snap.container_id, snap.digest or "")

    def health_url(self, unit: Snapshot, instance: str) -> str | None:
        """``TWILIGHT_HEALTH_URL``, else the port the service publishes, on loopback (host
        mode: this manager runs a task; the routing mesh needs IPVS on the host)."""
        if self._health_url:
            return self._health_url
        svc = self._inspect(unit.container_id)
        port = ss.published_port(svc) if svc else None
        return f"http://127.0.0.1:{port}/healthz" if port else None

    def logs_tail(self, instance: str, lines: int) -> str:
        """Swarm's update message, every failed task of the digest (error, exit code), and
        the last log lines of the newest failed one."""
        sid, digest = ss.split_instance(instance)
        svc = self._inspect(sid) or {}
        failed = ss.failed_tasks(self._tasks(sid), digest) if svc else []
        head = [f"swarm: {ss.update_state(svc)}: "
                f"{(svc.get('UpdateStatus') or {}).get('Message', '')}".rstrip(": ")]
        head += [ss.task_line(t) for t in failed[:10]]
        logs = self._task_logs(str(failed[0]["ID"]), lines) if failed else ""
        return "\n".join(head) + ("\n" + logs if logs else "")

    def _task_logs(self, task_id: str, lines: int) -> str:
        """The task's last ``lines`` lines, read as a stream under the same byte cap as a
        container's (``docker_logs``): the engine bounds lines, not bytes."""
        api = self.runtime.api
        try:
            with engine_errors(f"reading the logs of task {task_id[:12]}"):
                res = api._get(api._url("/tasks/{0}/logs", task_id),
                               params={"stdout": 1, "stderr": 1, "tail": lines}, stream=True)
                try:
                    api._raise_for_status(res)
                    return capped_text(frame_payloads(res.iter_content(LOG_CAP)))
                finally:
                    res.close()
        except RuntimeError_ as exc:
            return f"(no logs: {exc})"

    # ------------------------------------------------------------------ rolling
    def _update(self, service_id: str, image: str, failure_action: str) -> None:
        svc = self._inspect(service_id)
        if svc is None:
            raise TargetNotFound(f"swarm service {self.service} is gone")
        body = ss.update_body(svc["Spec"], image, order=self._order,
                              parallelism=self._parallelism, monitor_s=self._monitor,
                              gate_s=self._gate, failure_action=failure_action)
        api, headers = self.runtime.api, {}
        auth = self._auth()
        if auth:
            headers["X-Registry-Auth"] = docker.auth.encode_header(
                {**auth, "serveraddress": self._host})
        with engine_errors(f"updating swarm service {self.service} to {image}"):
            res = api._post_json(api._url("/services/{0}/update", service_id), data=body,
                                 params={"version": svc["Version"]["Index"]},
                                 headers=headers)
            api._raise_for_status(res)

    def create(self, snap: Snapshot, image: str, beside: bool = False, tag: str = "") -> str:
        """The rolling update to ``image`` (``repo@digest``) starts here."""
        self._update(snap.container_id, image, "rollback")
        return ss.instance_id(snap.container_id, ss.digest_of(image))

    def settle(self, instance: str, should_stop: Callable[[], bool] | None = None,
               moved: Progress | None = None) -> None:
        """Wait until swarm's update (or its rollback) of ``instance`` has ended, within a
        bound from the service's own update config; a stop request ends the wait."""
        sid, digest = ss.split_instance(instance)
        self._follow(sid, lambda svc, tasks: ss.settled(ss.classify(svc, tasks, digest)),
                     should_stop, moved)

    def _follow(self, service_id: str,
                ended: Callable[[dict[str, Any] | None, list[dict[str, Any]]], bool],
                should_stop: Callable[[], bool] | None, moved: Progress | None) -> None:
        """Look every tick until ``ended``, within the settle bound. Each change of the
        update's state or of a task's state is reported to ``moved``, which may then hear
        nothing for one batch's delay and monitor window (swarm's own pace)."""
        deadline = self._clock.now() + self._settle_bound(service_id)
        mark: tuple[str, ...] | None = None
        since = self._clock.now()
        while self._clock.now() < deadline:
            svc = self._inspect(service_id)
            tasks = self._tasks(service_id) if svc else []
            if ss.rollout_mark(svc, tasks) != mark:
                mark, since = ss.rollout_mark(svc, tasks), self._clock.now()
                if moved is not None:
                    moved(ss.rollout_line(svc, tasks), quiet_s=ss.batch_pause(svc))
            if ended(svc, tasks) or (should_stop and should_stop()):
                return
            self._stalled(svc, tasks, self._clock.now() - since)
            self._clock.sleep(DEFAULT.swarm_settle_tick_s)

    def _stalled(self, svc: dict[str, Any] | None, tasks: list[dict[str, Any]],
                 quiet_s: float) -> None:
        """Raise ``NodeLost`` when the update has not moved for longer than a batch may
        pause and tasks of it sit unfinished on a node that is down: swarm waits for that
        node, which may never come back."""
        if (svc is None or ss.update_state(svc) not in ss.MOVING
                or quiet_s < ss.batch_pause(svc) + DEFAULT.swarm_stall_grace_s):
            return
        with engine_errors("listing the swarm's nodes"):
            down = ss.down_nodes(self.runtime.api.nodes())
        stuck = ss.stranded(tasks, down) if down else []
        if stuck:
            raise NodeLost(ss.stall_line(svc, stuck, quiet_s))

    def _settle_bound(self, service_id: str) -> float:
        svc = self._inspect(service_id) or {}
        spec = svc.get("Spec") or {}
        uc = spec.get("UpdateConfig") or {}
        tasks = max(ss.wanted_tasks(svc, []), 1) if svc else 1
        batch = int(uc.get("Parallelism", 1) or tasks)
        per = (uc.get("Monitor", 0) + uc.get("Delay", 0)) / ss.NS + DEFAULT.swarm_boot_allowance_s
        return float(per * -(-tasks // batch) * 2)  # the rollout, then swarm's rollback

    def _quiet(self, service_id: str, moved: Progress | None) -> None:
        """Wait until the service's update or rollback, whichever runs, has ended, or has
        stalled on a lost node (the update that follows replaces it)."""
        try:
            self._follow(service_id,
                         lambda svc, _: ss.update_state(svc or {}) not in ss.MOVING,
                         None, moved)
        except NodeLost:
            return

    def remove(self, instance: str, moved: Progress | None = None) -> None:
        """Undo, first half: let swarm's own rollback (if it started one) finish."""
        self._quiet(ss.split_instance(instance)[0], moved)

    def unpark(self, snap: Snapshot, moved: Progress | None = None) -> str:
        """Undo, second half: the image the service ran before, if swarm did not restore
        it; failure action ``pause`` so this never swings back to the bad build."""
        self._quiet(snap.container_id, moved)
        svc = self._inspect(snap.container_id)
        if svc is None:
            raise TargetNotFound(f"swarm service {self.service} is gone")
        back = self.serving(snap)
        if ss.digest_of(ss.spec_image(svc.get("Spec"))) != snap.digest:
            self._update(snap.container_id, snap.image_id, "pause")
        self.settle(back, None, moved)
        return back

    # ------------------------------------------------------------------ nothing to do
    def park(self, snap: Snapshot) -> None:
        """Swarm keeps the old tasks until it replaces them."""

    def stop_parked(self, snap: Snapshot) -> None:
        """Swarm stops the old tasks (in the service's update order)."""

    def start(self, instance: str) -> None:
        """Swarm starts the new tasks itself."""

    def remove_parked(self, snap: Snapshot) -> None:
        """Swarm removed the old tasks; its task history keeps their record."""

    def orphan(self) -> str | None:
        return None
