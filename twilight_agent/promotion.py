"""Promotion on a canary host (``TWILIGHT_PROMOTE_TO``): once the build this host deployed
has stayed for ``TWILIGHT_PROMOTE_AFTER`` after its deploy was recorded (after its watch),
point the promote tag at it. The rules are pure (``core/promotion.py``); this module runs
them against the store, the target and the registry.

``Promoter.tick()`` runs after every poll, under the deploy lock. An idle canary asks the
registry nothing here: the registry is reached only when a promotion is due (a HEAD of the
promote tag, the manifest GET, the labels when the order needs them, one PUT).
``Promoter.force(release)`` is the operator's ``twilight-agent promote TAG``.

"Still healthy at the due time" is asked the way the deploy gate asks it, of every unit:
running, not ``unhealthy`` by its HEALTHCHECK, and its health URL answering 2xx within
``TWILIGHT_HEALTH_TIMEOUT`` (``TWILIGHT_HEALTH_FAILURES`` 5xx answers in a row fail at once),
so a build that broke after its watch is dropped, not handed to the fleet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twilight_agent.adapters.notify.sinks import EventBus
from twilight_agent.adapters.state.promotion_store import PromotionStore
from twilight_agent.core import promotion as rules
from twilight_agent.core.clock import Clock, utcnow
from twilight_agent.core.events import Promoted
from twilight_agent.core.history import HistoryRow
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import HealthVerdict, TargetPort
from twilight_agent.core.promotion import DROPPED, PROMOTED, PROMOTING, WAITING, Order, Promotion
from twilight_agent.errors import TwilightError
from twilight_agent.logs import get_logger
from twilight_agent.run.deploy_run import new_deploy_id

log = get_logger("twilight.promotion")


class HealthCheck(Protocol):
    """The deploy gate over one running unit: ``(container, health URL) -> verdict``."""

    def __call__(self, container_id: str, url: str | None) -> HealthVerdict: ...


class PusherPort(Protocol):
    """What promotion needs from the registry (``adapters/registry_push.TagPusher``)."""

    def tag_digest(self, tag: str) -> Digest | None: ...

    def created(self, digest: Digest) -> str | None: ...

    def point(self, tag: str, digest: Digest) -> Digest: ...


@dataclass(frozen=True)
class PromoteConfig:
    to_tag: str
    after: float  # seconds


def _due(finished: str, after: float) -> float:
    """``after`` seconds from the end of the second the deploy finished in (the history
    keeps whole seconds): a wait that may be up to 1 s long, never short. No wait
    (``after`` 0) is due at once."""
    t = dt.datetime.fromisoformat(finished.replace("Z", "+00:00"))
    if after <= 0:
        return t.timestamp()
    return t.timestamp() + (1.0 if t.microsecond == 0 else 0.0) + after


class Promoter:
    """One canary's promotions. Cheap to construct: the pusher is built on first use."""

    def __init__(self, config: PromoteConfig, store: Any, target: TargetPort,
                 events: EventBus, pusher: Callable[[], PusherPort],
                 clock: Clock, healthy: HealthCheck | None = None) -> None:
        self.config = config
        self._healthy = healthy
        self.store = store
        self.promotions = PromotionStore(store)
        self.target = target
        self.events = events
        self._make_pusher = pusher
        self._pusher: PusherPort | None = None
        self.clock = clock
        self._failing: str | None = None

    def close(self) -> None:
        close = getattr(self._pusher, "close", None)
        if callable(close):
            close()

    @property
    def pusher(self) -> PusherPort:
        if self._pusher is None:
            self._pusher = self._make_pusher()
        return self._pusher

    # -- the daemon's part ------------------------------------------------------------
    def tick(self, verified: Callable[[str], bool] | None = None) -> Promotion | None:
        """After a poll: finish an interrupted promotion, schedule the current build's,
        promote it when due (with verification on, ``verified`` says which digests this
        host verified: no other is promoted). Registry trouble is logged (once per error)
        and retried at the next poll; it never fails the poll."""
        try:
            p = self.promotions.in_flight() or self._scheduled()
            if p is not None and (p.step == PROMOTING or rules.is_due(p, self.clock.wall())):
                p = self._promote(p, trigger="poll",
                                  verified=verified is None or verified(p.digest))
        except TwilightError as exc:
            if str(exc) != self._failing:
                log.warning("promotion_failed", error=str(exc), retry="next poll")
            self._failing = str(exc)
            return None
        self._failing = None
        return p

    def _scheduled(self) -> Promotion | None:
        """The promotion of the build this host runs, recorded on first sight with its due
        time (the end of the second of the deploy's history ``finished`` + PROMOTE_AFTER: it
        may come up to 1 s late, never early); None when there is none
        (a deploy in flight, a build this host did not deploy)."""
        if self.store.open_journal() is not None:
            return None
        current = self.store.meta().current
        if current is None:
            return None
        known = self.promotions.for_digest(str(current.digest))
        if known is not None:
            return known
        row = next((r for r in self.store.history(50) if r.deployed
                    and r.to_digest == str(current.digest)), None)
        if row is None:
            return None
        self.promotions.drop_waiting(f"superseded by {current.label}", keep=current.digest)
        p = self.promotions.put(Promotion(
            id=f"promote-{new_deploy_id()}", digest=str(current.digest), tag=current.tag,
            to_tag=self.config.to_tag, due=_due(row.finished, self.config.after),
            step=WAITING))
        log.info("promotion_scheduled", digest=p.digest, tag=p.tag, to_tag=p.to_tag,
                 due=dt.datetime.fromtimestamp(p.due, dt.timezone.utc).isoformat())
        return p

    # -- the operator's part ----------------------------------------------------------
    def force(self, release: Release) -> Promotion:
        """``twilight-agent promote TAG``: point the tag at ``release`` now, whatever its
        age, order or quarantine; a waiting or unfinished promotion of another build is
        dropped, so it cannot move the tag away from the operator's choice."""
        self.promotions.drop_waiting(f"an operator promoted {release.label}",
                                     keep=release.digest, in_flight=True)
        p = self.promotions.put(Promotion(
            id=f"promote-{new_deploy_id()}", digest=str(release.digest), tag=release.tag,
            to_tag=self.config.to_tag, due=self.clock.wall(), step=WAITING, forced=True))
        return self._promote(p, trigger="cli")

    def pending(self) -> dict[str, Any] | None:
        """For ``status``: the latest promotion, its step and when it is due."""
        p = self.promotions.latest()
        if p is None:
            return None
        return {"tag": p.to_tag, "build": {"tag": p.tag, "digest": p.digest}, "step": p.step,
                "due": dt.datetime.fromtimestamp(p.due, dt.timezone.utc).isoformat(
                    timespec="seconds").replace("+00:00", "Z"),
                "left_s": round(max(p.due - self.clock.wall(), 0.0), 1) if p.step == WAITING
                else None, "reason": p.reason or None}

    # -- the promotion ----------------------------------------------------------------
    def _promote(self, p: Promotion, trigger: str, verified: bool = True) -> Promotion:
        """``promoting`` is written before the registry is asked anything; the PUT of the
        same bytes is idempotent, so a promotion interrupted anywhere is done again."""
        self.promotions.mark(p, PROMOTING)
        started = utcnow(self.clock)
        digest = Digest(p.digest)
        before = self.pusher.tag_digest(p.to_tag)
        why = None
        if before != digest and not p.forced:
            order = self._order(digest, before)
            quarantined = {q.digest for q in self.store.quarantined()}
            why = rules.refusal(p, running=p.digest, order=order, quarantined=quarantined,
                                verified=verified)
            if why is None:  # the health gate last: it may take up to its timeout
                running, sick = self._running()
                why = rules.refusal(p, running=running, order=order, quarantined=quarantined)
                why = f"{why}: {sick}" if why and sick else why
        if why is not None:
            self.promotions.mark(p, DROPPED, why)
            self._emit(p, DROPPED, str(before) if before else None, trigger, why)
            return replace(p, step=DROPPED, reason=why)
        if before != digest:
            self.pusher.point(p.to_tag, digest)
        reason = f"{p.to_tag} -> {p.tag or digest.short}" + (" (forced)" if p.forced else "")
        self.promotions.finish(p, HistoryRow(
            id=p.id, started=started, finished=utcnow(self.clock), from_tag=p.to_tag,
            from_digest=str(before) if before else None, to_tag=p.tag, to_digest=p.digest,
            outcome=Outcome.PROMOTED, phase=rules.PHASE, reason=reason, trigger=trigger))
        self._emit(p, PROMOTED, str(before) if before else None, trigger, reason)
        return replace(p, step=PROMOTED, reason=reason)

    def _order(self, candidate: Digest, before: Digest | None) -> Order:
        """This host's history order; unless it says older, the ``created`` labels too: a
        build first deployed here after the tag's build (a pin or ``deploy TAG`` of an
        older build) but built before it is older, and never promoted over it."""
        if before is None:
            return Order.NEWER
        order = rules.order_by_history(self.store.history(500), candidate, before)
        if order is Order.OLDER:
            return order
        labels = rules.order_by_created(self.pusher.created(candidate),
                                        self.pusher.created(before))
        return labels if labels is Order.OLDER or order is Order.UNKNOWN else order

    def _running(self) -> tuple[str | None, str]:
        """The digest the target runs when every unit is healthy (see the module's
        docstring); else None and why: the build did not stay healthy here."""
        snap = self.target.snapshot()
        for unit in snap.units():
            state = self.target.state(unit.container_id)
            if not state.running or state.health == "unhealthy":
                return None, f"{unit.name} is {state.health or state.status}"
            if self._healthy is not None:
                verdict = self._healthy(unit.container_id,
                                        self.target.health_url(unit, unit.container_id))
                if not verdict.ok:
                    return None, f"{unit.name}: {verdict.reason}"
        return snap.digest, ""

    def _emit(self, p: Promotion, step: str, before: str | None, trigger: str,
              reason: str) -> None:
        build = Release(p.tag or "", Digest(p.digest))
        self.events.emit(Promoted(p.id, p.to_tag, build, step, before, trigger, reason))
