"""``run`` (the daemon systemd starts), ``pin TAG`` and ``unpin``.

``pin``/``unpin`` rewrite ``TWILIGHT_PIN=`` in the config file atomically (the tag gate
runs first: a bad tag exits 2 with the file untouched), then make the running daemon
reload: ``systemctl reload <unit>`` when systemd runs it, else SIGHUP to the pid in its
pidfile. The output says which.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from twilight_agent import logs
from twilight_agent.adapters.state.atomicfile import atomic_write, kept_attributes
from twilight_agent.core.models import Tag
from twilight_agent.errors import ConfigError, InvalidInput, InvalidTag
from twilight_agent.instances import refuse_overlap
from twilight_agent.settings import DEFAULT_CONFIG, Settings, environ, load_settings

if TYPE_CHECKING:
    from twilight_agent.daemon import AgentLike

PIDFILE = "twilight-agent.pid"


# --------------------------------------------------------------------------- run
def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """The daemon: polls until SIGTERM; SIGHUP re-reads ``args.config``."""
    from twilight_agent.adapters.notify.targets import Notifier
    from twilight_agent.daemon import Daemon

    env = environ()
    logs.configure(settings.log_format, env=env, instance=settings.instance)
    config, instance = args.config, settings.instance or None
    refuse_overlap(settings, config)

    daemon = Daemon(settings, agent_factory=build_agent,
                    load=lambda: load_settings(config, instance),
                    notifier=Notifier.from_env(env))
    daemon.install_signal_handlers()
    pidfile = _write_pidfile(settings.runtime_directory)
    try:
        code = daemon.run()
    finally:
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)
    if daemon.stop_timed_out:
        # The deploy thread is still inside the engine; the interpreter would wait for it.
        sys.stderr.flush()
        os._exit(code)
    return code


def build_agent(settings: Settings) -> AgentLike:
    """The real agent with the optional sinks (metrics, webhook). The agent logs every
    event itself: under systemd those lines carry the TWILIGHT_* journal fields."""
    from twilight_agent import app

    agent = app.build_agent(settings, sinks=app.build_sinks(settings))
    agent.set_watcher("daemon")
    return agent


def _write_pidfile(directory: Path) -> Path | None:
    path = directory / PIDFILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        logs.get_logger("twilight.daemon").warning(
            "pidfile_not_written", path=str(path), error=exc.strerror,
            effect="pin/unpin cannot signal this daemon by pid")
        return None
    return path


# --------------------------------------------------------------------------- pin / unpin
def cmd_pin(settings: Settings, args: argparse.Namespace) -> int:
    try:
        tag = Tag.parse(args.tag, settings.tag_pattern)
    except ValueError as exc:
        raise InvalidTag(f"refusing to pin: {exc}") from None
    return _set_pin(settings, args, tag)


def cmd_unpin(settings: Settings, args: argparse.Namespace) -> int:
    return _set_pin(settings, args, "")


def _set_pin(settings: Settings, args: argparse.Namespace, tag: str) -> int:
    path = Path(args.config or DEFAULT_CONFIG)
    write_setting(path, "TWILIGHT_PIN", tag)
    load_settings(path)  # the file as now written must still load
    what = f"pinned {tag}" if tag else f"unpinned: following {settings.track} again"
    print(f"{what} (TWILIGHT_PIN in {path})")
    if environ().get("TWILIGHT_PIN") is not None:
        print("warning: TWILIGHT_PIN is set in this environment and overrides the file",
              file=sys.stderr)
    print(signal_daemon(settings.runtime_directory, unit_name(settings.instance)))
    return 0


def write_setting(path: Path, key: str, value: str) -> None:
    """Set ``KEY=value`` in an env file atomically, keeping its mode and owner."""
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    same_key = re.compile(rf"^\s*(export\s+)?{re.escape(key)}\s*=", re.I)
    lines = [ln for ln in text.splitlines() if not same_key.match(ln)]
    lines.append(f"{key}={value}")
    kept = kept_attributes(path)
    try:
        atomic_write(path, ("\n".join(lines) + "\n").encode(),
                     mode=kept[0] if kept else 0o600, owner=kept[1] if kept else None)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


def unit_name(instance: str = "") -> str:
    """The systemd unit of this app: ``twilight-agent@NAME.service`` for an instance."""
    return f"twilight-agent@{instance}.service" if instance else "twilight-agent.service"


def signal_daemon(runtime_dir: Path, unit_if_active: str = "twilight-agent.service") -> str:
    """Make the running daemon reload; return one line saying how (or why not)."""
    pidfile = runtime_dir / PIDFILE
    pid = _read_pid(pidfile)
    unit = _systemd_unit(pid) if pid else None
    if unit is None and pid is None and _unit_active(unit_if_active):
        unit = unit_if_active
    if unit is not None:
        proc = _systemctl("reload", unit)
        if proc is None or proc.returncode != 0:
            why = proc.stderr.strip() if proc is not None else "systemctl did not run"
            raise ConfigError(f"`systemctl reload {unit}` failed: {why}")
        return f"reloaded the daemon: systemctl reload {unit}"
    if pid is not None:
        if not is_agent_daemon(pid):
            return (f"not signalled: pid {pid} in {pidfile} is not a twilight-agent daemon "
                    "of this user; the new pin applies when the daemon starts")
        os.kill(pid, signal.SIGHUP)
        return f"reloaded the daemon: sent SIGHUP to pid {pid} (from {pidfile})"
    return "the daemon is not running: the new pin applies when it starts"


def is_agent_daemon(pid: int, proc: Path = Path("/proc")) -> bool:
    """True when ``pid`` runs ``twilight-agent ... run`` as this user (root may signal any
    user's): a stale pidfile naming a reused pid must not get a SIGHUP."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        uid = (proc / str(pid)).stat().st_uid
    except OSError:
        return False
    if not (b"run" in argv and any(b"twilight" in a for a in argv)):
        return False
    return os.getuid() == 0 or uid == os.getuid()


def running_daemon(runtime_dir: Path, unit: str = "twilight-agent.service") -> str | None:
    """How this app's daemon runs (``pid N`` or its systemd unit); None when none does."""
    pid = _read_pid(runtime_dir / PIDFILE)
    if pid is not None and is_agent_daemon(pid):
        return f"pid {pid}"
    return unit if _unit_active(unit) else None


def _read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _systemd_unit(pid: int) -> str | None:
    """The .service unit whose cgroup holds ``pid``, if systemd runs it."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    unit = next((p for p in reversed(text.strip().split("/")) if p.endswith(".service")), None)
    if unit is None:
        return None
    proc = _systemctl("show", "--property=MainPID", "--value", unit)
    return unit if proc is not None and proc.stdout.strip() == str(pid) else None


def _unit_active(unit: str) -> bool:
    proc = _systemctl("is-active", "--quiet", unit)
    return proc is not None and proc.returncode == 0


def _systemctl(*argv: str) -> subprocess.CompletedProcess[str] | None:
    """``systemctl ARGV``; None where there is no systemctl."""
    try:
        return subprocess.run(["systemctl", *argv], capture_output=True, text=True,
                              check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
