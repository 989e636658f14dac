"""Seeded chaos soak: the agent daemon under the real engine and registry, random events
from a seed, the invariants checked from outside.

    .venv/bin/python -m bench.chaos --minutes 60 [--seed N]

One compose site (``deploy/compose.yml``) runs the app; ``twilight-agent run`` follows
``main`` with cosign verification on, through a fault proxy in front of the bed's registry
(the engine pulls through it too). Every few seconds the seed picks an event: CI pushes a
build (good and signed at once, good and signed late, never signed, exiting at boot,
``/healthz`` 500, crashing after its gate), CI moves ``main`` back to an older build, the
agent is killed with SIGKILL (and started again, as systemd would), dockerd restarts, the
registry goes down or slow for a while, an operator pins or unpins (SIGHUP through
``twilight-agent pin``) or types ``docker compose up -d``. Whenever the agent is settled,
the invariants of ``bench/chaos_observe.py`` are checked against the engine, the service
and the ``.env``; at the end a good build must be deployed. Prints the seed, the events,
the availability and every invariant's count; exit 1 when any count is not 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from bench.site import CLI, Site, _clean_env, compose_flavour
from testbed import engines
from testbed.faultproxy import FaultProxy
from testbed.images import build_and_push
from testbed.rawclient import RawRegistry

WEIGHTS = {"push good": 5.0, "push late-signed": 2.0, "push unsigned": 1.0,
           "push exit-at-boot": 1.5, "push 500": 1.0, "push crash-later": 1.0,
           "track moved back": 1.0, "kill -9 agent": 2.0, "dockerd restart": 0.6,
           "registry down": 1.0, "registry slow": 1.0, "pin or unpin": 1.0,
           "compose up -d": 1.5}
COOLDOWN = {"dockerd restart": 180.0, "registry down": 25.0, "registry slow": 25.0}
MODES = {"push good": "good", "push late-signed": "good", "push unsigned": "good",
         "push exit-at-boot": "exit", "push 500": "500", "push crash-later": "die-later"}
AGENT = {"POLL_INTERVAL": "2s", "HEALTH_TIMEOUT": "15s", "HEALTH_INTERVAL": "0.3",
         "HEALTH_SOAK": "1", "WATCH": "12s", "VERIFY_GRACE": "25s", "PRUNE_AFTER": "1h",
         "VERIFY_ANNOTATIONS": "ref=refs/heads/main", "LOG_FORMAT": "json"}
SETTLE_S = 150.0  # the longest a check waits for the agent to be idle
REVISION = "org.opencontainers.image.revision"


@dataclass
class Build:
    n: int
    mode: str
    tag: str
    digest: str
    revision: str
    signed_at: float | None = None  # wall time its signing started

    @property
    def version(self) -> str:
        return f"c{self.n}-{self.mode}"

    @property
    def served(self) -> str:
        """What its /healthz says: the page is in the base build's layer, shared."""
        return f"base-{self.mode}"

    @property
    def bad(self) -> bool:
        return self.mode != "good"


class Builds:
    """New builds of each mode made in the registry from one base build per mode (a new
    config: revision, created, version; the same layers), as CI pushes them."""

    def __init__(self, client: docker.DockerClient, raw: RawRegistry, repo: str) -> None:
        self.raw, self.repo = raw, repo
        self.all: list[Build] = []
        self.base: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {}
        for mode in sorted(set(MODES.values())):
            img = build_and_push(client, repo, version=f"base-{mode}", mode=mode,
                                 branch="feature", die_after=5)
            body, media_type, _ = raw.get_manifest(repo, img.sha_tag)
            manifest = json.loads(body)
            config = json.loads(raw.get_blob(repo, manifest["config"]["digest"]))
            self.base[mode] = (manifest, config, media_type)

    def new(self, mode: str) -> Build:
        self.raw._tokens.clear()  # the bed's tokens live 5 minutes; a soak outlives them
        manifest, config, media_type = self.base[mode]
        revision, n = secrets.token_hex(20), len(self.all) + 1
        build = Build(n, mode, "sha-" + revision[:7], "", revision)
        cfg = json.loads(json.dumps(config))
        labels = cfg["config"]["Labels"]
        labels[REVISION] = revision
        labels["org.opencontainers.image.created"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()).replace(".000000", f".{n:06d}")
        labels["org.opencontainers.image.version"] = build.version
        cfg["config"]["Env"] = [e if not e.startswith("APP_VERSION=")
                                else f"APP_VERSION={build.version}" for e in cfg["config"]["Env"]]
        blob = json.dumps(cfg).encode()
        body = json.dumps(dict(manifest, config={**manifest["config"], "size": len(blob),
                                                 "digest": self.raw.put_blob(self.repo, blob)}))
        build.digest = self.raw.put_manifest(self.repo, build.tag, body.encode(), media_type)
        self.all.append(build)
        return build

    def of(self, digest: str | None) -> Build | None:
        return next((b for b in self.all if b.digest == digest), None)


class ChaosSite(Site):
    """The bench site, its image named through the fault proxy."""

    def __init__(self, client: docker.DockerClient, raw: RawRegistry, workdir: Path,
                 proxy: FaultProxy) -> None:
        super().__init__(client, raw, workdir)
        self.proxy = proxy

    @property
    def ref(self) -> str:
        return f"127.0.0.1:{self.proxy.port}/{self.repo}"

    def write_agent_config(self, pub: Path) -> Path:
        cfg = {"IMAGE": self.ref, "REGISTRY_URL": self.proxy.url,
               "COMPOSE_PROJECT": self.uid, "SERVICE": "app",
               "ENV_FILE": str(self.dir / ".env"), "STATE_DIR": str(self.dir / "state"),
               "RUNTIME_DIRECTORY": str(self.dir / "run"), "VERIFY_KEY": str(pub), **AGENT}
        self.config_path = self.dir / "agent.env"
        self.config_path.write_text("".join(f"TWILIGHT_{k}={v}\n" for k, v in cfg.items()))
        return self.config_path

    def spawn_agent(self) -> subprocess.Popen[bytes]:
        self.log_path = self.dir / "agent.log"
        with open(self.log_path, "ab") as log:
            self.daemon = subprocess.Popen(
                [str(CLI), "--config", str(self.config_path), "run"], stdout=log,
                stderr=log, stdin=subprocess.DEVNULL, env=_clean_env())
        return self.daemon

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CLI), "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=timeout, env=_clean_env())

    def status(self) -> dict[str, Any] | None:
        with contextlib.suppress(Exception):
            p = self.cli("status", "--json", timeout=30)
            if p.returncode == 0:
                return dict(json.loads(p.stdout))
        return None

    def app_containers(self) -> list[Any]:
        label = f"com.docker.compose.project={self.uid}"
        seen = {c.id: c for c in self.client.containers.list(all=True, filters={"label": label})}
        seen.update({c.id: c for c in self.client.containers.list(
            all=True, filters={"name": self.uid})})
        return list(seen.values())

    def env_digest(self) -> str:
        m = re.search(r"^IMAGE_DIGEST=@(.*)$", (self.dir / ".env").read_text(), re.M)
        return m.group(1) if m else ""

    def compose_up(self) -> None:
        flavour = compose_flavour()
        subprocess.run([*engines.compose_argv(flavour), "up", "-d"], cwd=self.dir, check=True,
                       capture_output=True, timeout=180, env=engines.compose_env(flavour))


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped early: still clean up (finally)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    from bench.chaos_run import Chaos  # the driver; this module holds its parts
    with tempfile.TemporaryDirectory(prefix="twchaos-") as tmp:
        print(f"chaos soak: seed {seed}, {args.minutes:g} min", flush=True)
        report = Chaos(seed, args.minutes * 60, Path(tmp), verbose=True).run()
    print(report.text())
    return 0 if report.ledger.clean else 1


if __name__ == "__main__":
    sys.exit(main())

