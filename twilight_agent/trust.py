"""What the agent must trust before a build runs, beside the health gate: its signature,
and that the track did not move back.

- **A missing signature waits.** CI pushes first and signs after; a candidate with no
  signature yet is looked at again on later polls and refused only when a signature
  exists and does not verify, or when ``TWILIGHT_VERIFY_GRACE`` (from when the agent first
  saw the digest, the store's ``seen`` table) runs out.
- **No silent downgrade.** The track pointing at a build older than the one running (by
  the ``created`` labels, else this host's deploy order; ``core/promotion``'s order rules)
  is held unless ``TWILIGHT_ALLOW_DOWNGRADE``.
- **Every way in is verified.** ``require_verified`` is what ``rollback`` and ``promote``
  ask: a digest this host verified before (the store's ``verified`` table), or verified now.

A held build is told once: one ``Held`` event (journal and webhook) per build and kind,
and the store's meta ``hold`` for ``status``; a poll that decides anything else clears it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twilight_agent.core import promotion as order_rules
from twilight_agent.core.clock import Clock, utcnow
from twilight_agent.core.events import HELD_DOWNGRADE, HELD_SIGNATURE, Held
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.policy import Decision, Verdict
from twilight_agent.core.ports import RegistryPort
from twilight_agent.core.signatures import MISSING, SignatureCheck, SignaturePort
from twilight_agent.core.windows import age_left
from twilight_agent.errors import InvalidInput, ManifestNotFound, RegistryProtocolError
from twilight_agent.run.deploy_run import EventBus

_UNKNOWN = "unknown"  # the hold told before this process started: not read yet
_HELD = {Verdict.DOWNGRADE: HELD_DOWNGRADE, Verdict.UNSIGNED: HELD_SIGNATURE}


class Trust:
    """Signature checks with their grace, the downgrade rule, the verified digests."""

    def __init__(self, registry: RegistryPort, store: Any, events: EventBus,
                 signatures: SignaturePort | None, *, grace: float, allow_downgrade: bool,
                 clock: Clock) -> None:
        self.registry = registry
        self.store = store
        self.events = events
        self.signatures = signatures  # None: verification is off
        self.grace = grace
        self.allow_downgrade = allow_downgrade
        self.clock = clock
        self._older: tuple[str, str, bool] | None = None  # (candidate, running, older)
        self._told: tuple[str, str] | str | None = _UNKNOWN  # the hold told: (digest, kind)

    # -- downgrades -------------------------------------------------------------------
    def older(self, candidate: Release, running: str | None) -> bool:
        """The track's ``candidate`` is older than the ``running`` digest (remembered for
        the pair, so a held poll asks nothing more)."""
        if self.allow_downgrade or running is None or str(candidate.digest) == running:
            return False
        key = (str(candidate.digest), running)
        if self._older is None or self._older[:2] != key:
            self._older = (*key, self._order(candidate, running) is order_rules.Order.OLDER)
        return self._older[2]

    def _order(self, candidate: Release, running: str) -> order_rules.Order:
        """The ``created`` labels when both builds have one (they are inside the signed
        config, so a registry cannot move them); else this host's history. Labels first:
        after an operator went back to an older build it ran last here, and the track's
        newer build must not look like a downgrade then."""
        created = self._created(running) if candidate.created else None
        order = order_rules.order_by_created(candidate.created, created)
        if order is not order_rules.Order.UNKNOWN:
            return order
        return order_rules.order_by_history(self.store.history(500), str(candidate.digest),
                                            running)

    def _created(self, digest: str) -> str | None:
        try:
            return self.registry.created(Digest(digest))
        except (ManifestNotFound, RegistryProtocolError, ValueError):
            return None  # the running build is gone from the registry: the history tells

    # -- signatures -------------------------------------------------------------------
    def check(self, candidate: Release) -> tuple[SignatureCheck, float] | None:
        """The candidate's signature and, when it is missing, the grace left (seconds);
        None when verification is off. A valid one is recorded as verified."""
        if self.signatures is None:
            return None
        check = self.signatures.verify(candidate)
        if check.valid:
            self.store.mark_verified(str(candidate.digest), candidate.tag, check.key)
        if check.status != MISSING:
            return check, 0.0
        now = self.clock.wall()
        seen = self.store.first_seen(str(candidate.digest), candidate.tag, now)
        return check, age_left(seen, now, self.grace)

    def require_verified(self, release: Release, what: str) -> bool | None:
        """``rollback`` and ``promote``: True when this host verified ``release`` before or
        it verifies now; ``InvalidInput`` (exit 2, nothing touched) when it does not; None
        when verification is off."""
        if self.signatures is None:
            return None
        if self.store.is_verified(str(release.digest)):
            return True
        found = self.check(release)
        assert found is not None
        if not found[0].valid:
            raise InvalidInput(f"{what} {release.label}: refused, its signature is "
                               f"{found[0].describe()}")
        return True

    def verified(self, digest: str) -> bool:
        """For promotion: with verification on, only a digest this host verified."""
        return self.signatures is None or self.store.is_verified(digest)

    # -- telling ----------------------------------------------------------------------
    def tell(self, decision: Decision, running: Release | None) -> None:
        """After a poll or deploy decided: a held build is told once (event + ``hold``
        meta for ``status``, which a restart reads back); any other decision clears it."""
        kind = _HELD.get(decision.verdict)
        told = self._recorded()
        if kind is None:
            if told is not None:
                self.store.set_meta(hold=None)
                self._told = None
            return
        digest = str(decision.candidate.digest)
        if told == (digest, kind):
            return
        self._told = (digest, kind)
        self.store.set_meta(hold={**dataclasses.asdict(decision.candidate), "kind": kind,
                                  "digest": digest, "reason": decision.reason,
                                  "since": utcnow(self.clock)})
        self.events.emit(Held(decision.candidate, running, kind, decision.reason))

    def _recorded(self) -> tuple[str, str] | None:
        if self._told == _UNKNOWN:
            hold = self.store.get_meta("hold")
            self._told = (str(hold.get("digest")), str(hold.get("kind"))) \
                if isinstance(hold, dict) else None
        return self._told if isinstance(self._told, tuple) else None
