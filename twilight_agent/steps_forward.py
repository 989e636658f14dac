"""The steps that move a deploy forward: pull, prepare, swap, verify. Each handler takes
a ``Step`` and its command and returns the event that ends its phase, or None to go on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twilight_agent.core import machine as m
from twilight_agent.core.outcomes import Outcome
from twilight_agent.deploy_run import Step
from twilight_agent.errors import DockerUnavailable, TwilightError
from twilight_agent.observe import observe_target

# Start failures the host causes, not the build: quarantining a good build for them would
# keep it out until an operator runs `unquarantine`.
HOST_CAUSES = ("port is already allocated", "address already in use",
               "no space left on device")


def host_caused(exc: TwilightError) -> bool:
    """True when starting failed because of the host (engine down, port taken, disk full)."""
    text = str(exc).lower()
    return isinstance(exc, DockerUnavailable) or any(c in text for c in HOST_CAUSES)


def pull(s: Step, _: m.Pull) -> m.Event:
    if s.ctx.should_stop():
        return m.Aborted("stop requested before the pull", Outcome.ABORTED)
    assert s.run.to is not None
    try:
        s.run.image_id = s.ctx.images.pull(str(s.ctx.config.image_ref), s.run.to.digest,
                                           s.ctx.pull_auth(), progress=s.ctx.pull_progress)
    except TwilightError as exc:
        s.run.error = exc
        return m.Aborted(str(exc))
    return m.Pulled()


def take_snapshot(s: Step, _: m.TakeSnapshot) -> m.Event:
    """Read the target again: the pull may have taken minutes since the decision."""
    c = s.ctx
    try:
        s.run.snapshot = observe_target(c.target, c.store, c.config.env_file,
                                        c.config.tag_pattern)
    except TwilightError as exc:
        s.run.error = exc
        return m.Aborted(str(exc))
    if c.should_stop():
        return m.Aborted("stop requested before the swap", Outcome.ABORTED)
    return m.Prepared()


def park(s: Step, _: m.Park) -> m.Event | None:
    try:
        s.ctx.target.park(s.snap)
    except TwilightError as exc:
        return m.SwapFailed(f"parking the old container failed: {exc}")
    return None


def create_new(s: Step, _: m.CreateNew) -> m.Event | None:
    assert s.run.to is not None
    image = s.ctx.config.image_ref.with_digest(s.run.to.digest)
    try:
        s.run.new_cid = s.ctx.target.create(s.snap, image)
    except TwilightError as exc:
        return m.SwapFailed(f"creating the new container failed: {exc}")
    return None


def start_new(s: Step, _: m.StartNew) -> m.Event:
    assert s.run.new_cid is not None
    try:
        s.ctx.target.start(s.run.new_cid)
    except TwilightError as exc:
        return m.SwapFailed(f"starting the new container failed: {exc}",
                            blame_image=not host_caused(exc))
    return m.Started()


def verify(s: Step, _: m.Verify) -> m.Event:
    c = s.ctx
    cid = s.run.new_cid or c.target.new_instance(s.snap, None)
    if cid is None:
        return m.Interrupted("the new container is gone")
    cfg = c.config
    try:
        url = s.engine("verify", lambda: c.target.health_url(cid))  # dockerd restarting
        verdict = c.health.verify(cid, url, timeout=cfg.health_timeout,
                                  interval=cfg.health_interval, soak=cfg.health_soak,
                                  should_stop=c.should_stop)
    except TwilightError as exc:
        return m.Interrupted(f"health check could not run: {exc}")
    s.run.timings["verify_s"] = round(verdict.after_s, 3)
    if verdict.ok:
        return m.Healthy()
    if c.should_stop():
        return m.Interrupted(f"stop requested during verify ({verdict.reason})")
    return m.Unhealthy(f"health gate failed: {verdict.reason}")


HANDLERS: dict[type, Callable[[Step, Any], m.Event | None]] = {
    m.Pull: pull, m.TakeSnapshot: take_snapshot, m.Park: park, m.CreateNew: create_new,
    m.StartNew: start_new, m.Verify: verify,
}
