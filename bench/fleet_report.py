"""The fleet load model's figures -> results.md, the plot and the rate-limit arithmetic."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from bench.fleet_load import INTERVAL_S, RENEW_S, Phase, percentile
from bench.report import write_section

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results.md"
PLOT = ROOT / "fleet_load.png"
SECTION = "fleet load model"
REST_LIMITS = "https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api"
GHCR_DOCS = ("https://docs.github.com/en/packages/working-with-a-github-packages-registry/"
             "working-with-the-container-registry")
REST_PER_HOUR = 5000  # the REST API's primary limit per authenticated user (REST_LIMITS)


def conditions() -> dict[str, str]:
    from bench.run import conditions as bench_conditions

    return bench_conditions()


def ms(xs: list[float], q: float) -> float:
    return 1000 * percentile(xs, q)


def trio(xs: list[float]) -> str:
    if not xs:
        return "—"
    return " / ".join(f"{ms(xs, q):.1f}" for q in (50, 95, 99))


def rate(errors: int, total: float) -> str:
    return f"{100 * errors / total:.2f} %" if total else "—"


def figures(phase: Phase) -> dict[str, float]:
    """The numbers of one phase the table, the plot and the conclusions use."""
    t = phase.tally
    polls = len(t.polls) + sum(t.failed.values())
    reg, tok = len(t.latency["registry"]), len(t.latency["token"])
    span = max(t.finished) - min(t.finished) if len(t.finished) > 1 else math.nan
    return {"polls": polls, "ok": len(t.polls), "registry": reg, "token": tok,
            "per_poll": (reg + tok) / polls if polls else math.nan,
            "tokens_per_poll": tok / polls if polls else math.nan,
            "achieved": (len(t.finished) - 1) / span * 60 if span and span > 0 else math.nan,
            "reg_err": 100 * t.errors["registry"] / reg if reg else math.nan,
            "tok_err": 100 * t.errors["token"] / tok if tok else math.nan,
            **{f"reg_p{q}": ms(t.latency["registry"], q) for q in (50, 95, 99)},
            **{f"tok_p{q}": ms(t.latency["token"], q) for q in (50, 95, 99)}}


def dropped(phase: Phase) -> str:
    return "—" if phase.overflows is None else f"{phase.overflows:,}"


def cpu_cell(phase: Phase) -> str:
    c = phase.cpu
    return " / ".join(f"{c[k]:.0f}" if k in c else "—"
                      for k in ("pollers", "registry", "token server"))


def window_table(phases: list[Phase]) -> str:
    lines = ["| hosts (1 poll/min each) | polls done / planned | polls/min achieved | "
             "requests/poll | token fetches/poll | registry ms p50 / p95 / p99 | registry "
             "errors | token server ms p50 / p95 / p99 (n) | token errors | poll p99 ms | "
             "start lag p99 ms | CPU % pollers / registry / token server | listen "
             "overflows |", "|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---|---:|"]
    for ph in phases:
        f, t = figures(ph), ph.tally
        lines.append(
            f"| {ph.hosts:,} | {f['ok']:,.0f} / {ph.planned:,} | {f['achieved']:,.0f} | "
            f"{f['per_poll']:.3f} | {f['tokens_per_poll']:.3f} | {trio(t.latency['registry'])} "
            f"| {rate(t.errors['registry'], f['registry'])} | {trio(t.latency['token'])} "
            f"({f['token']:,.0f}) | {rate(t.errors['token'], f['token'])} | "
            f"{ms(t.polls, 99):.1f} | {ms(t.lag, 99):.1f} | {cpu_cell(ph)} | {dropped(ph)} |")
    return "\n".join(lines)


def cold_table(phases: list[Phase]) -> str:
    lines = ["| new hosts, all at once | seconds | hosts/s | requests/host | registry ms "
             "p50 / p95 / p99 | token server ms p50 / p95 / p99 | failed | CPU % pollers / "
             "registry / token server | listen overflows |",
             "|---:|---:|---:|---:|---|---|---:|---|---:|"]
    for ph in phases:
        f, t = figures(ph), ph.tally
        lines.append(f"| {ph.hosts:,} | {ph.seconds:.1f} | {ph.hosts / ph.seconds:,.0f} | "
                     f"{f['per_poll']:.2f} | {trio(t.latency['registry'])} | "
                     f"{trio(t.latency['token'])} | {sum(t.failed.values())} | "
                     f"{cpu_cell(ph)} | {dropped(ph)} |")
    return "\n".join(lines)


def cpu_ms_per_poll(phase: Phase) -> dict[str, float]:
    """CPU milliseconds each process spent per poll done in the window."""
    polls = figures(phase)["polls"] or math.nan
    return {k: 10 * v * phase.seconds / polls for k, v in phase.cpu.items()}


def limits_text(windows: list[Phase]) -> str:
    """Which process bounds the fleet on this machine, from CPU per poll at the top level."""
    top = windows[-1]
    per = cpu_ms_per_poll(top)
    if not {"pollers", "registry", "token server"} <= per.keys():
        return ("CPU of the registry and the token server not measured (their pids were "
                "not found in the bed's state.json): no ceiling is estimated.")
    cores = os.cpu_count() or 1
    shared = 60 * 1000 * cores / sum(per.values())
    gil = 60 * 1000 / per["pollers"] if per["pollers"] > 0 else math.inf
    server_side = 60 * 1000 * cores / (per["registry"] + per["token server"])
    share = {k: v / sum(per.values()) for k, v in per.items()}
    first = (f"the machine's {cores} cores, shared: pollers {share['pollers']:.0%}, "
             f"registry {share['registry']:.0%}, token server {share['token server']:.0%} "
             "of the CPU a poll costs" if shared <= gil else
             "the pollers' own process (one core: the GIL)")
    return (
        f"**What limits the fleet on this bed.** CPU per poll at {top.hosts:,} hosts: "
        f"pollers {per['pollers']:.2f} ms, registry {per['registry']:.2f} ms, token server "
        f"{per['token server']:.2f} ms (its share of the renewals). Extrapolated linearly "
        f"(not a measured saturation): all three on this machine's {cores} cores run out "
        f"at about {shared:,.0f} hosts at one poll a minute; the pollers' one Python "
        f"process (GIL) at about {gil:,.0f}; the registry and token server alone, with "
        f"the pollers elsewhere as in a real fleet, at about {server_side:,.0f}. First "
        f"limit here: {first}. {strain(windows)}")


def strain(windows: list[Phase]) -> str:
    calm = all(not p.tally.failed and not any(p.tally.errors.values())
               and percentile(p.tally.lag, 99) < 0.1 for p in windows)
    return ("No level measured came near it: no failed request, and every poll started "
            "within 100 ms of its schedule." if calm else
            "A level measured shows strain: see its errors and start lag.")


def cold_text(colds: list[Phase], windows: list[Phase]) -> str:
    dropped_total = sum(p.overflows or 0 for p in colds)
    in_windows = sum(p.overflows or 0 for p in windows)
    if not dropped_total:
        return ""
    return (f"The cold starts' second-long token-server percentiles: the kernel counted "
            f"{dropped_total:,} listen-queue overflows during them. The bed's token server "
            "is Python's `ThreadingHTTPServer`, whose listen backlog is socketserver's "
            "default of 5; with every poller thread connecting at once the kernel drops "
            "the SYN and the client's retry comes a second later. A property of the "
            "bed's stand-in under a burst, not of the agent nor of ghcr.io; the windows, "
            f"at the fleet's steady rate, had {in_windows:,} between them.")


def ghcr_text(windows: list[Phase]) -> str:
    per_poll = figures(windows[-1])["per_poll"]
    per_hour = per_poll * 3600 / INTERVAL_S
    shared = math.floor(REST_PER_HOUR / per_hour)
    return (
        f"**GHCR.** Measured: {per_poll:.3f} requests per idle poll per host (one `HEAD` "
        f"plus a token renewal on {INTERVAL_S / RENEW_S:.1%} of polls with the bed's "
        f"{RENEW_S + 10:.0f} s tokens), so {per_hour:.1f} requests per host per hour at a "
        f"one-minute interval. GitHub publishes no request-rate limit for ghcr.io's "
        f"registry API (`/v2/`, pulls, `HEAD`s) or its token endpoint: the Container "
        f"registry documentation ({GHCR_DOCS}) names none, and GitHub's published numbers, "
        f"60 requests an hour per IP unauthenticated and 5,000 an hour per authenticated "
        f"user ({REST_LIMITS}), are the REST API's (api.github.com), not ghcr.io's. So no "
        f"published number bounds the fleet at a one-minute interval: the largest fleet "
        f"under GHCR's published limits is not limited by them, which is not a promise "
        f"that ghcr.io never throttles (a 429 is retried with backoff, as the registry "
        f"asks). Only as an assumption, if ghcr.io counted like the REST API: one "
        f"PAT shared by the fleet would hold {shared:,} hosts (5,000 / {per_hour:.1f}); a "
        f"PAT per host would not bind ({per_hour:.0f} of 5,000 an hour); and anonymous "
        f"pulls from one IP (60 an hour) would not hold even one host at one poll a "
        f"minute. Real ghcr.io token lifetimes may differ from the bed's, which changes "
        f"the token share, not the one `HEAD` per poll.")


def plot(windows: list[Phase], path: Path) -> bool:
    """Latency percentiles and error rates against fleet size; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot",
              file=sys.stderr)
        return False
    xs = [p.hosts for p in windows]
    figs = [figures(p) for p in windows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key, title in ((axes[0], "reg", "registry"), (axes[1], "tok", "token server")):
        for q, style in ((50, "o-"), (95, "s--"), (99, "^:")):
            ax.plot(xs, [f[f"{key}_p{q}"] for f in figs], style, label=f"p{q}")
        ax.set(xscale="log", title=f"{title} request latency", xlabel="hosts (1 poll/min)",
               ylabel="ms to response headers", xticks=xs, xticklabels=[f"{x:,}" for x in xs])
        ax.set_ylim(bottom=0)
        ax.legend()
        ax.grid(True, alpha=0.3)
    axes[2].plot(xs, [f["reg_err"] for f in figs], "o-", label="registry")
    axes[2].plot(xs, [f["tok_err"] for f in figs], "s--", label="token server")
    axes[2].set(xscale="log", title="error rate (5xx, 429, transport)",
                xlabel="hosts (1 poll/min)", ylabel="% of requests", xticks=xs,
                xticklabels=[f"{x:,}" for x in xs])
    worst = [f[k] for f in figs for k in ("reg_err", "tok_err") if not math.isnan(f[k])]
    axes[2].set_ylim(0, max([1.0, *worst]) * 1.1)
    axes[2].legend()
    axes[2].grid(True, alpha=0.3)
    fig.suptitle("twilight-agent fleet load model: idle polls on the test bed's registry")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def note(before: dict[str, str], after: dict[str, str], window_s: float,
         args: argparse.Namespace) -> str:
    cmd = "python -m bench.fleet_load" + (" --quick" if args.quick else "")
    return (
        f"`{cmd}`, {before['utc']} to {after['utc'][11:]}; load average {before['load']} at "
        f"the start, {after['load']} at the end; {before['cpu']}, kernel {before['kernel']}; "
        f"the bed's registry (docker-registry, token auth) and token server (Python) on "
        f"loopback, on the same machine as the pollers. Each host: the agent's "
        f"`HttpRegistry`, its own session and token cache, a PAT, `resolve_track(\"main\", "
        f"known)` with main unchanged. Each level: a {window_s:.0f} s window at the fleet's "
        f"real rate (hosts/60 polls a second, evenly spread, one poll per host), "
        f"{args.workers} poller threads; {INTERVAL_S / RENEW_S:.1%} of the polls find their "
        f"token just expired, as at a one-minute interval with the bed's "
        f"{RENEW_S + 10:.0f} s tokens. Latency: request sent to response headers. Errors: "
        f"5xx, 429 and transport failures (a registry's 401 challenge is not one). CPU: "
        f"% of one core over the window. Hosts are started cold before the window of the "
        f"level that first needs them.")


def report(phases: list[Phase], before: dict[str, str], window_s: float,
           args: argparse.Namespace) -> int:
    windows = [p for p in phases if p.name != "cold start"]
    colds = [p for p in phases if p.name == "cold start"]
    parts = [note(before, conditions(), window_s, args), window_table(windows),
             "Cold starts (hosts new to a level, all submitted at once):", cold_table(colds),
             cold_text(colds, windows), limits_text(windows), ghcr_text(windows),
             "![latency and errors against fleet size](fleet_load.png)"]
    body = "\n\n".join(x for x in parts if x)
    print(body)
    if not args.no_write:
        write_section(RESULTS, SECTION, body, first=False)
        plot(windows, PLOT)
    failed = sum(sum(p.tally.failed.values()) for p in phases)
    return 1 if failed or any(len(p.tally.polls) < p.planned for p in windows) else 0
