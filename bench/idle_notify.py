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

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import idle_pair  # noqa: E402
from bench.site import Site  # noqa: E402


def notify_env(site: Site) -> dict[str, str]:
    """Every kind of target, none of them listening: an idle daemon never sends."""
    urls = site.dir / "notify-urls"
    urls.write_text("mqtt://127.0.0.1:9/twilight/deploys\n"
                    "mailto://127.0.0.1:9?from=agent@example.com&to=ops@example.com\n")
    urls.chmod(0o600)
    return {"TWILIGHT_NOTIFY": "json://127.0.0.1:9/hook",
            "TWILIGHT_NOTIFY_FILE": str(urls),
            "TWILIGHT_WEBHOOK_URL": "http://127.0.0.1:9/webhook"}


def prepare(plain: Site, notified: Site) -> dict[str, str]:
    for site in (plain, notified):
        site.up(site.push("v1"))
    return notify_env(notified)


PAIR = idle_pair.Pair(
    module="bench.idle_notify", doc=__doc__ or "", section="idle with notifications",
    feature="with notifications", without="idle RSS without targets",
    with_="with webhook + 3 Apprise targets",
    compared="one with `TWILIGHT_WEBHOOK_URL` and three Apprise targets (`json://`, and "
             "`mqtt://` + `mailto://` from `TWILIGHT_NOTIFY_FILE`), one without",
    note="Apprise is loaded only when a message is sent.", prepare=prepare)


def main(argv: list[str] | None = None) -> int:
    return idle_pair.main(PAIR, argv)


if __name__ == "__main__":
    raise SystemExit(main())
