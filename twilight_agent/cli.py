"""Command line: argument parsing and exit codes; no logic.

Each subcommand is a function ``(settings, args) -> int`` in ``twilight_agent.commands``,
imported only when used so ``--help`` and ``status`` start fast. A ``TwilightError`` becomes
one line on stderr and its exit code (docs/architecture.md, outcomes and exit codes;
``core/outcomes.py``): 0 done, 1 deploy failed and the previous version serves, 2 invalid
input or config, 3 locked, 4 halted, 5 registry/Docker unreachable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from pathlib import Path

from twilight_agent import __version__
from twilight_agent.errors import TwilightError

EPILOG = """examples:
  twilight-agent check                      what would be deployed and why
  twilight-agent status                     what runs, the pin, the quarantine
  twilight-agent deploy sha-1a2b3c4         one exact build, now
  twilight-agent --config ./agent.env run   the daemon, with another settings file
  twilight-agent --instance api status      one of several apps on this host
  twilight-agent COMMAND --help             each command's options and examples

exit codes: 0 done (deployed and healthy, or nothing to do); 1 deploy failed and the
  previous version is serving again; 2 invalid input or config, nothing touched;
  3 another deploy holds the lock; 4 halted: rollback failed, operator needed;
  5 registry or Docker unreachable, nothing touched."""

# name -> (module in twilight_agent.commands, function, help, examples)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "run": ("service", "cmd_run", "run the daemon (what systemd starts)",
            "twilight-agent run\n  twilight-agent --config /srv/app/agent.env run"),
    "check": ("check", "cmd_check", "show what would be deployed and why; changes nothing",
              "twilight-agent check\n  twilight-agent check --json"),
    "deploy": ("deploy", "cmd_deploy", "deploy now: TAG, or the newest build on the track "
               "(on a terminal it shows the pull as it goes)",
               "twilight-agent deploy\n  twilight-agent deploy sha-1a2b3c4\n"
               "  twilight-agent deploy --now        # outside the deploy windows\n"
               "  twilight-agent deploy --detach     # return after the gate; the daemon "
               "watches"),
    "rollback": ("deploy", "cmd_rollback", "go back to the previous good version",
                 "twilight-agent rollback"),
    "status": ("deploy", "cmd_status", "current/previous version, pin, quarantine, phase: "
               "a table (also in a pipe); --json for scripts",
               "twilight-agent status\n  twilight-agent status --json | jq -r .current.tag"),
    "history": ("deploy", "cmd_history", "past deploys, newest first",
                "twilight-agent history -n 5\n  twilight-agent history --json"),
    "unquarantine": ("deploy", "cmd_unquarantine", "allow a quarantined digest again",
                     "twilight-agent unquarantine sha-1a2b3c4\n"
                     "  twilight-agent unquarantine sha256:<64 hex>"),
    "promote": ("promote", "cmd_promote", "point TWILIGHT_PROMOTE_TO at TAG's build now "
                "(operator override: no age, order or quarantine rule)",
                "twilight-agent promote sha-1a2b3c4"),
    "notify-test": ("notify", "cmd_notify_test", "send one test message to every "
                    "notification target (the webhook, each TWILIGHT_NOTIFY URL) and say "
                    "which failed (exit 1)", "twilight-agent notify-test"),
    "pin": ("service", "cmd_pin", "pin a tag (writes the config, reloads the daemon)",
            "twilight-agent pin v1.4.2"),
    "unpin": ("service", "cmd_unpin", "follow the track again (writes the config, reloads)",
              "twilight-agent unpin"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="twilight-agent",
        description="Pull-based deploy agent: follows a registry track and rolls a\n"
        "container, a compose service group or a Swarm service forward with a\n"
        "health gate, a watch and automatic rollback.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"twilight-agent {__version__}")
    p.add_argument("--config", type=Path, default=None, metavar="PATH",
                   help="settings file (default /etc/twilight-agent/agent.env)")
    p.add_argument("--instance", default=None, metavar="NAME",
                   help="one of several apps on this host: /etc/twilight-agent/NAME.env, "
                   "state in /var/lib/twilight-agent/NAME, the unit twilight-agent@NAME")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_, examples) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=textwrap.fill(help_, 80),
                            epilog=f"examples:\n  {examples}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if name in ("check", "status", "history"):
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "deploy":
            sp.add_argument("tag", nargs="?", help="tag to deploy (default: newest on track)")
            sp.add_argument("--now", action="store_true",
                            help="deploy outside the deploy windows (TWILIGHT_DEPLOY_WINDOW)")
            sp.add_argument("--detach", action="store_true",
                            help="return once the health gate passed and leave the watch "
                            "(TWILIGHT_WATCH) to the running daemon; without one, watch here")
        if name in ("pin", "promote"):
            sp.add_argument("tag", help=f"tag to {name}")
        if name == "history":
            sp.add_argument("-n", type=int, default=20, metavar="N", help="rows (default 20)")
        if name == "unquarantine":
            sp.add_argument("target", metavar="DIGEST|TAG")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    module, func, _, _ = COMMANDS[args.command]
    try:
        from twilight_agent.settings import config_path, load_settings

        settings = load_settings(args.config, args.instance)
        args.config = config_path(args.config, args.instance)  # pin/unpin and reload use it
        handler = getattr(importlib.import_module(f"twilight_agent.commands.{module}"), func)
        return int(handler(settings, args))
    except TwilightError as exc:
        print(f"twilight-agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
