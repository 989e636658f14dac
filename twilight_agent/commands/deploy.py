"""CLI commands around one deploy: ``deploy``, ``rollback``, ``status``, ``history``,
``unquarantine``. Each is ``(settings, args) -> exit code``; errors are raised as
``TwilightError`` and turned into one stderr line + exit code by ``cli.py``.

``deploy`` and ``rollback`` take the deploy lock before the slow imports (docker SDK,
httpx), so a second deploy is refused with exit 3 at once, and hand the agent the held
lock: one deploy takes it once. The tag is parsed once, here.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from twilight_agent.adapters.state.lock import DeployLock, Held
from twilight_agent.adapters.state.store import Store
from twilight_agent.core.models import Tag
from twilight_agent.core.outcomes import Outcome
from twilight_agent.errors import InvalidTag
from twilight_agent.settings import Settings


def _configure_logs(settings: Settings) -> None:
    """Warnings and errors only: an operator's terminal gets one line per problem; the
    full record of the deploy is its history row (``twilight-agent history``)."""
    import logging

    from twilight_agent.logs import configure

    configure(settings.log_format, level=logging.WARNING, stream=sys.stderr)


def _say(report: Any) -> int:
    """One line for the operator: stdout when it went well, stderr when not."""
    to = report.to.label if report.to else "-"
    prev = report.from_.label if report.from_ else "the previous version"
    if report.exit_code == 0:
        print(f"{report.outcome}: {to}" + (f" ({report.reason})" if report.reason else ""))
    elif report.outcome is Outcome.ROLLED_BACK:
        print(f"twilight-agent: rolled_back: {to} failed ({report.reason}); {prev} is "
              "serving again", file=sys.stderr)
    elif report.outcome is Outcome.HALTED:
        print(f"twilight-agent: halted: {to} failed and so did the rollback to {prev} "
              f"({report.reason}); an operator is needed", file=sys.stderr)
    else:
        print(f"twilight-agent: {report.outcome}: {to}: {report.reason}", file=sys.stderr)
    return int(report.exit_code)


def cmd_deploy(settings: Settings, args: argparse.Namespace) -> int:
    tag = getattr(args, "tag", None)
    if tag is not None:
        try:
            tag = Tag.parse(tag, settings.tag_pattern)
        except ValueError as exc:
            raise InvalidTag(str(exc)) from None
    detach = getattr(args, "detach", False) and _daemon_watches(settings)
    with DeployLock(settings.state_dir) as lock:
        agent = _agent(settings, lock)
        try:
            return _say(agent.deploy(tag, trigger="cli", now=getattr(args, "now", False),
                                     detach=detach))
        finally:
            agent.close()


def _daemon_watches(settings: Settings) -> bool:
    """``deploy --detach``: True when a daemon of this app runs to take the watch over;
    else say so, and this command watches."""
    from twilight_agent.commands.service import running_daemon, unit_name

    if settings.watch <= 0:
        return False
    if running_daemon(settings.runtime_directory, unit_name(settings.instance)) is None:
        print("twilight-agent: --detach: no daemon of this app is running; watching here",
              file=sys.stderr)
        return False
    return True


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    with DeployLock(settings.state_dir) as lock:
        agent = _agent(settings, lock)
        try:
            return _say(agent.rollback())
        finally:
            agent.close()


def _agent(settings: Settings, lock: DeployLock) -> Any:
    """The agent, with SIGTERM/SIGINT turned into ``request_stop``: a deploy stopped from the
    terminal or by systemd finishes or undoes its current phase, never half-swapped."""
    _configure_logs(settings)
    from twilight_agent.app import build_agent, build_sinks

    # The operator's deploys notify and count like the daemon's (webhook, metrics file).
    agent = build_agent(settings, sinks=build_sinks(settings), lock=Held(lock))
    agent.announce()  # the metrics file starts from the host's totals, not from zero
    if sys.stdout.isatty():  # an operator watching: show the pull; a pipe gets one line
        agent.set_progress(_show_pull, _show_notice)

    def stop(signum: int, _frame: object) -> None:
        print(f"twilight-agent: {signal.Signals(signum).name}: finishing or undoing the "
              "current phase", file=sys.stderr)
        agent.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    return agent


def _show_pull(line: str) -> None:
    print(f"pull: {line}", flush=True)


def _show_notice(line: str) -> None:
    print(line, flush=True)


def _release(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    digest = str(r.get("digest") or "")
    return f"{r.get('tag') or '?'} ({digest[:19]})" if digest else str(r.get("tag") or "-")


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """A two-column table, on a terminal and in a pipe alike (stable, easy to grep);
    ``--json`` is the interface for scripts."""
    from twilight_agent.app import build_agent

    _configure_logs(settings)  # a warning (e.g. a damaged state store) goes to stderr
    agent = build_agent(settings)
    try:
        st = agent.status()
    finally:
        agent.close()
    if getattr(args, "json", False):
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    last = st.get("last_result") or {}
    rows = [("current", _release(st["current"])), ("previous", _release(st["previous"])),
            ("following", f"pin {st['pinned']}" if st["pinned"] else f"track {st['track']}"),
            ("phase", st["phase"] + (f" ({st['halted_reason']})" if st["halted"] else "")
             + (_watch_text(st["watch"]) if st.get("watch") else "")),
            ("last result", f"{last.get('outcome', '-')} {last.get('finished', '')} "
                            f"{last.get('reason', '')}".strip()),
            ("quarantined", str(len(st["quarantined"])))]
    if st.get("next_window"):
        rows.insert(3, ("window", f"closed; the next deploy window opens {st['next_window']}"))
    if st.get("promotion"):
        rows.insert(3, ("promotion", _promotion_text(st["promotion"])))
    if st.get("held"):
        rows.insert(3, ("held", f"{_release(st['held'])}: {st['held']['reason']}"))
    rows += [("", f"{q['tag'] or '?'} {q['digest'][:19]}: {q['reason']}")
             for q in st["quarantined"]]
    for key, value in rows:
        print(f"{key:<12} {value}")
    return 0


def _promotion_text(p: dict[str, Any]) -> str:
    text = f"{p['tag']} <- {_release(p['build'])}: {p['step']}"
    if p.get("left_s") is not None:
        return f"{text}, due {p['due']} ({int(p['left_s'])}s left)"
    return text + (f" ({p['reason']})" if p.get("reason") else "")


def _watch_text(w: dict[str, Any]) -> str:
    left = int(w["left_s"])
    by = f" by the {w['by']}" if w.get("by") else ""
    return (f" (watching {_release(w['to'])}{by}: {left // 60}m{left % 60:02d}s left, until "
            f"{w['until']}; {_release(w['from'])} kept parked)")


def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    _configure_logs(settings)
    rows = Store(settings.state_dir).history(getattr(args, "n", 20))
    if getattr(args, "json", False):
        print(json.dumps([r.as_dict() for r in rows], indent=2, sort_keys=True))
        return 0
    if not rows:
        print("no deploys recorded yet")
    for r in rows:
        signed = "" if r.verified is None else (", verified" if r.verified else ", unverified")
        print(f"{r.finished}  {r.outcome.value:<12} {r.from_tag or '-'} -> "
              f"{r.to_tag or '-'}  [{r.trigger}, {r.phase}{signed}]"
              + (f"  {r.reason}" if r.reason else ""))
    return 0


def cmd_unquarantine(settings: Settings, args: argparse.Namespace) -> int:
    for q in Store(settings.state_dir).unquarantine(args.target):
        print(f"unquarantined {q.tag or '?'} {q.digest}")
    return 0
