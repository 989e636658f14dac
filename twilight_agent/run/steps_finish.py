"""The steps that end a deploy: commit it (the watch is in ``steps_watch.py``), or roll it
back (and halt when that fails).

Commit steps never fail the deploy (a warning joins the history row); undo steps wait for
an engine that went away (``Step.engine``) instead of halting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twilight_agent.adapters.state.envfile import (
    image_lines,
    put_back,
    read_image_digest,
    read_image_tag,
    write_image_tag,
)
from twilight_agent.core import machine as m
from twilight_agent.core.events import HaltedAlert, Quarantined
from twilight_agent.core.models import Release
from twilight_agent.core.policy import quarantine_reason
from twilight_agent.core.ports import HealthVerdict, Snapshot
from twilight_agent.errors import DockerUnavailable, TwilightError
from twilight_agent.run.deploy_run import Step
from twilight_agent.run.recording import Recorder


# ------------------------------------------------------------------------------ commit
def write_env(s: Step, _: m.WriteEnv) -> None:
    cfg = s.ctx.config
    if cfg.env_file is None or s.run.to is None:
        return
    if s.run.env_before is None:
        before = image_lines(cfg.env_file)
        # A commit run again by recovery finds its own lines (the journal kept what was
        # there first): what the operator had is then unknown, and a rollback from the
        # watch writes the previous build's lines instead of putting these back.
        if before is None or not _names(before, s.run.to):
            s.run.env_before = before
    try:
        write_image_tag(cfg.env_file, s.run.to.tag, cfg.tag_pattern, str(s.run.to.digest))
    except TwilightError as exc:
        s.warn("env_file", exc)


def _names(lines: dict[str, str | None], to: Release) -> bool:
    """Whether ``.env`` lines (as ``image_lines`` read them) already name the build ``to``."""
    tag, digest = lines.get("tag") or "", lines.get("digest") or ""
    return tag.strip("\"' ") == to.tag or str(to.digest) in digest


def _kept(s: Step, step: str, call: Callable[[], object]) -> None:
    """A commit step: wait for the engine; any other failure is a warning."""
    try:
        s.engine(step, call)
    except DockerUnavailable:
        raise
    except TwilightError as exc:
        s.warn(step, exc)


def tag_image(s: Step, _: m.TagImage) -> None:
    to, ref = s.run.to, s.ctx.config.image_ref
    assert to is not None
    image = s.run.image_id or ref.with_digest(to.digest)
    _kept(s, "tag_image", lambda: s.ctx.images.tag_image(image, str(ref), to.tag))


def prune(s: Step, _: m.Prune) -> m.Event:
    keep = {u.image_id for u in s.snap.units()} | {x for x in (s.run.image_id,) if x}
    keep |= {str(r.digest) for r in (s.run.to, s.run.from_) if r}
    cfg = s.ctx.config
    _kept(s, "prune", lambda: s.ctx.images.prune_images(str(cfg.image_ref), keep,
                                                         cfg.prune_after))
    return m.Committed()


# ------------------------------------------------------------------------------ rollback
def quarantine(s: Step, cmd: m.Quarantine) -> None:
    to = s.run.to
    assert to is not None
    s.ctx.store.quarantine(str(to.digest), to.tag, quarantine_reason(cmd.reason))
    s.ctx.events.emit(Quarantined(s.run.ref(), cmd.reason))


def save_logs(s: Step, cmd: m.SaveLogs) -> None:
    t = s.ctx.tunables
    try:
        cid = s.ctx.target.new_instance(s.unit(cmd.unit), s.run.new_ids.get(cmd.unit))
        if cid is not None:
            s.run.log_tail = s.ctx.target.logs_tail(cid, t.log_lines)[-t.log_tail_chars:]
    except TwilightError as exc:
        s.run.warnings.append(f"logs: {exc}")


def restore_env(s: Step, _: m.RestoreEnv) -> None:
    """Put the previous tag and digest back in ``.env`` when the commit wrote the new ones
    (a rollback from the watch); any other content is the operator's and stays."""
    cfg, to, prev = s.ctx.config, s.run.to, s.run.from_
    if cfg.env_file is None or to is None or prev is None or not prev.tag:
        return
    try:
        tag, digest = read_image_tag(cfg.env_file), read_image_digest(cfg.env_file)
        if (tag == to.tag and to.tag != prev.tag) or digest == str(to.digest):
            if s.run.env_before is not None:  # the lines as they were, byte for byte
                put_back(cfg.env_file, s.run.env_before)
            else:  # a journal of an older version
                write_image_tag(cfg.env_file, prev.tag, cfg.tag_pattern, str(prev.digest))
    except TwilightError as exc:
        s.run.warnings.append(f"env_file: {exc}")


def _undo(s: Step, step: str, call: Callable[[], object], what: str) -> m.Event | None:
    try:
        s.engine(step, call)
    except DockerUnavailable:
        raise
    except TwilightError as exc:
        return m.RollbackFailed(f"{what} failed: {exc}")
    return None


def remove_new(s: Step, cmd: m.RemoveNew) -> m.Event | None:
    unit = s.unit(cmd.unit)

    def remove() -> None:
        cid = s.ctx.target.new_instance(unit, s.run.new_ids.get(cmd.unit))
        if cid is not None:
            s.ctx.target.remove(cid, s.ctx.progress)

    return _undo(s, "remove_new", remove, f"removing the new {unit.name}")


def unpark(s: Step, cmd: m.Unpark) -> m.Event | None:
    """Unit by unit, last first: the first unit's return ends the undo."""
    unit = s.unit(cmd.unit)
    failed = _undo(s, "unpark", lambda: s.ctx.target.unpark(unit, s.ctx.progress),
                   f"restoring the previous {unit.name}")
    return failed or (m.Unparked() if cmd.unit == 0 else None)


def verify_previous(s: Step, _: m.VerifyPrevious) -> m.Event:
    restored: list[str] = []
    for unit in s.snap.units():
        try:
            cid, verdict = _verify_restored(s, unit, restored)
        except DockerUnavailable:
            raise
        except TwilightError as exc:
            return m.RollbackFailed(f"verifying the previous {unit.name} failed: {exc}")
        if not verdict.ok:
            return m.RollbackFailed(f"previous version unhealthy too: {verdict.reason}")
        restored.append(cid)
    return m.PreviousHealthy()


def _verify_restored(s: Step, unit: Snapshot, watch: list[str]) -> tuple[str, HealthVerdict]:
    c, cfg = s.ctx, s.ctx.config
    cid = s.engine("verify_previous", lambda: c.target.serving(unit))
    url = s.engine("verify_previous", lambda: c.target.health_url(unit, cid))
    c.progress("previous version's gate", quiet_s=cfg.health_timeout + cfg.health_soak)
    return cid, c.health.verify(cid, url, timeout=cfg.health_timeout,
                                interval=cfg.health_interval, soak=cfg.health_soak,
                                watch=watch)


def alert(s: Step, cmd: m.Alert) -> None:
    s.ctx.events.emit(HaltedAlert(s.run.ref(), cmd.reason))


def record(s: Step, cmd: m.Record) -> None:
    s.run.outcome = cmd.outcome
    Recorder(s.ctx.store, s.ctx.events).record(s.run, cmd.reason or s.run.reason)


HANDLERS: dict[type, Callable[[Step, Any], m.Event | None]] = {
    m.WriteEnv: write_env, m.TagImage: tag_image,
    m.Prune: prune, m.Quarantine: quarantine, m.SaveLogs: save_logs, m.RestoreEnv: restore_env,
    m.RemoveNew: remove_new, m.Unpark: unpark, m.VerifyPrevious: verify_previous,
    m.Alert: alert, m.Record: record,
}
