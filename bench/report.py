"""Figures -> the table: median (min-max) per flow, agent/shell ratio, the issue's targets."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

DASH = "\N{EN DASH}"
Runs = dict[str, list[dict[str, float]]]  # group -> one dict of figures per run


@dataclass(frozen=True)
class Row:
    label: str
    unit: str
    agent: tuple[str, str] | None  # (group, figure)
    shell: tuple[str, str] | None = None
    target: str = ""
    check: Callable[[float, float | None], bool] | None = None  # (agent, shell) -> met
    digits: int = 2


ROWS = [
    Row("detection: push of `main` -> deploy started, poll 5 s", "s", ("swap_agent", "detect_s")),
    Row("detection: push of `main` -> deploy started, poll 30 s", "s", ("detect30", "detect_s")),
    Row("healthy deploy: started -> done (agent: incl. 10 s soak)", "s",
        ("swap_agent", "total_s"), ("swap_shell", "total_s")),
    Row("  image pull", "s", ("swap_agent", "pull_s"), ("swap_shell", "pull_s")),
    Row("  app boot: container start -> first 2xx (prober)", "s",
        ("swap_agent", "boot_s"), ("swap_shell", "boot_s")),
    Row("  overhead: total - pull - boot - soak", "s",
        ("swap_agent", "overhead_s"), ("swap_shell", "overhead_s"), "<= 1.0 s",
        lambda a, s: a <= 1.0),
    Row("    agent: snapshot (PREPARE)", "s", ("swap_agent", "prepare_s"), digits=3),
    Row("    agent: park old, create, stop old, start new (SWAP)", "s", ("swap_agent", "swap_s")),
    Row("    agent: VERIFY beyond boot + soak (probe cadence)", "s",
        ("swap_agent", "verify_wait_s")),
    Row("    agent: env, tag, prune (COMMIT)", "s", ("swap_agent", "commit_s"),
        digits=3),
    Row("service gap on a healthy swap: last 2xx -> next 2xx", "ms",
        ("swap_agent", "gap_ms"), ("swap_shell", "gap_ms"), "ratio <= 0.9",
        lambda a, s: s is not None and a <= 0.9 * s, 0),
    Row("  failed requests in a row (50 ms prober)", "", ("swap_agent", "gap_failed"),
        ("swap_shell", "gap_failed"), digits=0),
    Row("heal, exit at boot: first exit -> previous 2xx", "s",
        ("heal_exit_agent", "heal_s"), ("heal_exit_shell", "heal_s"), "<= 5 s",
        lambda a, s: a <= 5.0),
    Row("  exit -> verdict", "s", ("heal_exit_agent", "verdict_s"),
        ("heal_exit_shell", "verdict_s")),
    Row("heal, /healthz 500: first 500 -> previous 2xx", "s",
        ("heal_500_agent", "heal_s"), ("heal_500_shell", "heal_s"), "<= 15 s",
        lambda a, s: a <= 15.0),
    Row("  first 500 -> verdict", "s", ("heal_500_agent", "verdict_s"),
        ("heal_500_shell", "verdict_s")),
    Row("  verdict -> previous 2xx", "s", ("heal_500_agent", "verdict_to_ok_s"),
        ("heal_500_shell", "verdict_to_ok_s"), "<= 3 s", lambda a, s: a <= 3.0),
    Row("idle RSS (peak per slice)", "MB", ("idle", "rss_mb"), None, "<= 45 MB",
        lambda a, s: a <= 45.0, 1),
    Row("idle CPU, 30 s polls", "%", ("idle", "cpu_pct"), None, "<= 0.2 %",
        lambda a, s: a <= 0.2, 3),
    Row("start -> READY=1", "s", ("ready", "ready_s"), None, "<= 1.5 s",
        lambda a, s: a <= 1.5),
    Row("HTTP requests per idle poll, {n:,} tags", "", ("rpp_{n}", "per_poll"), None,
        "<= 1, flat", lambda a, s: a <= 1.0),
]


def expand(runs: Runs) -> list[Row]:
    """ROWS, the requests-per-poll row once per tag count measured."""
    counts = sorted(int(g[4:]) for g in runs if g.startswith("rpp_"))
    out = []
    for row in ROWS:
        if row.agent and "{n}" in row.agent[0]:
            out += [replace(row, label=row.label.format(n=n), agent=(f"rpp_{n}", row.agent[1]))
                    for n in counts]
        else:
            out.append(row)
    return out


def values(runs: Runs, where: tuple[str, str] | None) -> list[float]:
    if where is None:
        return []
    group, key = where
    return [float(r[key]) for r in runs.get(group, []) if key in r]


def cell(xs: list[float], digits: int) -> str:
    if not xs:
        return "—"
    med = statistics.median(xs)
    if len(xs) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(xs):.{digits}f}{DASH}{max(xs):.{digits}f})"


def table(runs: Runs) -> str:
    lines = [f"| measure | unit | agent: median (min{DASH}max) | shell flow | agent/shell | "
             "n | target | |", "|---|---|---:|---:|---:|---:|---|---|"]
    for row in expand(runs):
        cells = figures(runs, row)
        if cells:
            lines.append("| " + " | ".join([row.label, row.unit, *cells]) + " |")
    return "\n".join(lines)


def figures(runs: Runs, row: Row) -> list[str] | None:
    """The agent, shell, ratio, n, target and verdict cells of one measure; None when
    neither flow measured it."""
    a, s = values(runs, row.agent), values(runs, row.shell)
    if not a and not s:
        return None
    am = statistics.median(a) if a else None
    sm = statistics.median(s) if s else None
    ratio = f"{am / sm:.2f}" if am is not None and sm else "—"
    verdict = ""
    if row.check is not None and am is not None:
        verdict = "met" if row.check(am, sm) else "**missed**"
    n = f"{len(a)}" + (f" / {len(s)}" if s else "")
    return [cell(a, row.digits), cell(s, row.digits), ratio, n, row.target or "—", verdict]


def write_section(path: Path, title: str, body: str, *, first: bool = True) -> None:
    """Replace the ``## title`` section of ``path``, leaving the rest; a new section goes
    before the older ones (``first``) or after them."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    heading = f"## {title}"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = f"{heading}\n\n{body.strip()}\n\n"
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif not first:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        head, sep, rest = text.partition("\n## ")  # ours goes first, before older sections
        text = head.rstrip("\n") + "\n\n" + section + (sep.lstrip("\n") + rest if sep else "")
    path.write_text(text.rstrip("\n") + "\n")


# The figures the by-engine table shows: the ones with a target, and the healthy deploy.
HEADLINE = ("healthy deploy: started -> done (agent: incl. 10 s soak)",
            "  overhead: total - pull - boot - soak",
            "    agent: park old, create, stop old, start new (SWAP)",
            "service gap on a healthy swap: last 2xx -> next 2xx",
            "heal, exit at boot: first exit -> previous 2xx",
            "heal, /healthz 500: first 500 -> previous 2xx",
            "  verdict -> previous 2xx",
            "start -> READY=1")


def engine_table(by_engine: dict[str, Runs]) -> str:
    """The headline rows, one line per engine that measured them."""
    lines = [f"| measure | unit | engine | agent: median (min{DASH}max) | shell flow | "
             "agent/shell | n | target | |", "|---|---|---|---:|---:|---:|---:|---|---|"]
    for label in HEADLINE:
        for engine, runs in by_engine.items():
            row = next((r for r in expand(runs) if r.label == label), None)
            cells = figures(runs, row) if row is not None else None
            if cells:
                lines.append("| " + " | ".join([row.label.strip(), row.unit, engine, *cells])
                             + " |")
    return "\n".join(lines)
