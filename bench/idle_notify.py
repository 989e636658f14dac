"""Idle RSS with notification targets configured, beside idle RSS without them (#28).

    .venv/bin/python -m bench.idle_notify [--window 60] [--no-write]

Two daemons (``twilight-agent run``, 30 s polls), each on its own fresh site of the test
bed (engine + registry), run side by side for the same window: one without notification
targets, one with a webhook and three Apprise targets (``json://``, ``mailto://``,
``mqtt://``, plus ``TWILIGHT_NOTIFY_FILE``). Nothing is deployed, so no message is sent:
Apprise and its plugins must stay unloaded and cost nothing. RSS (``VmRSS``) is sampled
once a second; the peak of each of five slices is printed for both, side by side, and
the difference of the peaks. Goal: within 1 MB. Writes bench/results.md, section "idle
with notifications".
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.idle import SLICES, rss_mb  # noqa: E402
from bench.report import write_section  # noqa: E402
from bench.requests_per_poll import RESULTS  # noqa: E402
from bench.scenarios import Bench  # noqa: E402
from bench.site import Site  # noqa: E402
from testbed import engines, services  # noqa: E402
from testbed.rawclient import RawRegistry  # noqa: E402

SECTION = "idle with notifications"
GOAL_MB = 1.0


def notify_env(site: Site) -> dict[str, str]:
    """Every kind of target, none of them listening: an idle daemon never sends."""
    urls = site.dir / "notify-urls"
    urls.write_text("mqtt://127.0.0.1:9/twilight/deploys\n"
                    "mailto://127.0.0.1:9?from=agent@example.com&to=ops@example.com\n")
    urls.chmod(0o600)
    return {"TWILIGHT_NOTIFY": "json://127.0.0.1:9/hook",
            "TWILIGHT_NOTIFY_FILE": str(urls),
            "TWILIGHT_WEBHOOK_URL": "http://127.0.0.1:9/webhook"}


def side_by_side(bench: Bench, window_s: float) -> list[tuple[float, float]]:
    """``[(without, with)]`` peak RSS in MB per slice."""
    plain, notified = bench.site(), bench.site()
    try:
        for site in (plain, notified):
            site.up(site.push("v1"))
        procs = (plain.start_agent(30.0), notified.start_agent(30.0, **notify_env(notified)))
        time.sleep(2)  # the first poll's connections settle
        rows: list[tuple[float, float]] = []
        step = window_s / SLICES
        for _ in range(SLICES):
            t0 = time.monotonic()
            peak = [rss_mb(p.pid) for p in procs]
            while time.monotonic() - t0 < step:
                time.sleep(min(1.0, step))
                peak = [max(m, rss_mb(p.pid)) for m, p in zip(peak, procs, strict=True)]
            rows.append((peak[0], peak[1]))
            print(f"  slice {len(rows)}: without {peak[0]:.2f} MB, with {peak[1]:.2f} MB, "
                  f"difference {peak[1] - peak[0]:+.2f} MB", flush=True)
        for site, proc in ((plain, procs[0]), (notified, procs[1])):
            if proc.poll() is not None:
                raise RuntimeError(f"a daemon died while idle: {site.log_tail()}")
        return rows
    finally:
        plain.close()
        notified.close()


def table(rows: list[tuple[float, float]]) -> str:
    lines = ["| slice | idle RSS without targets, MB | with webhook + 3 Apprise targets, "
             "MB | difference, MB |", "|---:|---:|---:|---:|"]
    lines += [f"| {i} | {a:.2f} | {b:.2f} | {b - a:+.2f} |" for i, (a, b) in
              enumerate(rows, 1)]
    a, b = max(r[0] for r in rows), max(r[1] for r in rows)
    lines.append(f"| peak | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle_notify",
                                description=__doc__.splitlines()[0])
    p.add_argument("--window", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--no-write", action="store_true", help="do not touch bench/results.md")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="twbench-notify-"))
    client, raw = services.engine_client(), RawRegistry()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        rows = side_by_side(Bench(client, raw, workdir), args.window)
    finally:
        raw.close()
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = table(rows)
    print(text)
    diff = max(r[1] for r in rows) - max(r[0] for r in rows)
    print(f"idle RSS with notifications: {diff:+.2f} MB against without "
          f"(goal: within {GOAL_MB:g} MB): {'met' if abs(diff) <= GOAL_MB else 'NOT met'}")
    if not args.no_write:
        write_section(RESULTS, SECTION, (
            f"`.venv/bin/python -m bench.idle_notify --window {args.window:g}`, {stamp}, "
            f"engine {engines.running_key()}. Two idle daemons side by side (30 s polls, "
            "each on its own site), one with `TWILIGHT_WEBHOOK_URL` and three Apprise "
            "targets (`json://`, and `mqtt://` + `mailto://` from `TWILIGHT_NOTIFY_FILE`), "
            "one without; peak `VmRSS` per slice. Apprise is loaded only when a message "
            f"is sent. Goal: within {GOAL_MB:g} MB.\n\n" + text), first=False)
    return 0 if abs(diff) <= GOAL_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
