"""Start-up recovery as a pure function: one case per journal step the machine can write,
with what the engine shows, and the plan it must produce."""

from __future__ import annotations

import pytest

from twilight_agent.core import machine as m
from twilight_agent.core.machine import State
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import ContainerState
from twilight_agent.core.recovery import JournalRow, Plan, plan

RUNNING = ContainerState("running", True)
EXITED = ContainerState("exited", False, exit_code=3)
CREATED = ContainerState("created", False)
UNDO = Plan(State.SWAP, m.SwapFailed("swap interrupted; undone"))
FINISH_COMMIT = Plan(State.COMMIT, commands=m.COMMIT_STEPS)
FINISH_ROLLBACK = Plan(State.ROLLBACK, commands=(m.RestoreEnv(), m.RemoveNew(), m.Unpark()))
RESUME_WATCH = Plan(State.WATCH, commands=m.WATCH_STEPS)
ABORT = Plan(State.PULL, m.Aborted("service untouched", Outcome.ABORTED))


def journal_steps() -> set[tuple[str, str]]:
    """Every (phase, step) the runner journals: the commands of every transition."""
    events: list[tuple[State, m.Event]] = [
        (State.IDLE, m.Begin()), (State.PULL, m.Pulled()), (State.PREPARE, m.Prepared()),
        (State.PREPARE, m.Prepared(pre_deploy=True)),
        (State.PREPARE, m.Prepared(start_first=True)),
        (State.VERIFY, m.Healthy(start_first=True)),
        (State.SWAP, m.Started()), (State.VERIFY, m.Healthy()),
        (State.VERIFY, m.Unhealthy("x")), (State.COMMIT, m.Committed()),
        (State.WATCH, m.WatchFailed("x")), (State.ROLLBACK, m.Unparked())]
    steps = set()
    for state, event in events:
        new, commands = m.transition(state, event)
        steps |= {(new.value, type(c).__name__) for c in commands
                  if not isinstance(c, (m.Record, m.Alert))}
    return steps


CASES = [
    ("PULL", "Pull", None, ABORT),
    ("PREPARE", "TakeSnapshot", None, ABORT),
    ("PRE_DEPLOY", "RunPreDeploy", None, Plan(State.PRE_DEPLOY, commands=(m.RemoveTask(),))),
    ("SWAP", "Park", None, UNDO),
    ("SWAP", "CreateNew", None, UNDO),
    ("SWAP", "StopParked", None, UNDO),
    ("SWAP", "StartNew", CREATED, UNDO),
    ("CUTOVER", "Expose", RUNNING, Plan(State.CUTOVER, commands=tuple(m.cutover_steps(0)))),
    ("CUTOVER", "Park", RUNNING, Plan(State.CUTOVER, commands=tuple(m.cutover_steps(0)))),
    ("CUTOVER", "StopParked", RUNNING, Plan(State.CUTOVER, commands=tuple(m.cutover_steps(0)))),
    ("CUTOVER", "Promote", RUNNING, Plan(State.CUTOVER, commands=tuple(m.cutover_steps(0)))),
    ("VERIFY", "Verify", RUNNING, Plan(State.VERIFY, commands=(m.Verify(),))),
    ("COMMIT", "WriteEnv", RUNNING, FINISH_COMMIT),
    ("COMMIT", "TagImage", RUNNING, FINISH_COMMIT),
    ("COMMIT", "Prune", RUNNING, FINISH_COMMIT),
    ("WATCH", "Watch", RUNNING, RESUME_WATCH),
    ("WATCH", "Watch", EXITED, RESUME_WATCH),  # the watch's first look fails it at once
    ("WATCH", "RemoveParked", RUNNING, Plan(State.WATCH, commands=(m.RemoveParked(),))),
    ("ROLLBACK", "Quarantine", EXITED, Plan(State.ROLLBACK, commands=(
        m.Quarantine("health gate failed: http 500"), m.RestoreEnv(), m.RemoveNew(),
        m.Unpark()))),
    ("ROLLBACK", "SaveLogs", EXITED, FINISH_ROLLBACK),
    ("ROLLBACK", "RestoreEnv", EXITED, FINISH_ROLLBACK),
    ("ROLLBACK", "RemoveNew", EXITED, FINISH_ROLLBACK),
    ("ROLLBACK", "Unpark", None, FINISH_ROLLBACK),
    ("VERIFY_PREVIOUS", "VerifyPrevious", None, FINISH_ROLLBACK),
]


def test_the_cases_cover_every_journal_step() -> None:
    assert {(phase, step) for phase, step, _, _ in CASES} == journal_steps()


@pytest.mark.parametrize(("phase", "step", "new", "expected"), CASES,
                         ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_plan_for_each_journal_step(phase: str, step: str, new: ContainerState | None,
                                    expected: Plan) -> None:
    row = JournalRow(phase, step, "health gate failed: http 500", has_snapshot=True)
    assert plan(row, new) == expected


@pytest.mark.parametrize(("new", "expected"), [
    (RUNNING, Plan(State.VERIFY, commands=(m.Verify(),))),
    (None, Plan(State.VERIFY, m.Interrupted("the new container is gone; undone"))),
    (ContainerState("missing", False), Plan(State.VERIFY, m.Interrupted(
        "the new container is gone; undone"))),
    (CREATED, Plan(State.VERIFY, m.Interrupted("the new container never started; undone"))),
    (EXITED, Plan(State.VERIFY, m.Unhealthy("new container exited (exit code 3, oom=False)"))),
])
def test_verify_judges_the_new_container_as_it_is_now(new: ContainerState | None,
                                                      expected: Plan) -> None:
    assert plan(JournalRow("VERIFY", "Verify", has_snapshot=True), new) == expected


def test_nothing_is_undone_before_a_snapshot_or_for_an_unknown_phase() -> None:
    assert plan(JournalRow("SWAP", "Park", has_snapshot=False), None) == ABORT
    assert plan(JournalRow("RESOLVE", "Resolve", has_snapshot=True), None) == ABORT


def test_every_plan_is_accepted_by_the_machine() -> None:
    for phase, step, new, _ in CASES:
        p = plan(JournalRow(phase, step, "x", has_snapshot=True), new)
        if p.event is not None:
            m.transition(p.state, p.event)  # raises IllegalTransition on a bad plan


def test_a_group_resumes_at_the_unit_the_journal_names() -> None:
    row = JournalRow("SWAP", "CreateNew", has_snapshot=True, unit=1, units=3)
    assert plan(row, None) == Plan(State.SWAP, m.SwapFailed("swap interrupted; undone", unit=1))
    verify = JournalRow("VERIFY", "Verify", has_snapshot=True, unit=2, units=3)
    assert plan(verify, RUNNING) == Plan(State.VERIFY, commands=(m.Verify(2),))
    assert plan(verify, EXITED).event == m.Unhealthy(
        "new container exited (exit code 3, oom=False)", 2)
    _, cmds = m.transition(State.SWAP, m.SwapFailed("x", unit=1))
    assert [type(c).__name__ + str(getattr(c, "unit", "")) for c in cmds] == [
        "SaveLogs1", "RestoreEnv", "RemoveNew1", "Unpark1", "RemoveNew0", "Unpark0"]


def test_a_group_rollback_is_finished_for_every_unit_last_first() -> None:
    row = JournalRow("ROLLBACK", "Unpark", "x", has_snapshot=True, unit=1, units=3)
    assert plan(row, None) == Plan(State.ROLLBACK, commands=(m.RestoreEnv(), *m.undo_steps(2)))
    assert m.undo_steps(2)[-1] == m.Unpark(0)  # the first unit's unpark ends the undo


def test_after_the_last_units_gate_the_group_commits() -> None:
    assert m.transition(State.VERIFY, m.Healthy(0, 2)) == (State.SWAP, m.swap_steps(1))
    assert m.transition(State.VERIFY, m.Healthy(1, 2)) == (State.COMMIT, list(m.COMMIT_STEPS))
    state, cmds = m.transition(State.PRE_DEPLOY, m.PreDeployFailed("exit 3"))
    assert state is State.IDLE and cmds == [m.Quarantine("exit 3"),
                                            m.Record(Outcome.ROLLED_BACK, "exit 3")]


def test_a_failed_watch_undoes_every_unit_and_blames_the_one_that_died() -> None:
    state, cmds = m.transition(State.WATCH, m.WatchFailed("exited with code 3", 1, 3))
    assert state is State.ROLLBACK
    assert [type(c).__name__ + str(getattr(c, "unit", "")) for c in cmds] == [
        "Quarantine", "SaveLogs1", "RestoreEnv", "RemoveNew2", "Unpark2", "RemoveNew1",
        "Unpark1", "RemoveNew0", "Unpark0"]
    assert cmds[0] == m.Quarantine("exited with code 3")


def test_a_suspended_watch_stays_open_and_an_ended_one_records_deployed() -> None:
    assert m.transition(State.WATCH, m.WatchSuspended()) == (State.WATCH, [])
    assert m.transition(State.WATCH, m.WatchEnded()) == (State.IDLE,
                                                          [m.Record(Outcome.DEPLOYED)])
    assert m.transition(State.COMMIT, m.Committed()) == (State.WATCH, list(m.WATCH_STEPS))


def test_start_first_swaps_beside_the_old_one_and_cuts_over_after_the_gate() -> None:
    state, cmds = m.transition(State.PREPARE, m.Prepared(units=2, start_first=True))
    assert state is State.SWAP and cmds == [m.CreateNew(0), m.StartNew(0)]
    state, cmds = m.transition(State.VERIFY, m.Healthy(0, 2, start_first=True))
    assert state is State.CUTOVER and cmds == [m.Expose(0), m.Park(0), m.StopParked(0),
                                               m.Promote(0)]
    assert m.transition(State.CUTOVER, m.CutOver(0, 2)) == (
        State.SWAP, [m.CreateNew(1), m.StartNew(1)])
    assert m.transition(State.CUTOVER, m.CutOver(1, 2)) == (State.COMMIT, list(m.COMMIT_STEPS))
    state, cmds = m.transition(State.CUTOVER, m.SwapFailed("rename failed", unit=1))
    assert state is State.ROLLBACK and m.Quarantine("rename failed") not in cmds
    assert m.transition(State.PRE_DEPLOY, m.PreDeployDone(start_first=True)) == (
        State.SWAP, [m.CreateNew(0), m.StartNew(0)])
