"""Behind a reverse proxy: failed requests during a swap, agent vs the shell flow (#15).

    .venv/bin/python -m bench.proxy [--runs 3] [--no-write]

Each run makes two compose projects from ``bench/compose-proxy.yml`` (no host port; the
service is reached as ``app`` on the project's network) with nginx from Debian's package
in front (``testbed.proxy``: ``resolver 127.0.0.11 valid=1s``, the next upstream on
error), and a 50 ms prober through nginx. The agent deploys one (daemon, defaults,
``TWILIGHT_SWAP=auto`` which picks start-first here, the health URL on the new
container's own address); ``bench/shell_deploy.sh`` deploys the other (compose pull +
up -d, health checked through the proxy) at the same time. Two cases: a healthy build,
and a build whose ``/healthz`` answers 500 (rolled back by both). Counted: requests that
did not get a 2xx through the proxy, from the push to the end of the deploy; goal 0 for
the agent in both cases. Writes bench/results.md, section "behind a reverse proxy".
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.probe import Prober, Sample, longest_outage  # noqa: E402
from bench.report import write_section  # noqa: E402
from bench.requests_per_poll import RESULTS  # noqa: E402
from bench.site import Site  # noqa: E402
from testbed import engines, services  # noqa: E402
from testbed.images import APP_PORT, AppImage  # noqa: E402
from testbed.proxy import Proxy  # noqa: E402
from testbed.rawclient import RawRegistry  # noqa: E402

SECTION = "behind a reverse proxy: agent vs shell flow"
PROXY_COMPOSE = ROOT / "bench" / "compose-proxy.yml"
Figures = dict[str, float]


class ProxySite(Site):
    """A bench site whose app has no host port; ``port`` is nginx's, in front of it."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        shutil.copy(PROXY_COMPOSE, self.dir / "docker-compose.yml")
        self.proxy = Proxy(self.client, name=f"{self.uid}-proxy",
                           network=f"{self.uid}_default", upstream="app",
                           upstream_port=APP_PORT, port=self.port)

    def up(self, img: AppImage) -> None:
        self.write_env(img.sha_tag)  # APP_PORT= names nginx: the shell flow checks through it
        self.compose("up", "-d")
        self.proxy.start()
        self.wait_serving(img.version)

    def agent_config(self, poll_interval: float, state: str = "state") -> Path:
        path = super().agent_config(poll_interval, state)
        with path.open("a") as fh:
            fh.write(f"TWILIGHT_HEALTH_URL=http://{{address}}:{APP_PORT}/healthz\n")
        return path

    def close(self) -> None:
        self.stop_agent()
        self.proxy.remove()  # before compose down, which must remove the network
        super().close()


def failed_since(samples: list[Sample], t0: float) -> tuple[int, int]:
    """(requests sent at or after ``t0`` that got no 2xx, all requests sent since)."""
    since = [s for s in samples if s.t >= t0]
    return sum(1 for s in since if not s.ok), len(since)


def agent_run(site: ProxySite, mode: str) -> Figures:
    v1 = site.push("v1")
    site.up(v1)
    site.start_agent(2.0)
    new = site.push("v2", mode=mode, main=False)
    want = "deployed" if mode == "good" else "rolled_back"
    with Prober(site.port) as pr:
        t0 = site.move_main(new)
        done = site.wait_agent("deploy_finished", 180)
        time.sleep(1)  # what the proxy serves right after the deploy counts too
    if done.get("outcome") != want:
        raise RuntimeError(f"agent: {mode} build ended {done.get('outcome')}, not {want}")
    site.wait_serving((new if mode == "good" else v1).version, timeout=5)
    return figures(pr.samples, t0)


def shell_run(site: ProxySite, mode: str) -> Figures:
    v1 = site.push("v1")
    site.up(v1)
    new = site.push("v2", mode=mode)
    with Prober(site.port) as pr:
        t0 = time.time()
        code, _ = site.shell_deploy(new.sha_tag)
        site.wait_serving((new if mode == "good" else v1).version, timeout=30)
        time.sleep(1)
    if code != (0 if mode == "good" else 1):
        raise RuntimeError(f"shell flow: {mode} build exited {code}")
    return figures(pr.samples, t0)


def figures(samples: list[Sample], t0: float) -> Figures:
    failed, sent = failed_since(samples, t0)
    _, gap_ms = longest_outage(samples, since=t0)
    return {"failed": failed, "sent": sent, "outage_ms": gap_ms}


def side_by_side(workdir: Path, mode: str) -> tuple[Figures, Figures]:
    """One run: the agent and the shell flow, each on its own site, at the same time."""
    client, raw = services.engine_client(), RawRegistry()
    sites = [ProxySite(client, raw, workdir), ProxySite(client, raw, workdir)]
    try:
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(agent_run, sites[0], mode)
            s = pool.submit(shell_run, sites[1], mode)
            return a.result(), s.result()
    finally:
        for site in sites:
            site.close()


def row(name: str, agent: list[Figures], shell: list[Figures]) -> str:
    def cell(runs: list[Figures], key: str) -> str:
        vals = [int(r[key]) for r in runs]
        return f"{sorted(vals)[len(vals) // 2]} ({min(vals)}-{max(vals)})"
    return (f"| {name} | {cell(agent, 'failed')} of ~{int(agent[0]['sent'])} | "
            f"{cell(shell, 'failed')} of ~{int(shell[0]['sent'])} | "
            f"{cell(agent, 'outage_ms')} | {cell(shell, 'outage_ms')} | {len(agent)} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    p.add_argument("--no-write", action="store_true", help="do not touch bench/results.md")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="twbench-proxy-"))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["| case | agent: failed requests, median (min-max) | shell flow: failed | "
             "agent: longest wait for a 2xx, ms | shell: longest wait, ms | runs |",
             "|---|---:|---:|---:|---:|---:|"]
    for mode, name in (("good", "healthy build"), ("500", "`/healthz` answers 500")):
        runs = [side_by_side(workdir, mode) for _ in range(args.runs)]
        for i, (a, s) in enumerate(runs, 1):
            print(f"proxy {mode} {i}: agent {a}  shell {s}", flush=True)
        lines.append(row(name, [a for a, _ in runs], [s for _, s in runs]))
    shutil.rmtree(workdir, ignore_errors=True)
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        key = engines.running_key()
        write_section(RESULTS, SECTION, (
            f"`.venv/bin/python -m bench.proxy --runs {args.runs}`, {stamp}, engine {key}. "
            "The agent (daemon, defaults: start-first chosen by `auto`, health URL on the "
            "new container's address, 2 s polls) and `bench/shell_deploy.sh` (compose pull "
            "+ up -d, health through the proxy, 30 x 2 s) each deploy their own compose "
            "project behind its own nginx, at the same time; a 50 ms prober through each "
            "nginx counts requests without a 2xx from the push to 1 s after the deploy "
            "ended. Goal: 0 for the agent in both cases.\n\n" + table), first=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
