"""The demo's narrator: v1 running; v2 found before its signature, waiting, then signed,
deployed and watched; v3 signed by another key refused; v4 signed but broken, rolled back
and quarantined.

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
from typing import Any

import docker
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testbed import cosign, engines  # noqa: E402
from testbed.images import build_and_push  # noqa: E402
from testbed.services import REGISTRY_HOST, REGISTRY_URL, engine_client  # noqa: E402
from testbed.util import wait_until  # noqa: E402

REPO = "demo/twilight-drive"
PROJECT = "twilightdemo"
AGENT = str(ROOT / ".venv" / "bin" / "twilight-agent")
T0 = time.monotonic()
WATCH = 6  # seconds the agent watches a new build after its gate


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


def write_config(workdir: Path, tag: str, port: int, pub: Path) -> None:
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
        "TWILIGHT_HEALTH_SOAK=2s", "TWILIGHT_POLL_INTERVAL=2s", f"TWILIGHT_WATCH={WATCH}s",
        f"TWILIGHT_VERIFY_KEY={pub}", "TWILIGHT_VERIFY_ANNOTATIONS=ref=refs/heads/main",
        f"TWILIGHT_STATE_DIR={workdir / 'state'}", "TWILIGHT_LOG_FORMAT=json", ""]))


class Story:
    """The demo's moving parts: the work directory, the engine, CI's signing key."""

    def __init__(self, workdir: Path, docker_client: Any, port: int = 18080) -> None:
        self.workdir, self.docker, self.port = workdir, docker_client, port
        cosign.fetch()
        self.key, self.pub = cosign.generate_key_pair(workdir / "ci", "cosign")

    def push(self, version: str, mode: str = "good") -> Any:
        return build_and_push(self.docker, REPO, version=version, mode=mode)

    def sign(self, img: Any) -> None:
        cosign.sign(self.workdir / "ci", self.key, REPO, img.digest,
                    {"ref": "refs/heads/main", "commit": img.revision})

    def current(self) -> str | None:
        return (status(self.workdir).get("current") or {}).get("digest")

    def quarantined(self, img: Any) -> bool:
        return any(q["digest"] == img.digest for q in status(self.workdir).get("quarantined",
                                                                                []))


def run_story(workdir: Path, docker_client: Any) -> None:
    st = Story(workdir, docker_client)
    say("CI makes a cosign key pair: the private half stays in CI, hosts get cosign.pub")
    say("CI pushes v1 of the app to the local registry by digest, signs it, then tags it")
    v1 = st.push("v1")
    st.sign(v1)
    write_config(workdir, v1.sha_tag, st.port, st.pub)
    flavour = compose_flavour()
    say(f"engine {engines.running_key()}; compose {flavour} "
        f"({'docker compose' if flavour == 'v2' else 'docker-compose'} "
        f"{engines.compose_version(flavour)})")
    say(f"operator starts v1 with deploy/compose.yml (IMAGE_TAG={v1.sha_tag})")
    compose(workdir, "up", "-d")
    wait_until(lambda: healthz(st.port).startswith("200"), 30, what="v1 to answer")
    say(f"/healthz -> {healthz(st.port)}")
    say("the agent starts: `twilight-agent run`, following `main`, polling every 2 s, "
        "pulling only builds signed by cosign.pub")
    log = open(workdir / "agent.log", "w")  # noqa: SIM115 - closed in finally below
    daemon = subprocess.Popen([AGENT, "--config", str(workdir / "agent.env"), "run"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: st.current() == v1.digest, 30, what="the agent to see v1 running")
        say(f"agent: up to date at {v1.sha_tag} (nothing to do)")
        good_build(st, v1)
        broken_builds(st)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
    print("\n$ twilight-agent status\n" + agent(workdir, "status").stdout)
    print("$ twilight-agent history\n" + agent(workdir, "history").stdout)


def good_build(st: Story, v1: Any) -> None:
    """v2: found before its signature (it waits), signed, deployed, watched."""
    say("CI pushes v2 (good); a poll finds it before the signing step has run")
    v2 = st.push("v2")
    wait_until(lambda: (status(st.workdir).get("held") or {}).get("digest") == v2.digest,
               30, interval=0.3, what="v2 to wait for its signature")
    say(f"agent: {v2.sha_tag} is waiting for a signature (not quarantined: CI signs after "
        "it pushes)")
    st.sign(v2)
    say("CI signs v2")
    watch = wait_until(lambda: (status(st.workdir).get("watch") or {}).get("left_s"), 60,
                       interval=0.3, what="v2 to pass its gate and be watched")
    say(f"agent: signature valid; {v2.sha_tag} passed its health gate; watching it for "
        f"{watch:.0f}s more with v1 kept parked; /healthz -> {healthz(st.port)}")
    wait_until(lambda: (status(st.workdir).get("last_result") or {}).get("outcome")
               == "deployed" and st.current() == v2.digest, WATCH + 30, interval=0.3,
               what="the watch over v2 to end")
    env = dict(x.split("=", 1) for x in (st.workdir / ".env").read_text().splitlines()
               if "=" in x and not x.startswith("#"))
    say(f"agent: watch over, v1's container removed; .env now says IMAGE_TAG="
        f"{env.get('IMAGE_TAG')} (so `docker compose up -d` by hand stays on v2)")
    st.v2 = v2  # type: ignore[attr-defined]


def broken_builds(st: Story) -> None:
    """v3 signed by someone else (refused before any pull); v4 signed but broken."""
    v2 = st.v2  # type: ignore[attr-defined]
    say("someone with push access but not CI's key pushes v3 and signs it with their own key")
    v3 = st.push("v3")
    other, _ = cosign.generate_key_pair(st.workdir / "other", "cosign")
    cosign.sign(st.workdir / "other", other, REPO, v3.digest, {"ref": "refs/heads/main"})
    wait_until(lambda: st.quarantined(v3), 30, interval=0.3, what="v3 to be refused")
    say(f"agent: {v3.sha_tag} untrusted (no configured key verifies its signature): "
        "quarantined, nothing pulled, v2 untouched")
    say("CI pushes v4, signed, but broken: it exits at boot")
    v4 = st.push("v4", mode="exit")
    st.sign(v4)
    wait_until(lambda: st.quarantined(v4), 60, interval=0.3,
               what="v4 to be rolled back and quarantined")
    wait_until(lambda: healthz(st.port) == "200 ok v2", 20, what="v2 to serve again")
    assert st.current() == v2.digest, status(st.workdir)
    say(f"agent: v4 failed its health gate, rolled back; v2 serves: {healthz(st.port)}")
    say(f"agent: {v4.digest[:19]}... quarantined: it will not be tried again")


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
