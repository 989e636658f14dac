"""``python -m testbed up|down|status|tokenserver``: the bed from the command line.

``up`` starts what is missing (dockerd, the registry, its token server) in the background
and prints how long it took; ``down`` stops what ``up`` started.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from testbed import services
from testbed.util import BedError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--workdir", type=Path, default=services.DEFAULT_WORKDIR)
    down = sub.add_parser("down")
    down.add_argument("--workdir", type=Path, default=services.DEFAULT_WORKDIR)
    sub.add_parser("status")
    tok = sub.add_parser("tokenserver")
    tok.add_argument("--key", type=Path, required=True)
    tok.add_argument("--users", type=Path, required=True)
    tok.add_argument("--port", type=int, default=services.TOKEN_PORT)
    args = p.parse_args(argv)

    if args.cmd == "up":
        t0 = time.monotonic()
        try:
            state = services.up(args.workdir)
        except BedError as exc:
            print(f"testbed: {exc}", file=sys.stderr)
            return 1
        started = [n for n in ("dockerd", "registry", "tokenserver") if n in state.pids]
        print(f"testbed: up in {time.monotonic() - t0:.1f}s "
              f"(started: {', '.join(started) or 'nothing, all running'}; "
              f"registry {services.REGISTRY_URL})")
        return 0
    if args.cmd == "down":
        stopped = services.down(args.workdir)
        print(f"testbed: stopped {', '.join(stopped) or 'nothing'}")
        return 0
    if args.cmd == "status":
        print(json.dumps({"engine": services.engine_answers(),
                          "registry": services.registry_answers()}))
        return 0
    from testbed.tokenserver import TokenServer

    users = json.loads(args.users.read_text())
    TokenServer(args.key, users, port=args.port).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
