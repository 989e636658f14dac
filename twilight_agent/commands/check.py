"""``twilight-agent check [--json]``: what runs, what the registry offers, what would happen.

A dry run of exactly the decision a deploy makes (``Agent.decide``, the pure
``policy.decide``): same candidate lookup, same store, same rules, so ``check`` and
``deploy`` cannot disagree. It takes no lock, recovers nothing and writes nothing (the
state store is opened read-only). Exit 0 when it could tell, 5 when the registry (or the
engine) does not answer, 2 for bad config, credentials or a missing tag/container.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twilight_agent import app, logs, target_kinds
from twilight_agent.agent import Agent
from twilight_agent.core.models import Tag
from twilight_agent.core.policy import Decision
from twilight_agent.core.ports import Snapshot
from twilight_agent.errors import RegistryError, RegistryProtocolError, TwilightError
from twilight_agent.settings import Settings

REGISTRY_UNREACHABLE = "registry_unreachable"  # the registry gave no candidate


@dataclass
class CheckReport:
    """Everything ``check`` prints; ``--json`` prints exactly this."""

    running: dict[str, Any] | None
    candidate: dict[str, Any] | None
    decision: str
    reason: str
    errors: list[str]
    exit_code: int
    next_window: str | None = None  # outside every deploy window: when the next opens
    signature: str | None = None  # valid (key ...) / missing (...) / invalid (...); None: off


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    logs.configure(settings.log_format, level=logging.WARNING)  # stderr; stdout is the report
    report = gather(settings)
    if getattr(args, "json", False):
        print(json.dumps(asdict(report), indent=2))
    else:
        print(render(report))
    return report.exit_code


def gather(settings: Settings, *, build: Callable[..., Agent] | None = None) -> CheckReport:
    """Collect the report from an agent built read-only (``app.build_agent`` by default)."""
    agent = (build or _readonly_agent)(settings)
    try:
        return _gather(agent, settings)
    finally:
        agent.close()


def _readonly_agent(settings: Settings) -> Agent:
    return app.build_agent(settings, store=app.build_store(settings, readonly=True))


def _gather(agent: Agent, settings: Settings) -> CheckReport:
    errors: list[str] = []
    codes: list[int] = []
    snap = _running(agent, errors, codes)
    pin = Tag(settings.pin) if settings.pin else None
    try:
        decision = agent.decide(pin, running=snap)
    except RegistryError as exc:
        errors.insert(0, f"registry: {exc}")
        codes.insert(0, exc.exit_code)
        why = ("the registry's answer was not usable" if isinstance(exc, RegistryProtocolError)
               else "the registry gave no answer")
        return CheckReport(_running_dict(snap, settings), None, REGISTRY_UNREACHABLE,
                           f"{why}; nothing would change", errors, codes[0])
    c = decision.candidate
    candidate = {"source": "pin" if pin else "track", "ref": settings.pin or settings.track,
                 "tag": c.tag, "digest": str(c.digest), "revision": c.revision,
                 "created": c.created}
    signature = _signature(agent, decision, errors, codes)
    return CheckReport(_running_dict(snap, settings), candidate, decision.verdict.value,
                       decision.reason, errors, codes[0] if codes else 0,
                       agent.next_window(), signature)


def _signature(agent: Agent, decision: Decision, errors: list[str],
               codes: list[int]) -> str | None:
    """The candidate's signature as the decision saw it; checked here when the decision
    did not need to (what runs is checked too: an operator asks)."""
    if agent.signatures is None:
        return None
    check = decision.signature
    if check is None:
        try:
            check = agent.signatures.verify(decision.candidate)
        except RegistryError as exc:
            errors.append(f"signature: {exc}")
            codes.append(exc.exit_code)
            return "unknown (the registry gave no answer)"
    return check.describe()


def _running(agent: Agent, errors: list[str], codes: list[int]) -> Snapshot | None:
    try:
        return agent.observe()
    except TwilightError as exc:
        errors.append(f"running version unknown: {exc}")
        codes.append(exc.exit_code)
        return None


def _running_dict(snap: Snapshot | None, settings: Settings) -> dict[str, Any] | None:
    """What runs; ``container`` is the target's name (a swarm service's too: the JSON
    contract), ``kind`` says which."""
    if snap is None:
        return None
    kind = target_kinds.kind_of(settings).label
    return {"container": snap.name, "kind": kind, "tag": snap.tag, "digest": snap.digest}


def render(report: CheckReport) -> str:
    """The human form: one line each for running, candidate, decision, then any errors."""
    run = report.running
    cand = report.candidate
    lines = [
        "running:   " + (f"{run['tag'] or '-'}  {run['digest'] or 'digest unknown'}  "
                         f"({run.get('kind', 'container')} {run['container']})"
                         if run else "unknown"),
        "candidate: " + (f"{cand['tag']}  {cand['digest']}  ({_origin(cand)})"
                         if cand else "unknown"),
        f"decision:  {report.decision.replace('_', ' ')}: {report.reason}",
    ]
    if report.next_window:
        lines.append(f"window:    closed; the next deploy window opens {report.next_window}")
    if report.signature is not None:
        lines.insert(2, f"signature: {report.signature}")
    lines += [f"error:     {e}" for e in report.errors]
    return "\n".join(lines)


def _origin(cand: dict[str, Any]) -> str:
    parts = [f"{cand['source']} {cand['ref']}"]
    if cand.get("revision"):
        parts.append(f"revision {cand['revision'][:12]}")
    if cand.get("created"):
        parts.append(f"built {cand['created']}")
    return ", ".join(parts)
