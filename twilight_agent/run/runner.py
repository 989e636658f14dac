"""Runs one deploy: feeds events to the pure machine and performs its commands through the
ports in its ``DeployContext``.

Every command with a side effect is journaled first (phase, step, the run's payload with
the old target's snapshot), so a restart can finish or undo it (``recovery.py``). One
``PhaseChanged`` event per transition goes to the event bus. The runner never calls back
into whoever started it: it reports by the ``DeployRun`` it leaves behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twilight_agent.core import machine as m
from twilight_agent.core.events import PhaseChanged
from twilight_agent.run import steps_finish, steps_forward, steps_watch
from twilight_agent.run.deploy_run import DeployContext, DeployRun, Step

State = m.State
UNJOURNALED = (m.Record, m.Alert)
HANDLERS: dict[type, Callable[[Step, Any], m.Event | None]] = {
    **steps_forward.HANDLERS, **steps_finish.HANDLERS, **steps_watch.HANDLERS}
# The history row's phase is the furthest the deploy went forward (where it failed, for a
# rollback), or HALTED: the undo states do not overwrite it.
UNDO_STATES = (State.IDLE, State.ROLLBACK, State.VERIFY_PREVIOUS)


class Runner:
    """Interprets the machine's commands for one ``DeployRun``."""

    def __init__(self, ctx: DeployContext, run: DeployRun) -> None:
        self.ctx = ctx
        self.run = run
        self._step = Step(ctx, run)
        self._entered = ctx.clock.now()

    def start(self, state: State) -> State:
        """A run the decision asked for, from IDLE (or HALTED, for a newer build)."""
        return self.feed(state, m.Begin())

    def feed(self, state: State, event: m.Event) -> State:
        """Apply ``event`` in ``state`` and run until the machine rests."""
        new, commands = m.transition(state, event)
        self._entered_state(state, new, event)
        return self.resume(new, commands)

    def resume(self, state: State, commands: list[m.Command] | tuple[m.Command, ...]) -> State:
        """Run ``commands`` in ``state`` and follow the events they produce."""
        while True:
            event = self._execute(state, commands)
            if event is None:
                return state
            new, commands = m.transition(state, event)
            self._entered_state(state, new, event)
            state = new

    def _execute(self, state: State, commands: list[m.Command] | tuple[m.Command, ...]
                 ) -> m.Event | None:
        for cmd in commands:
            step = type(cmd).__name__
            self.ctx.progress(f"{state.value} {step}")  # the machine moved on
            if not isinstance(cmd, UNJOURNALED):
                self.ctx.store.journal(self.run.deploy_id, state.value, step,
                                       self.run.payload(step, getattr(cmd, "unit", 0)))
            event = HANDLERS[type(cmd)](self._step, cmd)
            if event is not None:
                return event
        return None

    def _entered_state(self, old: State, new: State, event: m.Event) -> None:
        now = self.ctx.clock.now()
        spent = round(now - self._entered, 3)
        self._entered = now
        run = self.run
        run.timings[old.value] = round(run.timings.get(old.value, 0.0) + spent, 3)
        if new not in UNDO_STATES:
            run.phase = new.value
        reason = getattr(event, "reason", "")
        if reason and not run.reason and new is not State.IDLE:
            run.reason = reason
        self.ctx.events.emit(PhaseChanged(run.ref(), new.value, old.value,
                                          type(event).__name__, spent, run.outcome))
