"""The demo's narrator: v1 running, v2 picked up and healthy, v3 rolled back and quarantined.

Run through ``bash scripts/demo`` (which installs and starts the bed). Exits 0 only when
every step happened as narrated; cleans up what it created either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed import engines  # noqa: E402
from testbed.images import build_and_push  # noqa: E402
from testbed.services import REGISTRY_HOST, REGISTRY_URL, engine_client  # noqa: E402
from testbed.util import wait_until  # noqa: E402

REPO = "demo/twilight-drive"
PROJECT = "twilightdemo"
AGENT = str(ROOT / ".venv" / "bin" / "twilight-agent")
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def compose_flavour() -> str:
    """Compose v2 (``docker compose``) on the 26 engine, where v1 cannot bring a service
    back; on Debian 12's 20.10 engine, its own docker-compose 1.29."""
    return "v2" if engines.running_key() == "26" else "v1"


def compose(workdir: Path, *args: str) -> None:
    flavour = compose_flavour()
    subprocess.run([*engines.compose_argv(flavour), "-p", PROJECT,
                    "-f", str(ROOT / "deploy" / "compose.yml"),
                    "--env-file", str(workdir / ".env"), *args],
                   check=True, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env=engines.compose_env(flavour))


def agent(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, "--config", str(workdir / "agent.env"), *args],
                          capture_output=True, text=True, timeout=120)


def status(workdir: Path) -> dict:
    out = agent(workdir, "status", "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def healthz(port: int) -> str:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        return f"{r.status_code} {r.text.strip()}"
    except httpx.HTTPError as exc:
        return type(exc).__name__


def write_config(workdir: Path, tag: str, port: int) -> None:
    (workdir / ".env").write_text(
        "# compose settings for the demo app\n"
        f"IMAGE_REPO={REGISTRY_HOST}/{REPO}\nIMAGE_TAG={tag}\nAPP_PORT={port}\n")
    (workdir / "agent.env").write_text("\n".join([
        f"TWILIGHT_IMAGE={REGISTRY_HOST}/{REPO}",
        f"TWILIGHT_REGISTRY_URL={REGISTRY_URL}",
        f"TWILIGHT_COMPOSE_PROJECT={PROJECT}",
        "TWILIGHT_SERVICE=app",
        f"TWILIGHT_ENV_FILE={workdir / '.env'}",
        f"TWILIGHT_HEALTH_URL=http://127.0.0.1:{port}/healthz",
        "TWILIGHT_HEALTH_TIMEOUT=20s", "TWILIGHT_HEALTH_INTERVAL=0.5s",
        "TWILIGHT_HEALTH_SOAK=2s", "TWILIGHT_POLL_INTERVAL=2s", "TWILIGHT_WATCH=0",
        f"TWILIGHT_STATE_DIR={workdir / 'state'}", "TWILIGHT_LOG_FORMAT=json", ""]))


def run_story(workdir: Path, docker_client) -> None:
    port = 18080
    say("CI pushes v1 of the app to the local registry (tags sha-<7>, main, latest)")
    v1 = build_and_push(docker_client, REPO, version="v1")
    write_config(workdir, v1.sha_tag, port)
    flavour = compose_flavour()
    say(f"engine {engines.running_key()}; compose {flavour} "
        f"({'docker compose' if flavour == 'v2' else 'docker-compose'} "
        f"{engines.compose_version(flavour)})")
    say(f"operator starts v1 with deploy/compose.yml (IMAGE_TAG={v1.sha_tag})")
    compose(workdir, "up", "-d")
    wait_until(lambda: healthz(port).startswith("200"), 30, what="v1 to answer")
    say(f"/healthz -> {healthz(port)}")

    say("the agent starts: `twilight-agent run`, following `main`, polling every 2 s")
    log = open(workdir / "agent.log", "w")  # noqa: SIM115 - closed in finally below
    daemon = subprocess.Popen([AGENT, "--config", str(workdir / "agent.env"), "run"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (status(workdir).get("current") or {}).get("digest") == v1.digest,
                   30, what="the agent to see v1 running")
        say(f"agent: up to date at {v1.sha_tag} (nothing to do)")

        say("CI pushes v2 (good)")
        v2 = build_and_push(docker_client, REPO, version="v2")
        wait_until(lambda: (status(workdir).get("current") or {}).get("digest") == v2.digest,
                   60, interval=0.3, what="v2 to be deployed")
        say(f"agent: deployed {v2.sha_tag}, health gate passed; /healthz -> {healthz(port)}")
        env_line = [x for x in (workdir / ".env").read_text().splitlines()
                    if x.startswith("IMAGE_TAG=")]
        say(f".env now says {env_line[0]} (so `docker compose up -d` by hand stays on v2)")

        say("CI pushes v3 (broken: exits at boot)")
        v3 = build_and_push(docker_client, REPO, version="v3", mode="exit")
        wait_until(lambda: any(q["digest"] == v3.digest
                               for q in status(workdir).get("quarantined", [])),
                   60, interval=0.3, what="v3 to be rolled back and quarantined")
        wait_until(lambda: healthz(port) == "200 ok v2", 20, what="v2 to serve again")
        st = status(workdir)
        assert st["current"]["digest"] == v2.digest, st
        say(f"agent: v3 failed its health gate, rolled back; v2 serves: {healthz(port)}")
        say(f"agent: {v3.digest[:19]}... quarantined: it will not be tried again")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    print("\n$ twilight-agent status\n" + agent(workdir, "status").stdout)
    print("$ twilight-agent history\n" + agent(workdir, "history").stdout)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="twilight-demo-"))
    client = engine_client()
    ok = False
    try:
        run_story(workdir, client)
        ok = True
    except (TimeoutError, AssertionError, subprocess.CalledProcessError) as exc:
        say(f"demo FAILED: {exc}")
        log = workdir / "agent.log"
        if log.exists():
            print("last agent log lines:\n" + "\n".join(log.read_text().splitlines()[-25:]))
    finally:
        say("cleaning up: compose down, demo images, state")
        try:
            compose(workdir, "down", "-v", "--remove-orphans")
        except subprocess.CalledProcessError as exc:
            print(f"compose down failed: {exc.stderr}", file=sys.stderr)
        for c in client.containers.list(all=True, filters={"label":
                                                            f"com.docker.compose.project={PROJECT}"}):
            c.remove(force=True)
        # The low-level list (no inspect per image: others may remove images meanwhile).
        for img in client.api.images():
            refs = (img.get("RepoTags") or []) + (img.get("RepoDigests") or [])
            if any(REPO in r for r in refs):
                with contextlib.suppress(docker.errors.NotFound):
                    client.images.remove(img["Id"], force=True)
        client.close()
        if os.environ.get("TWILIGHT_DEMO_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
    say("demo finished: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
