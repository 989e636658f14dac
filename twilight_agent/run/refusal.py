"""A candidate refused before anything was pulled: its signature did not verify.

The digest is quarantined (reason ``signature: ...``), a history row with outcome
``untrusted`` is written and ``DeployFinished`` goes to every sink (log, metrics,
webhook), the way a rolled-back run ends; the engine and the service are not touched.
"""

from __future__ import annotations

from twilight_agent.core.events import Quarantined
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.policy import quarantine_reason
from twilight_agent.logs import get_logger
from twilight_agent.run.deploy_run import DeployContext, DeployRun
from twilight_agent.run.recording import Recorder

log = get_logger("twilight.agent")


def refuse_untrusted(ctx: DeployContext, run: DeployRun, reason: str) -> None:
    """Quarantine ``run.to`` and record the run as ``untrusted``."""
    to = run.to
    assert to is not None
    ctx.store.quarantine(str(to.digest), to.tag, quarantine_reason(reason))
    ctx.events.emit(Quarantined(run.ref(), reason))
    run.outcome, run.reason = Outcome.UNTRUSTED, reason
    log.warning("signature_refused", deploy_id=run.deploy_id, tag=to.tag,
                digest=str(to.digest), reason=reason)
    Recorder(ctx.store, ctx.events).record(run, reason)
