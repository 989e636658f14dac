"""``twilight-agent check [--json]``: what runs, what the registry offers, what would happen.

Reads the target container, the registry (the pin if one is set, else the track) and the
quarantine list; changes nothing. Exit 0 when it could tell, 5 when the registry (or the
engine) does not answer, 2 for bad config, credentials or a missing tag/container.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from twilight_agent import app, logs
from twilight_agent.core.policy import check_verdict
from twilight_agent.core.ports import RuntimePort, Snapshot, StorePort
from twilight_agent.errors import RegistryError, TwilightError
from twilight_agent.settings import Settings

DEFAULT_PLATFORM = ("linux", "amd64")


@dataclass
class CheckReport:
    """Everything ``check`` prints; ``--json`` prints exactly this."""

    running: dict[str, Any] | None
    candidate: dict[str, Any] | None
    decision: str
    reason: str
    errors: list[str]
    exit_code: int


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    logs.configure(settings.log_format, level=logging.WARNING)  # stderr; stdout is the report
    report = gather(settings)
    if getattr(args, "json", False):
        print(json.dumps(asdict(report), indent=2))
    else:
        print(render(report))
    return report.exit_code


def gather(settings: Settings, *, runtime: Callable[[Settings], RuntimePort] | None = None,
           store: Callable[[Settings], StorePort] | None = None,
           registry: Callable[..., Any] | None = None) -> CheckReport:
    """Collect the report; the builders default to ``twilight_agent.app``'s."""
    errors: list[str] = []
    codes: list[int] = []
    snap = _running(runtime or app.build_runtime, settings, errors, codes)
    source = f"pin {settings.pin}" if settings.pin else settings.track
    candidate = _candidate(registry or app.build_registry, settings, snap, errors, codes)
    quarantined = _quarantined(store or app.build_store, settings)
    action, reason = check_verdict(snap.digest if snap else None,
                                   candidate["digest"] if candidate else None,
                                   quarantined, pinned=bool(settings.pin), source=source)
    running = ({"container": snap.name, "tag": snap.tag, "digest": snap.digest}
               if snap else None)
    return CheckReport(running, candidate, action, reason, errors,
                       codes[0] if codes else 0)


def _running(build: Callable[[Settings], RuntimePort], settings: Settings, errors: list[str],
             codes: list[int]) -> Snapshot | None:
    try:
        runtime = build(settings)
        try:
            return runtime.snapshot(runtime.find_target())
        finally:
            _close(runtime)
    except TwilightError as exc:
        errors.append(f"running version unknown: {exc}")
        codes.append(exc.exit_code)
        return None


def _platform(snap: Snapshot | None) -> tuple[str, ...]:
    """The engine's os/arch, as the running image shows it."""
    image = dict(snap.image_inspect) if snap else {}
    if not image.get("Os") or not image.get("Architecture"):
        return DEFAULT_PLATFORM
    variant = image.get("Variant")
    return (image["Os"], image["Architecture"], *([variant] if variant else []))


def _candidate(build: Callable[..., Any], settings: Settings, snap: Snapshot | None,
               errors: list[str], codes: list[int]) -> dict[str, Any] | None:
    try:
        with build(settings, platform=_platform(snap)) as registry:
            release = (registry.resolve_tag(settings.pin) if settings.pin
                       else registry.resolve_track(settings.track))
    except RegistryError as exc:
        errors.insert(0, f"registry: {exc}")
        codes.insert(0, exc.exit_code)
        return None
    return {"source": "pin" if settings.pin else "track",
            "ref": settings.pin or settings.track, "tag": release.tag,
            "digest": str(release.digest), "revision": release.revision,
            "created": release.created}


def _quarantined(build: Callable[[Settings], StorePort], settings: Settings) -> set[str]:
    if not settings.state_dir.exists():  # nothing deployed from this host yet: nothing to read
        return set()
    store = build(settings)
    try:
        return {entry.digest for entry in store.quarantined()}
    finally:
        _close(store)


def _close(thing: object) -> None:
    close = getattr(thing, "close", None)
    if callable(close):
        close()


def render(report: CheckReport) -> str:
    """The human form: one line each for running, candidate, decision, then any errors."""
    run = report.running
    cand = report.candidate
    lines = [
        "running:   " + (f"{run['tag'] or '-'}  {run['digest'] or 'digest unknown'}  "
                         f"(container {run['container']})" if run else "unknown"),
        "candidate: " + (f"{cand['tag']}  {cand['digest']}  ({_origin(cand)})"
                         if cand else "unknown"),
        f"decision:  {report.decision.replace('_', ' ')}: {report.reason}",
    ]
    lines += [f"error:     {e}" for e in report.errors]
    return "\n".join(lines)


def _origin(cand: dict[str, Any]) -> str:
    parts = [f"{cand['source']} {cand['ref']}"]
    if cand.get("revision"):
        parts.append(f"revision {cand['revision'][:12]}")
    if cand.get("created"):
        parts.append(f"built {cand['created']}")
    return ", ".join(parts)
