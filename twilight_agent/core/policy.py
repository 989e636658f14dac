"""Pure policy: the tag gate, the one deploy decision, quarantine wording, previous good.

``decide`` is the only place that says whether a candidate is deployed: the daemon's poll,
``twilight-agent deploy`` and ``twilight-agent check`` all call it with the same ``Facts``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from twilight_agent.core.history import HistoryRow
from twilight_agent.core.models import DEFAULT_TAG_PATTERN, Release, Tag
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.signatures import MISSING, SignatureCheck

__all__ = ["DEFAULT_TAG_PATTERN", "Decision", "Facts", "Verdict", "check_tag", "decide",
           "passes_gate", "previous_good", "quarantine_reason", "running_tag", "sha_tag"]


def check_tag(tag: str, pattern: str = DEFAULT_TAG_PATTERN) -> Tag:
    """The tag gate: ``Tag.parse``. Raises ``ValueError`` with a one-line reason."""
    return Tag.parse(tag, pattern)


def sha_tag(revision: str) -> str:
    """The tag docker/metadata-action gives a commit: ``sha-`` + the first 7 hex digits."""
    return "sha-" + revision[:7].lower()


# --------------------------------------------------------------------------- the decision
class Verdict(str, enum.Enum):
    """What to do with a candidate."""

    DEPLOY = "deploy"  # deploy the candidate
    UP_TO_DATE = "up_to_date"  # the candidate is what runs now
    PINNED = "pinned"  # the pinned tag runs; the track is not followed
    QUARANTINED = "quarantined"  # it failed before; never deployed automatically
    HALTED = "halted"  # the failed rollback was about it; only an operator goes ahead
    REFUSED = "refused"  # an operator asked for a quarantined digest: unquarantine first
    WAIT = "wait"  # a new build, but too young (TWILIGHT_MIN_AGE) or outside every window
    UNTRUSTED = "untrusted"  # its signature does not verify: quarantine, pull nothing
    UNSIGNED = "waiting_for_signature"  # no signature yet: looked at again, until the grace
    DOWNGRADE = "downgrade"  # the track moved to an older build: held, nothing touched

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Facts:
    """Everything the decision looks at, gathered from the registry, engine and store."""

    candidate: Release
    running: str | None  # digest of what runs now; None when the engine does not say
    quarantined: frozenset[str]
    halted_on: str | None = None  # digest the failed rollback was about, while halted
    pin: str | None = None  # the pinned tag, when the daemon follows a pin
    explicit: bool = False  # an operator named this tag (deploy TAG, rollback)
    source: str = "main"  # where the candidate came from, for the reason ("main", "pin x")
    age_left_s: float = 0.0  # TWILIGHT_MIN_AGE not reached yet by this much (track only)
    window: str | None = None  # outside every deploy window: when the next one opens
    now: bool = False  # an operator said deploy --now: windows do not apply
    signature: SignatureCheck | None = None  # checked only for a candidate to deploy
    grace_left_s: float = 0.0  # TWILIGHT_VERIFY_GRACE left for a missing signature
    older: bool = False  # the track's build is older than what runs (a downgrade)


@dataclass(frozen=True)
class Decision:
    """The verdict, a one-line reason, and the outcome a cycle that stops here reports."""

    verdict: Verdict
    reason: str
    candidate: Release
    signature: SignatureCheck | None = None

    @property
    def outcome(self) -> Outcome:
        return _OUTCOMES[self.verdict]


_OUTCOMES = {Verdict.DEPLOY: Outcome.DEPLOYED, Verdict.UP_TO_DATE: Outcome.UP_TO_DATE,
             Verdict.PINNED: Outcome.PINNED_CURRENT, Verdict.QUARANTINED: Outcome.QUARANTINED,
             Verdict.HALTED: Outcome.QUARANTINED, Verdict.REFUSED: Outcome.QUARANTINED,
             Verdict.WAIT: Outcome.WAITING, Verdict.UNTRUSTED: Outcome.UNTRUSTED,
             Verdict.UNSIGNED: Outcome.WAITING, Verdict.DOWNGRADE: Outcome.NOTHING_TO_DO}


def decide(f: Facts) -> Decision:
    """What to do with ``f.candidate``.

    A candidate to deploy whose signature was checked and is not valid is ``untrusted``.
    A quarantined digest is never auto-deployed, and an operator's explicit request for one
    is refused until it is unquarantined. While HALTED nothing is deployed automatically
    except a newer candidate that is not quarantined; an operator command always goes ahead.
    """
    digest, label = str(f.candidate.digest), f.candidate.label
    if digest in f.quarantined:
        if f.explicit:
            return Decision(Verdict.REFUSED, f"{label} is quarantined; run `twilight-agent "
                            f"unquarantine {f.candidate.tag}` first", f.candidate)
        return Decision(Verdict.QUARANTINED, f"{label} is quarantined; waiting for a newer "
                        "build", f.candidate)
    if not f.explicit and digest == f.halted_on:
        return Decision(Verdict.HALTED, f"{label} failed and so did the rollback; waiting "
                        "for a newer build or an operator", f.candidate)
    if digest == f.running and not (f.explicit and f.halted_on is not None):
        if f.pin and not f.explicit:
            return Decision(Verdict.PINNED, f"the pin {f.pin} runs ({label}); the track is "
                            "not followed while pinned", f.candidate)
        return Decision(Verdict.UP_TO_DATE, f"{label} is already running", f.candidate)
    if f.older and not f.explicit:
        return Decision(Verdict.DOWNGRADE, f"{f.source} moved back to {label}, a build "
                        f"older than the one running; held (to go back on purpose: "
                        f"`twilight-agent deploy {f.candidate.tag or digest}`, or "
                        "TWILIGHT_ALLOW_DOWNGRADE=true)", f.candidate)
    if f.signature is not None and not f.signature.valid:
        return _untrusted(f)
    why = "the running digest is unknown" if f.running is None else "it differs from what runs"
    return _when(f) or Decision(Verdict.DEPLOY, f"{f.source} points at {label}; {why}",
                                f.candidate, f.signature)


def _untrusted(f: Facts) -> Decision:
    """A signature that did not verify; a missing one waits out its grace first (CI signs
    after it pushes), and an operator who names an unsigned build is refused."""
    sig, label = f.signature, f.candidate.label
    assert sig is not None
    if sig.status != MISSING:
        return Decision(Verdict.UNTRUSTED, f"signature: {sig.describe()}", f.candidate, sig)
    if f.explicit:
        return Decision(Verdict.REFUSED, f"{label} has no signature (yet): "
                        f"{sig.describe()}; nothing deployed", f.candidate, sig)
    if f.grace_left_s > 0:
        return Decision(Verdict.UNSIGNED, f"{label} is waiting for a signature "
                        f"({max(1, round(f.grace_left_s))}s of TWILIGHT_VERIFY_GRACE left)",
                        f.candidate, sig)
    return Decision(Verdict.UNTRUSTED, f"signature: {sig.describe()}; still unsigned when "
                    "TWILIGHT_VERIFY_GRACE ran out", f.candidate, sig)


def _when(f: Facts) -> Decision | None:
    """A build that would be deployed, but not yet: too young, or outside every window."""
    label = f.candidate.label
    if f.window is not None and not f.now:
        if f.explicit:
            return Decision(Verdict.REFUSED, f"outside every deploy window (the next opens "
                            f"{f.window}); add --now to deploy {label} anyway", f.candidate)
        return Decision(Verdict.WAIT, f"{label} waits for the deploy window that opens "
                        f"{f.window}", f.candidate)
    if f.age_left_s > 0 and not f.explicit:
        return Decision(Verdict.WAIT, f"{label} is younger than TWILIGHT_MIN_AGE: "
                        f"{f.age_left_s:.0f}s to go", f.candidate)
    return None


# --------------------------------------------------------------------------- history
def quarantine_reason(reason: str, limit: int = 200) -> str:
    """One line, bounded: what goes into the quarantine table and ``status``."""
    line = " ".join(reason.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def previous_good(history: Sequence[HistoryRow], current: str | None) -> HistoryRow | None:
    """The release to go back to: the ``from`` side of the newest successful deploy that
    brought in ``current``; rows are newest first. None when history does not know one."""
    for row in history:
        if row.deployed and row.to_digest == current \
                and row.from_digest and row.from_digest != current:
            return row
    return None


def running_tag(engine_tag: str | None, digest: str | None, current: Release | None,
                env_tag: str | None, pattern: str = DEFAULT_TAG_PATTERN) -> str | None:
    """The tag the running target runs as: the engine's reference when it names one, else
    the recorded current tag (same digest), else the compose ``.env`` IMAGE_TAG; the first
    that passes the tag gate."""
    recorded = current.tag if current is not None and str(current.digest) == digest else None
    for tag in (engine_tag, recorded, env_tag):
        if tag and passes_gate(tag, pattern):
            return tag
    return engine_tag


def passes_gate(tag: str, pattern: str = DEFAULT_TAG_PATTERN) -> bool:
    """True when ``tag`` passes the tag gate."""
    try:
        Tag.parse(tag, pattern)
    except ValueError:
        return False
    return True
