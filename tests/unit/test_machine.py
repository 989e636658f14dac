"""The pure deploy state machine and the selection/quarantine policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from twilight_agent.core import machine as m
from twilight_agent.core import policy
from twilight_agent.core.history import HistoryRow
from twilight_agent.core.machine import State
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome

S = State


def walk(events: list[m.Event], start: State = S.IDLE) -> tuple[State, list[State], list]:
    state, seen, cmds = start, [], []
    for ev in events:
        state, c = m.transition(state, ev)
        seen.append(state)
        cmds.append(c)
    return state, seen, cmds


def names(cmds: list[m.Command]) -> list[str]:
    return [type(c).__name__ for c in cmds]


def test_happy_path_goes_through_every_phase_and_records_deployed() -> None:
    end, seen, cmds = walk([m.Begin(), m.Pulled(), m.Prepared(), m.Started(),
                            m.Healthy(), m.Committed(), m.WatchEnded()])
    assert seen == [S.PULL, S.PREPARE, S.SWAP, S.VERIFY, S.COMMIT, S.WATCH, S.IDLE]
    assert cmds[0] == [m.Pull()]
    assert names(cmds[2]) == ["Park", "CreateNew", "StopParked", "StartNew"]  # stop-first
    assert names(cmds[4]) == ["WriteEnv", "TagImage", "Prune"]
    assert names(cmds[5]) == ["Watch", "RemoveParked"]  # the parked one stays for the watch
    assert cmds[6] == [m.Record(Outcome.DEPLOYED)]
    assert end is S.IDLE


def test_unhealthy_quarantines_first_then_undoes_and_verifies_previous() -> None:
    _, seen, cmds = walk([m.Unhealthy("http 500"), m.Unparked(), m.PreviousHealthy()],
                           start=S.VERIFY)
    assert seen == [S.ROLLBACK, S.VERIFY_PREVIOUS, S.IDLE]
    assert names(cmds[0]) == ["Quarantine", "SaveLogs", "RestoreEnv", "RemoveNew", "Unpark"]
    assert cmds[0][0] == m.Quarantine("http 500")
    assert cmds[2] == [m.Record("rolled_back")]


def test_interrupted_verify_undoes_without_quarantine() -> None:
    state, cmds = m.transition(S.VERIFY, m.Interrupted("SIGTERM"))
    assert state is S.ROLLBACK and "Quarantine" not in names(cmds)


@pytest.mark.parametrize("start", [S.ROLLBACK, S.VERIFY_PREVIOUS])
def test_failed_rollback_halts_with_an_alert_and_never_rolls_back_again(start: State) -> None:
    state, cmds = m.transition(start, m.RollbackFailed("previous exited"))
    assert state is S.HALTED
    assert cmds == [m.Alert("previous exited"), m.Record("halted", "previous exited")]
    assert not any(isinstance(c, (m.RemoveNew, m.Unpark, m.Park)) for c in cmds)


@pytest.mark.parametrize("start", [S.PULL, S.PREPARE])
def test_failure_before_the_swap_touches_nothing(start: State) -> None:
    state, cmds = m.transition(start, m.Aborted("pull failed"))
    assert state is S.IDLE and cmds == [m.Record("failed", "pull failed")]


def test_swap_failure_blames_the_image_only_when_asked() -> None:
    _, plain = m.transition(S.SWAP, m.SwapFailed("docker said no"))
    _, blamed = m.transition(S.SWAP, m.SwapFailed("exec format error", blame_image=True))
    assert "Quarantine" not in names(plain) and names(blamed)[0] == "Quarantine"


def test_halted_accepts_a_new_deploy() -> None:
    assert m.transition(S.HALTED, m.Begin()) == (S.PULL, [m.Pull()])


@pytest.mark.parametrize(("state", "event"), [
    (S.IDLE, m.Healthy()), (S.SWAP, m.Begin()), (S.COMMIT, m.Unhealthy("x")),
    (S.HALTED, m.Unparked()), (S.VERIFY, m.Pulled())])
def test_illegal_transition_names_the_state(state: State, event: m.Event) -> None:
    with pytest.raises(m.IllegalTransition, match=state.value):
        m.transition(state, event)


def test_every_state_has_a_comment_and_a_way_out() -> None:
    src = Path(m.__file__).read_text()
    for s in State:
        assert f'{s.name} = "{s.value}"  # ' in src
    outgoing = {S.IDLE: m.Begin(), S.PULL: m.Pulled(),
                S.PREPARE: m.Prepared(), S.SWAP: m.Started(), S.VERIFY: m.Healthy(),
                S.COMMIT: m.Committed(), S.WATCH: m.WatchEnded(), S.ROLLBACK: m.Unparked(),
                S.VERIFY_PREVIOUS: m.PreviousHealthy(), S.HALTED: m.Begin()}
    for s, ev in outgoing.items():
        assert m.transition(s, ev)[0] is not s


D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


def verdict(candidate: str, running: str | None, quarantined: set[str] | None = None, *,
            explicit: bool = False, halted_on: str | None = None,
            pin: str | None = None) -> policy.Verdict:
    rel = Release("sha-" + candidate[7] * 7, Digest(candidate))
    return policy.decide(policy.Facts(rel, running, frozenset(quarantined or ()),
                                      halted_on=halted_on, pin=pin, explicit=explicit)).verdict


V = policy.Verdict


def test_decide_deploys_new_and_skips_current() -> None:
    assert verdict(D2, D1) is V.DEPLOY
    assert verdict(D1, D1) is V.UP_TO_DATE
    assert verdict(D1, D1, explicit=True) is V.UP_TO_DATE
    assert verdict(D2, None) is V.DEPLOY


def test_a_pin_that_runs_is_pinned_not_up_to_date() -> None:
    assert verdict(D1, D1, pin="v1.2.3") is V.PINNED
    assert verdict(D2, D1, pin="v1.2.3") is V.DEPLOY


def test_quarantined_is_never_auto_deployed_and_refused_to_an_operator() -> None:
    assert verdict(D2, D1, {D2}) is V.QUARANTINED
    assert verdict(D2, D1, {D2}, explicit=True) is V.REFUSED


def test_halted_waits_for_a_newer_candidate_or_an_operator() -> None:
    assert verdict(D2, D1, halted_on=D2) is V.HALTED
    assert verdict(D3, D1, {D2}, halted_on=D2) is V.DEPLOY
    assert verdict(D1, D1, {D2}, explicit=True, halted_on=D2) is V.DEPLOY


def test_each_verdict_reports_its_outcome_and_exit_code() -> None:
    rel = Release("sha-1111111", Digest(D1))
    for v, outcome in [(V.DEPLOY, "deployed"), (V.UP_TO_DATE, "up_to_date"),
                       (V.PINNED, "pinned_current"), (V.QUARANTINED, "quarantined"),
                       (V.HALTED, "quarantined"), (V.REFUSED, "quarantined")]:
        d = policy.Decision(v, "", rel)
        assert d.outcome == outcome and d.outcome.exit_code == 0


def test_previous_good_is_the_from_side_of_the_deploy_that_brought_current() -> None:
    rows = [
        HistoryRow("1", "s", "f", Outcome.ROLLED_BACK, "VERIFY", to_digest=D3, from_digest=D2),
        HistoryRow("2", "s", "f", Outcome.DEPLOYED, "WATCH", to_digest=D2, from_digest=D1,
                   from_tag="sha-1111111"),
        HistoryRow("3", "s", "f", Outcome.DEPLOYED, "WATCH", to_digest=D1, from_digest=D3),
    ]
    good = policy.previous_good(rows, D2)
    assert good is not None and good.from_tag == "sha-1111111"
    assert policy.previous_good(rows, D3) is None


def test_quarantine_reason_is_one_bounded_line() -> None:
    r = policy.quarantine_reason("exited\nwith   code 3 " + "x" * 500)
    assert "\n" not in r and len(r) == 200 and r.endswith("...")
