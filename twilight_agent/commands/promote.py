"""``twilight-agent promote TAG``: the operator points the promote tag
(``TWILIGHT_PROMOTE_TO``) at TAG's build now, whatever its age, its order or its
quarantine. Under the deploy lock (exit 3 while a deploy or its watch holds it)."""

from __future__ import annotations

import argparse

from twilight_agent.adapters.state.lock import DeployLock, Held
from twilight_agent.commands.deploy import _configure_logs
from twilight_agent.settings import Settings


def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    _configure_logs(settings)
    from twilight_agent.app import build_agent, build_sinks

    with DeployLock(settings.state_dir) as lock:
        agent = build_agent(settings, sinks=build_sinks(settings), lock=Held(lock))
        try:
            p = agent.promote(args.tag)
        finally:
            agent.close()
    print(f"{p.step}: {p.to_tag} -> {p.tag or '?'} ({p.digest[:19]})"
          + (f" ({p.reason})" if p.reason else ""))
    return 0
