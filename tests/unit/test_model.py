"""A model-based test of the whole agent: Hypothesis drives it through random histories of
CI pushes, operator commands, time and faults over the port fakes (``model_bed.py``, with
the real sqlite store; the state machine is ``model_machine.AgentModel``) and checks,
after every step, what a user would check from outside.

Rules: CI pushes a good build, one that exits at boot, one that answers 500, one that
crashes during the watch, an unsigned one, a late-signed one (signed a few polls later),
one with a bad signature, or moves the track back to an older build; the operator pins,
unpins, deploys a tag or the track, rolls back, promotes, unquarantines, reloads; time
passes (soak, watch, TWILIGHT_MIN_AGE, TWILIGHT_VERIFY_GRACE, the deploy window's edges);
faults: ``kill -9`` at the Nth journal write, history write, engine call or promotion PUT
and a restart over the same state (start-up recovery), SIGTERM at the Nth step of a poll
(the run finishes or undoes its phase; only a suspended watch may stay open), the
registry or the engine down, the engine gone for a while from its Nth call on, the
running build turning unhealthy.

Invariants (``check_*``), with the bug planted to show each can fail
(``test_a_planted_bug_is_caught``, one case per invariant):

- one version serves: exactly one container runs, under the target's name; a halt was
  told (a ``halted`` alert, and exit 4 when a command ran it). Planted: ``Unpark`` does
  nothing, so a rollback leaves no container running.
- a quarantined digest runs only when an operator named it. Planted: ``policy.decide``
  is not told the quarantine, so a build refused for its signature runs once it is signed.
- with verification on, no digest is pulled or created that the signature port did not
  call valid. Planted: ``Trust.check`` answers "verification off".
- the promote tag never moves (but by an operator) to a quarantined build or one older
  than the one it pointed at. Planted: the promoter's order is always "newer"
  (``test_a_planted_promotion_bug_is_caught``: a replay of the steps that reach it, as a
  random search needs ~40 s to).
- ``.env`` names what runs. Planted: ``WriteEnv`` does nothing.
- history, journal and the engine agree: the recorded current build runs, the last run in
  history brought it in (or rolled back to it), and a cycle that ended without an engine
  error left no journal open. Planted: a deploy's record keeps the old current build.
- nothing is left parked after the watch. Planted: ``RemoveParked`` does nothing.

The budget is fixed (``BUDGET``, derandomized): the figures are printed in pytest's
terminal summary, one line: ``model: N examples, M steps, S s (outcomes seen)``.

Found by it and kept as a regression (``test_a_pinned_older_build_is_not_promoted``): a
canary pinned back to a build older than the one ``stable`` pointed at promoted it, as
the build first ran there last (``promotion.Promoter._order``). And
(``test_a_commit_recovered_after_an_engine_outage_still_puts_the_env_back``): a commit
whose engine went away at TagImage was run again by recovery, whose WriteEnv took the
lines it had itself written for the ones before it, so the watch's rollback left ``.env``
naming the bad build (``steps_finish.write_env``).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.unit import model_machine
from tests.unit.model_bed import CRASH_LATER, GOOD, Config
from tests.unit.model_machine import STATS, AgentModel
from twilight_agent.core import machine as m
from twilight_agent.core import policy
from twilight_agent.core.promotion import Order
from twilight_agent.core.signatures import VALID, SignatureCheck
from twilight_agent.promotion import Promoter
from twilight_agent.run import recording, runner
from twilight_agent.trust import Trust

FIGURES: list[str] = []  # printed by tests/unit/conftest.py's terminal summary
BUDGET = settings(max_examples=200, stateful_step_count=50, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), print_blob=True)


def test_the_agent_keeps_its_invariants_over_random_histories() -> None:
    before = dataclasses.replace(STATS, outcomes=collections.Counter(STATS.outcomes))
    t0 = time.perf_counter()
    try:
        run_state_machine_as_test(AgentModel, settings=BUDGET)
    finally:
        spent = time.perf_counter() - t0
        seen = STATS.outcomes - before.outcomes
        FIGURES.append(
            f"model: {STATS.examples - before.examples} examples, "
            f"{STATS.steps - before.steps} steps, {spent:.1f} s "
            f"({', '.join(f'{k} {v}' for k, v in seen.most_common())})")


# ---------------------------------------------------------------------- planted bugs
def _no_unpark(s: Any, cmd: m.Unpark) -> m.Event | None:
    return m.Unparked() if cmd.unit == 0 else None


def _blind_decide(facts: policy.Facts) -> policy.Decision:
    return DECIDE(dataclasses.replace(facts, quarantined=frozenset()))


def _current_kept(run: Any, outcome: Any, reason: str, last: Any) -> tuple[Any, bool]:
    meta, clear = META_AFTER(run, outcome, reason, last)
    return dataclasses.replace(meta, current=None), clear


DECIDE, META_AFTER = policy.decide, recording._meta_after
PLAIN = Config(verify=False, promote=False)
PLANTED: dict[str, tuple[str, Config, Callable[[pytest.MonkeyPatch], None]]] = {
    "one serves: Unpark does nothing": ("one serves", PLAIN, lambda mp: mp.setitem(
        runner.HANDLERS, m.Unpark, _no_unpark)),
    "one serves: a halt sends no alert": ("one serves: HALTED", PLAIN, lambda mp: mp.setitem(
        runner.HANDLERS, m.Alert, lambda s, cmd: None)),
    "quarantine: the decision does not see it": (
        "quarantine", Config(verify=True, promote=False), lambda mp: mp.setattr(
            policy, "decide", _blind_decide)),
    "verified: every signature taken as valid": (
        "verified", Config(verify=True, promote=False), lambda mp: mp.setattr(
            Trust, "check", lambda self, candidate: (SignatureCheck(VALID, key="?"), 0.0))),
    ".env: WriteEnv does nothing": (".env", PLAIN, lambda mp: mp.setitem(
        runner.HANDLERS, m.WriteEnv, lambda s, cmd: None)),
    "agree: a deploy's record keeps the old current": ("agree", PLAIN, lambda mp: mp.setattr(
        recording, "_meta_after", _current_kept)),
    "parked: RemoveParked does nothing": ("parked", PLAIN, lambda mp: mp.setitem(
        runner.HANDLERS, m.RemoveParked, lambda s, cmd: m.WatchEnded())),
}
HUNT = settings(BUDGET, max_examples=300, phases=(Phase.explicit, Phase.generate),
                report_multiple_bugs=False, print_blob=False)


@pytest.mark.parametrize("bug", PLANTED)
def test_a_planted_bug_is_caught(bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each invariant fails on the bug planted for it: the model is not vacuous."""
    invariant_name, config, plant = PLANTED[bug]
    plant(monkeypatch)
    monkeypatch.setattr(model_machine, "ONLY", config)
    with pytest.raises(AssertionError, match=f"^{re.escape(invariant_name)}"):
        run_state_machine_as_test(AgentModel, settings=HUNT)


def _newer(self: Promoter, candidate: Any, before: Any) -> Order:
    return Order.NEWER


def test_a_planted_promotion_bug_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The promotion invariant, on the steps that reach it (a random search takes ~40 s):
    the canary is pinned back to a build older than stable's; every build counts as newer."""
    monkeypatch.setattr(Promoter, "_order", _newer)
    with pytest.raises(AssertionError, match=r"^promotion: sha-0000003 -> older sha-0000002"):
        replay_pinned_back()


def test_a_pinned_older_build_is_not_promoted() -> None:
    """Found by this model: pinned back to a build it never ran, the canary promoted it
    over the newer build stable pointed at (history order alone called it newer)."""
    replay_pinned_back()


def replay_pinned_back() -> None:
    replay(lambda model: [
        lambda: model.start(Config(verify=False, promote=True)),
        lambda: model.push(GOOD, 1, 0, 0), lambda: model.push(GOOD, 1, 2, 0),
        lambda: model.promote(2),  # the operator promotes sha-0000003, which runs
        lambda: model.pin(1, 1, True),  # the canary is pinned to sha-0000002
        lambda: model.push(GOOD, 1, 0, 601)])  # its promotion is due


def test_a_commit_recovered_after_an_engine_outage_still_puts_the_env_back() -> None:
    """Found by this model: the engine went away at the commit's TagImage for longer than
    the run waits; recovery ran the commit again, and its WriteEnv recorded the new lines
    as "before". The build then crashed in the watch, was rolled back, and ``.env`` went
    on naming it while the previous build ran."""
    replay(lambda model: [
        lambda: model.start(Config(verify=False, promote=False, min_age=600.0)),
        lambda: model.push(GOOD, 1, 1, 601),
        lambda: model.engine_blip(2, 5, 0),
        lambda: model.push(CRASH_LATER, 1, 1, 601),  # its commit meets the outage
        lambda: model.engine_blip(8, 90, 0),
        lambda: model.advance(5, 2)])


def replay(steps: Callable[[AgentModel], list[Callable[[], None]]]) -> None:
    """A kept sequence: each step, then every invariant."""
    model = AgentModel()
    try:
        for step in steps(model):
            step()
            model.check()
    finally:
        model.teardown()
