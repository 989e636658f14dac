"""``python -m testbed up|down|status|fetch|tokenserver``: the bed from the command line.

``up [--engine 26|20.10]`` starts what is missing (dockerd, the registry, its token server)
in the background and prints how long it took and which engine answers; with ``--engine``
(or ``TESTBED_ENGINE``) it switches to that engine if the other one runs. ``down`` stops
what ``up`` started. ``fetch`` downloads the 26 engine into the bed's prefix (``up`` does
that too when it needs it) and Debian 13's ``cosign`` into its own prefix (``up`` too:
the signature tests sign with it), each once per machine. ``fleet up --nodes N`` starts N
more engines, each in its own network namespace (``testbed.fleet``); ``fleet down`` removes
them and everything they made.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from testbed import cosign, engines, services
from testbed.util import BedError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--workdir", type=Path, default=services.DEFAULT_WORKDIR)
    up.add_argument("--engine", choices=engines.ENGINES, default=None,
                    help=f"the engine to run (default: ${engines.ENGINE_ENV}, else the one "
                         "answering, else 20.10)")
    sub.add_parser("fetch")
    sub.add_parser("lane")
    down = sub.add_parser("down")
    down.add_argument("--workdir", type=Path, default=services.DEFAULT_WORKDIR)
    sub.add_parser("status")
    fl = sub.add_parser("fleet", help="N nodes, each its own dockerd 26 (see testbed.fleet)")
    fl.add_argument("action", choices=("up", "down", "status"))
    fl.add_argument("--nodes", type=int, default=3)
    tok = sub.add_parser("tokenserver")
    tok.add_argument("--key", type=Path, required=True)
    tok.add_argument("--users", type=Path, required=True)
    tok.add_argument("--port", type=int, default=services.TOKEN_PORT)
    args = p.parse_args(argv)

    if args.cmd == "up":
        t0 = time.monotonic()
        try:
            state = services.up(args.workdir, args.engine or engines.wanted())
            signer = cosign.fetch()
        except BedError as exc:
            print(f"testbed: {exc}", file=sys.stderr)
            return 1
        started = [n for n in ("dockerd", "registry", "tokenserver") if n in state.pids]
        e = engines.describe()
        print(f"testbed: up in {time.monotonic() - t0:.1f}s "
              f"(started: {', '.join(started) or 'nothing, all running'}; "
              f"engine {e['engine']}: dockerd {e.get('version')}, API {e.get('api')}; "
              f"registry {services.REGISTRY_URL}; cosign {signer})")
        return 0
    if args.cmd == "lane":
        print(engines.lane_line())
        return 0
    if args.cmd == "fetch":
        try:
            print(f"testbed: engine 26 in {engines.prefix()}: {engines.fetch_26()}")
            print(f"testbed: cosign in {cosign.prefix()}: {cosign.fetch()}")
        except BedError as exc:
            print(f"testbed: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.cmd == "down":
        stopped = services.down(args.workdir)
        print(f"testbed: stopped {', '.join(stopped) or 'nothing'}")
        return 0
    if args.cmd == "status":
        e = engines.describe()
        print(json.dumps({"engine": e["engine"] is not None,
                          "registry": services.registry_answers(),
                          "engine_key": e["engine"], "version": e.get("version"),
                          "api": e.get("api")}))
        return 0
    if args.cmd == "fleet":
        return fleet_cmd(args.action, args.nodes)
    from testbed.tokenserver import TokenServer

    users = json.loads(args.users.read_text())
    TokenServer(args.key, users, port=args.port).serve_forever()
    return 0


def fleet_cmd(action: str, n: int) -> int:
    from testbed import fleet

    if action == "up":
        t0 = time.monotonic()
        try:
            ns = fleet.up(n)
        except BedError as exc:
            print(f"testbed: fleet: {exc}", file=sys.stderr)
            left = fleet.down()
            print(f"testbed: fleet: taken down again{'; left: ' + ', '.join(left) if left else ''}",
                  file=sys.stderr)
            return 1
        print(f"testbed: fleet up in {time.monotonic() - t0:.1f}s: "
              + ", ".join(f"{x.name} {x.ip} {x.docker_host}" for x in ns))
        return 0
    if action == "down":
        left = fleet.down()
        print(f"testbed: fleet down{': LEFT ' + ', '.join(left) if left else ', nothing left'}")
        return 1 if left else 0
    print(json.dumps({"nodes": [{"name": x.name, "ip": x.ip, "docker_host": x.docker_host,
                                 "dockerd": x.dockerd_pid()} for x in fleet.nodes()],
                      "leftovers": fleet.leftovers()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
