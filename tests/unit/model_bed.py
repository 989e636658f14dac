"""The world the model-based test (``test_model.py``) drives: the unit fakes of the ports,
extended with what the model needs to fault and to judge the agent from outside.

- ``Killed`` is ``kill -9``: a ``BaseException`` no ``except`` clause of the agent
  catches, raised by a ``Killer`` just before or after the Nth journal or history write,
  before the Nth engine call, or around the promotion PUT; armed with ``stop`` it sends
  SIGTERM (the agent's stop request) there instead.
- ``ModelHealth`` is the health gate's fake, with builds that fail their first gate only.
- ``ModelRuntime`` records every image it pulled and created containers from, and goes
  down (``DockerUnavailable``) when told, or for a while from its Nth call on.
- ``Signer`` is the ``SignaturePort``: a build's signature is valid, invalid or missing.
- ``Pusher`` is the promoter's registry writer; it logs every move of the promote tag.
- ``World`` wires them with the real sqlite ``Store`` in a temporary directory and builds
  the ``Agent`` again on a restart or a reload. Time is the model's (``World.t``): the
  agent's clock, its wall clock and the history's timestamps; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.unit.fakes import REPO, C, FakeHealth, FakeRegistry, FakeRuntime, Sink, digest
from twilight_agent.adapters.notify.sinks import EventBus
from twilight_agent.adapters.state.store import Store
from twilight_agent.agent import Agent
from twilight_agent.app import build_agent
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.signatures import MISSING, VALID, SignatureCheck
from twilight_agent.errors import DockerUnavailable, RegistryUnavailable, TwilightError
from twilight_agent.promotion import PromoteConfig, Promoter
from twilight_agent.settings import Settings

T0 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.timezone.utc)  # a Monday, inside WINDOW
WINDOW = "Mon-Sun 09:00-17:00 UTC"
PROMOTE_AFTER = 600.0
STABLE = "stable"
# What CI can push: how the build behaves on this host, and how it is signed.
GOOD, BOOT_EXIT, HTTP_500, CRASH_LATER, FLAKY, UNSIGNED, LATE_SIGNED, BAD_SIGNATURE = (
    "good", "exits at boot", "answers 500", "crashes later", "fails its first start",
    "unsigned", "late-signed", "bad signature")
KINDS = (GOOD, GOOD, GOOD, BOOT_EXIT, HTTP_500, CRASH_LATER, FLAKY, UNSIGNED, LATE_SIGNED,
         BAD_SIGNATURE)


class Killed(BaseException):
    """``kill -9`` of the agent: nothing after it runs in that process."""


class Killer:
    """Counts the points where the agent can die; raises ``Killed`` at the armed one."""

    def __init__(self) -> None:
        self.left: int | None = None
        self.kills: list[str] = []
        self.stop: Callable[[], None] | None = None  # SIGTERM instead: a stop request

    def arm(self, n: int, stop: Callable[[], None] | None = None) -> None:
        self.left, self.stop = n, stop

    def tick(self, where: str) -> None:
        if self.left is None:
            return
        self.left -= 1
        if self.left <= 0:
            self.left = None
            self.kills.append(where)
            if self.stop is not None:
                self.stop()
                return
            raise Killed(where)


@dataclass
class Build:
    """One CI build: its release, how it behaves, its signature and when it appears."""

    n: int
    kind: str
    release: Release
    signature: str = VALID
    signs_at_poll: int | None = None  # late-signed: the poll from which it is signed


class ModelHealth(FakeHealth):
    """The health gate's fake; a ``flaky`` build fails its first gate only."""

    def __init__(self, rt: FakeRuntime) -> None:
        super().__init__(rt)
        self.flaky: set[str] = set()

    def verify(self, container_id: str, url: str | None, **kw: Any) -> Any:
        verdict = super().verify(container_id, url, **kw)
        image = self.rt.containers[container_id].image
        if image in self.flaky:
            self.flaky.discard(image)
            self.bad.discard(image)
        return verdict


class ModelClock:
    """The agent's monotonic clock: the world's time; a sleep moves it on."""

    def __init__(self, world: World) -> None:
        self.world = world

    def now(self) -> float:
        return self.world.t

    def wall(self) -> float:
        return self.world.wall().timestamp()

    def sleep(self, seconds: float) -> None:
        self.world.t += max(seconds, 0.001)


class ModelRuntime(FakeRuntime):
    """The fake engine, faultable, recording what it pulled and created containers from."""

    def __init__(self, current: Release, killer: Killer, clock: ModelClock) -> None:
        super().__init__("app", current)
        self.killer, self.clock = killer, clock
        self.down = False
        self.down_until = -1.0  # a blip: down until the clock reaches this
        self.blip: tuple[int, float] | None = None  # (calls left, seconds down)
        self.pulled: list[str] = []
        self.created: list[str] = []

    @property
    def unavailable(self) -> bool:
        return self.down or self.clock.now() < self.down_until

    def _step(self, name: str) -> None:
        self.killer.tick(f"engine {name}")
        if self.blip is not None:
            left, seconds = self.blip
            self.blip = (left - 1, seconds) if left > 1 else None
            if left <= 1:
                self.down_until = self.clock.now() + seconds
        if self.unavailable:
            raise DockerUnavailable(f"{name}: the Docker engine does not answer")
        super()._step(name)

    def pull(self, repository: str, digest: Digest, auth: Any, progress: Any = None,
             moved: Any = None) -> str:
        image = super().pull(repository, digest, auth, progress, moved)
        self.pulled.append(str(digest))
        return image

    def create_from(self, snap: Any, image: str, name: str | None = None,
                    hidden: bool = False, relabel: Any = None) -> str:
        cid = super().create_from(snap, image, name, hidden, relabel)
        self.created.append(self.containers[cid].image)
        return cid

    def serving(self) -> list[C]:
        return [c for c in self.containers.values() if c.running]


class Signer:
    """The ``SignaturePort``: what the model says each build's signature is."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.valid_ever: set[str] = set()  # digests that had a valid signature when asked

    def verify(self, release: Release) -> SignatureCheck:
        if self.world.registry.down:
            raise RegistryUnavailable("GET .sig manifest: registry refused the connection")
        build = self.world.by_digest.get(str(release.digest))
        status = build.signature if build else MISSING
        if status == VALID:
            self.valid_ever.add(str(release.digest))
            return SignatureCheck(VALID, key="ci.pub")
        return SignatureCheck(status, "no sha256-….sig" if status == MISSING
                              else "no configured key verifies")


@dataclass
class Move:
    """One move of the promote tag: from which build to which, and by whom."""

    before: str | None
    after: str
    forced: bool
    quarantined: bool  # the build was quarantined when the tag moved to it


class Pusher:
    """The promoter's registry writer, over the model's builds."""

    def __init__(self, world: World, stable: Digest) -> None:
        self.world = world
        self.stable: Digest | None = stable
        self.moves: list[Move] = []
        self.down = False
        self.forced = False  # the operator's `promote TAG` is running

    def _check(self) -> None:
        if self.down or self.world.registry.down:
            raise RegistryUnavailable("HEAD manifest stable: HTTP 503 after 4 attempts")

    def tag_digest(self, tag: str) -> Digest | None:
        self._check()
        return self.stable

    def created(self, d: Digest) -> str | None:
        build = self.world.by_digest.get(str(d))
        return build.release.created if build else None

    def point(self, tag: str, d: Digest) -> Digest:
        self._check()
        self.world.killer.tick("promotion PUT")
        store = self.world.store
        self.moves.append(Move(str(self.stable) if self.stable else None, str(d),
                               self.forced, store.is_quarantined(str(d))))
        self.stable = d
        self.world.killer.tick("promotion PUT done")
        return d


class ModelStore(Store):
    """The real store; the agent can die just before or after each journal or history
    write (each is one sqlite transaction)."""

    def __init__(self, state_dir: Path, killer: Killer) -> None:
        super().__init__(state_dir)
        self.killer = killer

    def journal(self, deploy_id: str, phase: str, step: str, payload: dict[str, Any]) -> None:
        self.killer.tick(f"before journal {phase}/{step}")
        super().journal(deploy_id, phase, step, payload)
        self.killer.tick(f"after journal {phase}/{step}")

    def finish(self, row: Any, meta: Any = None, clear_halt: bool = False) -> None:
        self.killer.tick(f"before history {row.outcome}")
        if meta is None:
            super().finish(row, clear_halt=clear_halt)
        else:
            super().finish(row, meta, clear_halt)
        self.killer.tick(f"after history {row.outcome}")


@dataclass(frozen=True)
class Config:
    """The settings one history runs under."""

    verify: bool = True
    promote: bool = True
    min_age: float = 0.0
    window: bool = False
    allow_downgrade: bool = False
    start_first: bool = False


def make_release(n: int) -> Release:
    created = (T0 + dt.timedelta(minutes=n)).isoformat().replace("+00:00", "Z")
    return Release(tag=f"sha-{n:07x}", digest=digest(n), created=created)


@dataclass
class World:
    """Everything outside the agent, and the agent built over it."""

    tmp: Path
    cfg: Config
    t: float = 0.0
    polls: int = 0
    pin: str = ""
    builds: dict[int, Build] = field(default_factory=dict)
    registry_down_polls: int = 0  # an outage: the registry does not answer these polls
    engine_down_polls: int = 0  # ... nor the engine

    def __post_init__(self) -> None:
        self._settings: dict[str, Settings] = {}  # by pin: a reload reads the same file
        first = Build(1, GOOD, make_release(1))
        self.builds[1] = first
        self.killer = Killer()
        self.clock = ModelClock(self)
        self.env = self.tmp / ".env"
        self.env.write_text(f"A=1\nIMAGE_TAG={first.release.tag}\n")
        self.registry = FakeRegistry(first.release)
        self.runtime = ModelRuntime(first.release, self.killer, self.clock)
        self.runtime.ports = not self.cfg.start_first
        self.health = ModelHealth(self.runtime)
        self.signer = Signer(self)
        self.signer.valid_ever.add(str(first.release.digest))
        self.pusher = Pusher(self, first.release.digest)
        self.sink = Sink()
        self.store = ModelStore(self.tmp / "state", self.killer)
        self.agent = self.make_agent()

    # -- the agent ----------------------------------------------------------------------
    @property
    def by_digest(self) -> dict[str, Build]:
        return {str(b.release.digest): b for b in self.builds.values()}

    def wall(self) -> dt.datetime:
        return T0 + dt.timedelta(seconds=self.t)

    def settings(self) -> Settings:
        if self.pin not in self._settings:
            self._settings[self.pin] = self._load_settings()
        return self._settings[self.pin]

    def _load_settings(self) -> Settings:
        c = self.cfg
        return Settings(image=REPO, container="app", state_dir=self.tmp / "state",
                        env_file=self.env, watch=300, pin=self.pin, min_age=c.min_age,
                        deploy_window=WINDOW if c.window else "",
                        allow_downgrade=c.allow_downgrade, swap="auto",
                        tag_pattern=r"^(sha-[0-9a-f]{7}|main|stable)$")

    def make_agent(self) -> Agent:
        s = self.settings()
        agent = build_agent(s, [self.sink], registry=self.registry, runtime=self.runtime,
                            health=self.health, store=self.store, clock=self.clock,
                            signatures=self.signer if self.cfg.verify else None)
        if self.cfg.promote:
            healthy = functools.partial(self.health.verify, timeout=s.health_timeout,
                                        interval=s.health_interval, soak=0, failures=0)
            agent.promoter = Promoter(PromoteConfig(STABLE, PROMOTE_AFTER), self.store,
                                      agent.target, EventBus([self.sink]),
                                      lambda: self.pusher, self.clock,
                                      healthy)
        return agent

    def restart(self) -> None:
        """A new process over the same state directory, engine and registry: start-up
        recovery runs (an engine still away leaves it to the next poll). It may be killed
        again while it recovers."""
        while True:
            self.store = ModelStore(self.tmp / "state", self.killer)
            self.agent = self.make_agent()
            try:
                self.agent.recover()
            except TwilightError:
                return
            except Killed:
                continue
            return

    # -- what the model reads -----------------------------------------------------------
    def running_digest(self) -> str | None:
        c = self.runtime.by_name("app")
        return c.image if c and c.running else None

    def tag_of(self, digest: str) -> str | None:
        b = self.by_digest.get(digest)
        return b.release.tag if b else None
