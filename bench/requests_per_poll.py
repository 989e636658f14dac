"""HTTP requests per idle poll of the registry watcher, as the tag count grows.

An idle poll is ``resolve_track("main", known)`` while ``main`` has not moved and the token
is cached: it must cost one ``HEAD``, whatever the number of tags in the repository.

    .venv/bin/python -m testbed up            # if the bed is not running
    .venv/bin/python bench/requests_per_poll.py [--tags 100,1500,10000] [--polls 200]

Prints a table and writes it to bench/results.md, section "requests per idle poll".
Pushes a fresh repository ``bench/rpp<random>/app`` into the bed's registry.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import secrets
import sys
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from testbed import services  # noqa: E402
from testbed.images import build_and_push  # noqa: E402
from testbed.rawclient import RawRegistry  # noqa: E402
from twilight_agent.adapters.registry.client import HttpRegistry  # noqa: E402

SECTION = "requests per idle poll"
RESULTS = ROOT / "bench" / "results.md"


def flood(raw: RawRegistry, repo: str, source_tag: str, start: int, stop: int) -> float:
    """Point ``sha-<i>`` tags ``start..stop-1`` at ``source_tag``; return seconds taken."""
    t0 = time.monotonic()
    raw.tag(repo, source_tag, *[f"sha-{i:07x}" for i in range(start, stop)])
    return time.monotonic() - t0


def measure(repo: str, polls: int) -> dict[str, float]:
    with HttpRegistry(services.REGISTRY_URL, repo) as registry:
        known = registry.resolve_track("main")
        cold = registry.requests
        n_tags = len(set(registry.tags()))
        before, t0 = registry.requests, time.monotonic()
        for _ in range(polls):
            assert registry.resolve_track("main", known) is known
        idle = registry.requests - before
        elapsed = time.monotonic() - t0
    return {"tags": n_tags, "polls": polls, "requests": idle, "per_poll": idle / polls,
            "ms_per_poll": 1000 * elapsed / polls, "cold": cold}


def table(rows: list[dict[str, float]]) -> str:
    lines = ["| tags | idle polls | requests | requests/poll | ms/poll | first resolve |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['tags']:,} | {r['polls']:,} | {r['requests']:,} | {r['per_poll']:.2f} | "
              f"{r['ms_per_poll']:.1f} | {r['cold']} requests |" for r in rows]
    return "\n".join(lines)


def write_results(body: str) -> None:
    """Replace this bench's section of results.md, or add it at the end."""
    write_section(RESULTS, SECTION, body, first=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", default="100,1500,10000",
                        help="tag counts to measure, ascending (default 100,1500,10000)")
    parser.add_argument("--polls", type=int, default=200, help="idle polls per measurement")
    parser.add_argument("--no-write", action="store_true", help="do not touch results.md")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.tags.split(","))
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if not (services.engine_answers() and services.registry_answers()):
        print("the test bed is not running: .venv/bin/python -m testbed up", file=sys.stderr)
        return 2
    repo = f"bench/rpp{secrets.token_hex(3)}/app"
    client, raw = services.engine_client(), RawRegistry()
    branch = build_and_push(client, repo, version="branch", branch="feature")
    build_and_push(client, repo, version="v1")  # main, with labels, like CI
    rows, done = [], 0
    for n in counts:
        took = flood(raw, repo, branch.sha_tag, done, n)
        done = n
        row = measure(repo, args.polls)
        rows.append(row)
        print(f"{row['tags']:>7,} tags: {row['per_poll']:.2f} requests/poll "
              f"(flood {took:.1f}s)", flush=True)
    raw.close()
    client.close()
    out = table(rows)
    print(out)
    if not args.no_write:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write_results(f"`bench/requests_per_poll.py`, {stamp}, bed registry on loopback. "
                      "An idle poll is `resolve_track(\"main\", known)` with main unchanged "
                      "and the token cached. Tag counts include the flood plus the builds' "
                      "own tags; the first resolve includes the token round trip.\n\n" + out)
    return 0 if all(r["per_poll"] == 1.0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
