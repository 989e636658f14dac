"""Start-up recovery: reconcile an open journal with what Docker shows, then finish or undo.

The journal's last row names the phase and step the agent was in when it stopped; the
snapshot in its payload says what the old container was. Docker says what is there now
(a parked ``<name>.twilight-prev``, a half-created or running new container, an old one
revived by a daemon restart). Every branch ends in a healthy recorded state, or HALTED:

- before the swap (RESOLVE/PULL/PREPARE): nothing was touched; record ``aborted``.
- SWAP: undo (remove the new container, unpark and verify the old one).
- VERIFY: the new container still running -> verify it again, then commit or roll back;
  exited -> roll back and quarantine it; gone -> undo.
- COMMIT: finish the commit steps (each is idempotent).
- ROLLBACK / VERIFY_PREVIOUS: finish the rollback (quarantining first when the agent
  stopped on that very step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twilight_agent.core import machine as m
from twilight_agent.core.ports import PARKED_SUFFIX
from twilight_agent.errors import TwilightError
from twilight_agent.logs import get_logger
from twilight_agent.runner import DeployRun, Runner

if TYPE_CHECKING:
    from twilight_agent.agent import Agent, CycleReport

log = get_logger("twilight.recovery")
State = m.State


def reconcile(agent: Agent) -> CycleReport | None:
    """Finish or undo an interrupted deploy; None when there was nothing to recover."""
    entry = agent.store.open_journal()
    if entry is None:
        _warn_orphan(agent)
        return None
    run = DeployRun.from_journal(entry)
    phase = State(entry["phase"])
    if run.snapshot is not None:
        # Docker must answer before anything is judged: an engine that is down now would
        # make every undo step fail and turn a recoverable stop into HALTED. Raising here
        # keeps the journal open for the next attempt.
        agent.runtime.find_by_name(run.snapshot.name)
    run.note = f"recovered at start-up (agent stopped in {phase.value}/{entry['step']})"
    agent.emit("recovering", {"deploy_id": run.deploy_id, "phase": phase.value,
                              "step": entry["step"]})
    runner = Runner(agent, run)
    if run.snapshot is None or phase in m.BEFORE_SWAP:
        runner.feed(State.PULL, m.Aborted("service untouched", "aborted"))
    elif phase is State.SWAP:
        runner.feed(State.SWAP, m.SwapFailed("swap interrupted; undone"))
    elif phase is State.VERIFY:
        _verify_again(runner)
    elif phase is State.COMMIT:
        runner.resume(State.COMMIT, list(m.COMMIT_STEPS))
    else:
        steps: list[m.Command] = [m.RemoveNew(), m.Unpark()]
        if entry["step"] == "Quarantine":  # stopped before the bad digest was written down
            steps.insert(0, m.Quarantine(run.reason or "failed before the agent stopped"))
        runner.resume(State.ROLLBACK, steps)
    return agent.finish_report(run)


def _verify_again(runner: Runner) -> None:
    """The agent died while verifying: judge the new container again from what it is now."""
    rt = runner.a.runtime
    cid = runner._new_container()
    if cid is None:
        runner.feed(State.VERIFY, m.Interrupted("the new container is gone; undone"))
        return
    runner.run.new_cid = cid
    st = rt.state(cid)
    if st.running:
        runner.resume(State.VERIFY, [m.Verify()])
    elif st.status == "created":
        runner.feed(State.VERIFY, m.Interrupted("the new container never started; undone"))
    else:
        runner.feed(State.VERIFY, m.Unhealthy(
            f"new container {st.status} (exit code {st.exit_code}, oom={st.oom_killed})"))


def _warn_orphan(agent: Agent) -> None:
    """A parked container with no journal (state dir lost?): keep it, tell the operator."""
    name = agent.settings.container
    if not name:
        return
    try:
        parked = agent.runtime.find_by_name(name + PARKED_SUFFIX)
    except TwilightError:
        return
    if parked is not None:
        log.warning("parked_container_without_journal", container=name + PARKED_SUFFIX,
                    hint="nothing is deleted; remove it by hand once the service is healthy")
