"""The state machine of the model-based test (``test_model.py``, which says what it checks
and how): rules for CI, the operator, time and faults over ``model_bed.World``, and the
invariants checked after every step."""

from __future__ import annotations

import collections
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.unit.model_bed import (
    BAD_SIGNATURE,
    BOOT_EXIT,
    CRASH_LATER,
    FLAKY,
    HTTP_500,
    KINDS,
    LATE_SIGNED,
    UNSIGNED,
    Build,
    Config,
    Killed,
    World,
    make_release,
)
from twilight_agent.adapters.state.envfile import read_image_tag
from twilight_agent.core.clock import utcnow
from twilight_agent.core.outcomes import CycleReport
from twilight_agent.core.signatures import INVALID, MISSING, VALID
from twilight_agent.errors import TwilightError

SHM = "/dev/shm" if Path("/dev/shm").is_dir() else None  # sqlite fsyncs cheaply there
CONFIGS = st.builds(Config, verify=st.booleans(), promote=st.booleans(),
                    min_age=st.sampled_from([0.0, 600.0]), window=st.booleans(),
                    allow_downgrade=st.booleans(), start_first=st.booleans())
ONLY: Config | None = None  # a planted bug's hunt may fix the settings
POLLS = st.integers(0, 2)
PICK = st.integers(0, 10**6)  # a build, as an index into those pushed so far
POLL_INTERVAL = 30  # model seconds between two polls of the daemon
WAIT = st.sampled_from([0, 0, 601, 901])
SECONDS = st.sampled_from([5, 60, 301, 601, 901, 3600, 4 * 3600, 9 * 3600])


@dataclasses.dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    outcomes: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter)


STATS = Stats()


def ready(self: AgentModel) -> bool:
    return self.w is not None


class AgentModel(RuleBasedStateMachine):
    """One host, one agent, one random history."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="twilight-model-", dir=SHM))
        self.w: World | None = None
        self.named: set[str] = set()  # digests an operator named (deploy TAG, rollback)
        self.exits: dict[str, int] = {}  # deploy id -> the exit code its command returned
        self.settled = False  # the last cycle ended without a kill or an engine error
        stamp = mock.Mock(side_effect=self._stamp)
        self._patches = [mock.patch(f"twilight_agent.{m}.utcnow", stamp)
                         for m in ("run.recording", "promotion", "adapters.state.promotion_store")]
        for p in self._patches:
            p.start()
        STATS.examples += 1

    def _stamp(self, *_: object) -> str:
        """History and promotion timestamps on the model's time (history is read newest
        first, and a promotion is due PROMOTE_AFTER after its deploy's row)."""
        if self.w is None:
            return utcnow()
        return self.w.wall().isoformat(timespec="seconds").replace("+00:00", "Z")

    def teardown(self) -> None:
        if self.w is not None:
            STATS.outcomes["promote tag moved"] += len(self.w.pusher.moves)
        for p in self._patches:
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------
    @property
    def world(self) -> World:
        assert self.w is not None
        return self.w

    def pick(self, i: int) -> Build:
        builds = list(self.world.builds.values())
        return builds[i % len(builds)]

    def act(self, call: Callable[[Any], Any]) -> Any:
        """One command or poll of the agent; a kill restarts it over the same state."""
        w = self.world
        self.settled = False
        try:
            result = call(w.agent)
        except Killed:
            STATS.outcomes["killed"] += 1
            w.restart()
            return None
        except TwilightError as exc:
            STATS.outcomes[f"exit {exc.exit_code}"] += 1
            self.settled = exc.exit_code == 2  # refused before anything was touched
            return None
        if isinstance(result, CycleReport):
            STATS.outcomes[str(result.outcome)] += 1
            if result.deploy_id:
                self.exits[result.deploy_id] = result.exit_code
            self.settled = result.exit_code != 5
        return result

    def poll(self, times: int = 1) -> None:
        w = self.world
        for _ in range(times):
            w.polls += 1
            w.t += POLL_INTERVAL
            for b in w.builds.values():
                if b.signs_at_poll is not None and w.polls >= b.signs_at_poll:
                    b.signature, b.signs_at_poll = VALID, None
            w.registry.down = w.registry_down_polls > 0
            w.runtime.down = w.engine_down_polls > 0
            self.act(lambda agent: agent.poll_once())
            w.registry_down_polls = max(w.registry_down_polls - 1, 0)
            w.engine_down_polls = max(w.engine_down_polls - 1, 0)
            w.registry.down = w.runtime.down = False

    def wait(self, seconds: int) -> None:
        if seconds:
            self.world.t += seconds
            self.poll()

    # -- set-up -------------------------------------------------------------------------
    @initialize(cfg=CONFIGS)
    def start(self, cfg: Config) -> None:
        self.w = World(self.dir, ONLY or cfg)

    # -- CI -----------------------------------------------------------------------------
    @precondition(ready)
    @rule(kind=st.sampled_from(KINDS), later=st.integers(1, 4), polls=POLLS, wait=WAIT)
    def push(self, kind: str, later: int, polls: int, wait: int) -> None:
        """CI pushes a build and moves the track to it; polls, then ``wait`` seconds and a
        poll (past TWILIGHT_MIN_AGE, the grace, PROMOTE_AFTER)."""
        w = self.world
        n = max(w.builds) + 1
        b = Build(n, kind, make_release(n))
        if kind in (BOOT_EXIT, HTTP_500, FLAKY):
            w.health.bad.add(str(b.release.digest))
            if kind == FLAKY:
                w.health.flaky.add(str(b.release.digest))
        elif kind == CRASH_LATER:
            w.health.dies_later.add(str(b.release.digest))
        elif kind in (UNSIGNED, LATE_SIGNED):
            b.signature = MISSING
            b.signs_at_poll = w.polls + later if kind == LATE_SIGNED else None
        elif kind == BAD_SIGNATURE:
            b.signature = INVALID
        w.builds[n] = b
        w.registry.tags[b.release.tag] = b.release
        w.registry.track = b.release
        self.poll(polls)
        self.wait(wait)

    @precondition(lambda self: ready(self) and len(self.world.builds) > 1)
    @rule(i=PICK, polls=POLLS, wait=WAIT)
    def move_track_back(self, i: int, polls: int, wait: int) -> None:
        w = self.world
        track = w.by_digest[str(w.registry.track.digest)].n
        older = [b for b in w.builds.values() if b.n < track]
        if older:
            w.registry.track = older[i % len(older)].release
        self.poll(polls)
        self.wait(wait)

    # -- the operator -------------------------------------------------------------------
    @precondition(ready)
    @rule(i=PICK, polls=POLLS, hold=st.booleans())
    def pin(self, i: int, polls: int, hold: bool) -> None:
        """Pin a build (and reload); unless ``hold``, unpin again after the polls."""
        self.world.pin = self.pick(i).release.tag
        self.reload()
        self.poll(polls)
        if not hold:
            self.unpin(0)

    @precondition(ready)
    @rule(polls=POLLS)
    def unpin(self, polls: int) -> None:
        self.world.pin = ""
        self.reload()
        self.poll(polls)

    @precondition(ready)
    @rule(i=PICK, now=st.booleans())
    def deploy_tag(self, i: int, now: bool) -> None:
        rel = self.pick(i).release
        if self.act(lambda agent: agent.deploy(rel.tag, now=now)) is not None:
            self.named.add(str(rel.digest))  # not refused: the operator's choice runs

    @precondition(ready)
    @rule()
    def deploy_track(self) -> None:
        self.act(lambda agent: agent.deploy())

    @precondition(lambda self: ready(self) and self.world.store.meta().previous is not None)
    @rule()
    def rollback(self) -> None:
        report = self.act(lambda agent: agent.rollback())
        if isinstance(report, CycleReport) and report.to is not None:
            self.named.add(str(report.to.digest))

    @precondition(lambda self: ready(self) and self.world.cfg.promote)
    @rule(i=PICK)
    def promote(self, i: int) -> None:
        w = self.world
        w.pusher.forced = True
        try:
            self.act(lambda agent: agent.promote(self.pick(i).release.tag))
        finally:
            w.pusher.forced = False

    @precondition(lambda self: ready(self) and bool(self.world.store.quarantined()))
    @rule(i=PICK)
    def unquarantine(self, i: int) -> None:
        held = self.world.store.quarantined()
        self.world.store.unquarantine(held[i % len(held)].digest)

    @precondition(ready)
    @rule()
    def reload(self) -> None:
        """SIGHUP: the daemon builds its agent again from the settings."""
        w = self.world
        w.agent = w.make_agent()

    # -- time ---------------------------------------------------------------------------
    @precondition(ready)
    @rule(seconds=SECONDS, polls=POLLS)
    def advance(self, seconds: int, polls: int) -> None:
        self.world.t += seconds
        self.poll(polls)

    @precondition(ready)
    @rule()
    def poll_once(self) -> None:
        self.poll()

    # -- faults -------------------------------------------------------------------------
    @precondition(ready)
    @rule(n=st.integers(1, 60), polls=POLLS)
    def arm_kill(self, n: int, polls: int) -> None:
        """``kill -9`` at the Nth journal, history, engine or promotion step from now."""
        self.world.killer.arm(n)
        self.poll(polls)

    @precondition(ready)
    @rule(n=st.integers(1, 40))
    def sigterm(self, n: int) -> None:
        """SIGTERM at the Nth step of a poll: the run finishes or undoes its phase (a watch
        is left open, to be resumed), then the daemon exits and starts again."""
        w = self.world
        w.killer.arm(n, stop=lambda: w.agent.request_stop())
        self.poll()
        fired, w.killer.left, w.killer.stop = w.killer.left is None, None, None
        entry = w.store.open_journal()
        if fired and entry is not None and not w.runtime.unavailable:
            assert (entry.phase, entry.step) == ("WATCH", "Watch"), \
                f"agree: a stop left {entry.phase}/{entry.step} open"
        w.restart()

    @precondition(ready)
    @rule()
    def restart(self) -> None:
        self.world.restart()

    @precondition(ready)
    @rule(polls=st.integers(1, 3))
    def registry_down(self, polls: int) -> None:
        """The registry does not answer for the next ``polls`` polls."""
        self.world.registry_down_polls = polls

    @precondition(ready)
    @rule(polls=st.integers(1, 2))
    def engine_down(self, polls: int) -> None:
        """The engine does not answer for the next ``polls`` polls."""
        self.world.engine_down_polls = polls

    @precondition(ready)
    @rule(n=st.integers(1, 12), seconds=st.sampled_from([5, 30, 90]), polls=POLLS)
    def engine_blip(self, n: int, seconds: int, polls: int) -> None:
        """The engine goes away at its Nth call from now, for ``seconds``."""
        self.world.runtime.blip = (n, float(seconds))
        self.poll(polls)

    @precondition(ready)
    @rule()
    def running_build_breaks(self) -> None:
        """What runs stops passing its health check (a dependency of it went away)."""
        d = self.world.running_digest()
        if d is not None:
            self.world.health.bad.add(d)

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def check(self) -> None:
        STATS.steps += 1
        if self.w is None:
            return
        self.check_verified()
        self.check_promotions()
        if self.w.store.open_journal() is not None:
            assert not self.settled, "agree: a finished cycle left its journal open"
            return  # mid-deploy: recovery finishes it before anything else
        self.check_one_serves()
        self.check_quarantine()
        self.check_env()
        self.check_agree()
        self.check_parked()

    def check_one_serves(self) -> None:
        w = self.world
        halted = w.store.meta().halted
        if halted is not None:
            alerts = [e for e in w.sink.typed if e.name == "halted"
                      and e.ref.deploy_id == halted.deploy_id]
            assert alerts, f"one serves: HALTED by {halted.deploy_id} with no alert"
            assert self.exits.get(halted.deploy_id, 4) == 4, "one serves: HALTED, not exit 4"
        names = [c.name for c in w.runtime.serving()]
        assert names == ["app"], f"one serves: running containers {names}"

    def check_quarantine(self) -> None:
        w = self.world
        d = w.running_digest()
        if d is not None and w.store.is_quarantined(d):
            assert d in self.named, f"quarantine: {w.tag_of(d)} runs, quarantined"

    def check_verified(self) -> None:
        w = self.world
        if not w.cfg.verify:
            return
        unverified = (set(w.runtime.created) | set(w.runtime.pulled)) - w.signer.valid_ever
        names = sorted(str(w.tag_of(d)) for d in unverified)
        assert not unverified, f"verified: {names} never verified"

    def check_promotions(self) -> None:
        w = self.world
        for move in w.pusher.moves:
            if move.forced:
                continue
            assert not move.quarantined, f"promotion: to quarantined {w.tag_of(move.after)}"
            if move.before is not None:
                assert w.by_digest[move.after].n >= w.by_digest[move.before].n, \
                    f"promotion: {w.tag_of(move.before)} -> older {w.tag_of(move.after)}"

    def check_env(self) -> None:
        w = self.world
        d = w.running_digest()
        if d is not None:
            assert read_image_tag(w.env) == w.tag_of(d), \
                f".env: {read_image_tag(w.env)} while {w.tag_of(d)} runs"

    def check_agree(self) -> None:
        w = self.world
        d, meta = w.running_digest(), w.store.meta()
        if meta.current is not None and meta.halted is None:
            assert str(meta.current.digest) == d, \
                f"agree: current {meta.current.tag} while {w.tag_of(d or '')} runs"
        runs = [r for r in w.store.history(500)
                if r.outcome in ("deployed", "rolled_back", "halted")]
        if runs and runs[0].outcome != "halted":
            key = "to_digest" if runs[0].outcome == "deployed" else "from_digest"
            assert getattr(runs[0], key) == d, f"agree: last run {runs[0].outcome} " \
                f"{runs[0]['to_tag']} while {w.tag_of(d or '')} runs"

    def check_parked(self) -> None:
        names = sorted(c.name for c in self.world.runtime.containers.values())
        assert names == ["app"], f"parked: containers {names} after the watch"
