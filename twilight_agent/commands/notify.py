"""``twilight-agent notify-test``: one test message to every notification target now.

The webhook (``TWILIGHT_WEBHOOK_URL``) and each Apprise URL (``TWILIGHT_NOTIFY``, the
file, the credential) get the message once, here and not from the delivery thread, and
each gets one line: ``ok`` or ``FAIL`` with the reason, the target named by its scheme
and host only. Exit 0 when every target accepted it, 1 when one did not, 2 when none is
configured.
"""

from __future__ import annotations

import argparse
import sys

from twilight_agent.adapters.notify.message import notify_test_body
from twilight_agent.commands.deploy import _configure_logs
from twilight_agent.settings import Settings


def cmd_notify_test(settings: Settings, args: argparse.Namespace) -> int:
    _configure_logs(settings)
    from twilight_agent.app import build_notifiers

    notifiers = build_notifiers(settings)
    if not notifiers:
        print("twilight-agent: no notification target: set TWILIGHT_WEBHOOK_URL, "
              "TWILIGHT_NOTIFY or TWILIGHT_NOTIFY_FILE", file=sys.stderr)
        return 2
    failed = 0
    for sink in notifiers:
        results = sink.send_now(notify_test_body(sink.host, settings.image))
        for n, (where, error) in enumerate(results, 1):
            name = sink.kind if len(results) == 1 and sink.kind == "webhook" else \
                f"{sink.kind} {n}"
            print(f"{'ok  ' if error is None else 'FAIL'}  {name:<9} {where}"
                  + (f": {error}" if error else ""), flush=True)
            failed += error is not None
    if failed:
        print(f"twilight-agent: {failed} notification target(s) failed", file=sys.stderr)
    return 1 if failed else 0
