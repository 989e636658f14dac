"""Security checks: no secret in any log line, output, state file, webhook body or metrics
file; no listening socket; private files.

Deploys run against a *private* repository (the token server demands Basic user:token),
with the credentials given as ``TWILIGHT_REGISTRY_USERNAME`` + ``TWILIGHT_REGISTRY_PASSWORD_FILE``,
a webhook and a metrics file configured. Everything the agent prints, every file in its
state directory (the sqlite database with its WAL, the lock) and runtime directory, every
webhook body and the metrics file are scanned for the password, its Basic form and any
JWT (``eyJ``: every token the bed's token server issues starts so).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import Figures
from tests.integration.deploybed import SECRET_FORMS, Site, push, webhook_receiver
from tests.integration.deploybed import private_site as private_site_of

pytestmark = [pytest.mark.faults, pytest.mark.one_engine]

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_SOAK": "0.5", "HEALTH_TIMEOUT": "5"}
SECRETS = SECRET_FORMS


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def private_site(bed: Any, private_repo: str, cleanup: str, tmp_path: Path,
                 hook: tuple[str, list[dict[str, Any]]]) -> Iterator[Site]:
    """A site whose image lives in a private repository; the operator pulled it with
    credentials, the agent gets them from a password file, and notifies a webhook and a
    metrics file."""
    s = private_site_of(bed, private_repo, cleanup, tmp_path, WEBHOOK_URL=hook[0],
                        METRICS_FILE=str(tmp_path / "twilight.prom"), **FAST)
    yield s
    s.teardown()


def files_under(*dirs: Path) -> dict[str, str]:
    """Every regular file under ``dirs``, as text (bytes kept one for one)."""
    return {str(f): f.read_bytes().decode("latin-1") for d in dirs if d.exists()
            for f in sorted(d.rglob("*")) if f.is_file()}


def listening_sockets(pid: int) -> list[str]:
    """The sockets of ``pid`` that listen: tcp in LISTEN, bound udp, unix with ACCEPTCON."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[9] in inodes and (table.startswith("udp") or f[3] == "0A"):
                found.append(f"{table} {f[1]}")
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if f[6] in inodes and int(f[3], 16) & 0x10000:
            found.append(f"unix {f[-1] if len(f) > 7 else '(unnamed)'}")
    return found


def test_no_secret_in_any_output_no_listening_socket_private_files(
        private_site: Site, figures: Figures, hook: tuple[str, list[dict[str, Any]]]) -> None:
    site = private_site
    v1 = push(site, "v1")
    site.run_app(v1)
    push(site, "v2")
    captured: list[str] = []

    def run(*args: str, **over: object) -> Any:
        p = site.cli(*args, **over)
        captured.extend([p.stdout, p.stderr])
        return p

    deployed = run("deploy", LOG_FORMAT="json")
    assert deployed.returncode == 0, deployed.stderr
    bad = push(site, "v3", mode="exit")
    assert run("deploy", LOG_FORMAT="console").returncode == 1
    mark = figures.quarantined(site, bad.digest)
    figures.deploys(2)
    for args in (["status"], ["status", "--json"], ["history"], ["history", "--json"],
                 ["check"], ["check", "--json"]):
        assert run(*args).returncode == 0, args

    # The daemon, at info level, through a poll with a fresh token and a failing one.
    v4 = push(site, "v4")
    daemon = site.popen("run", POLL_INTERVAL="0.5", LOG_FORMAT="json",
                        RUNTIME_DIRECTORY=str(site.tmp / "run"))
    try:
        deadline = time.monotonic() + 40
        while site.running_digest() != v4.digest or site.containers() != [site.name]:
            assert time.monotonic() < deadline, "the daemon did not deploy v4"
            time.sleep(0.2)
        sockets = listening_sockets(daemon.pid)
        fd_count = len(os.listdir(f"/proc/{daemon.pid}/fd"))
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    figures.deploys()
    captured.extend([out, err])
    assert daemon.returncode == 0, err
    assert sockets == [], sockets
    figures.note(f"daemon while deploying a private image: {fd_count} fds, "
                 f"{len(sockets)} listening sockets")

    text = "\n".join(captured)
    assert '"event": "deploy_finished"' in text and "phase" in text  # the logs were captured
    assert bad.sha_tag in text
    state = files_under(site.state_dir, site.tmp / "run")
    assert any(name.endswith("state.db") for name in state), state.keys()
    assert bad.digest in "".join(state.values())  # the scan reads what the agent stored
    bodies = json.dumps(hook[1])
    assert {m["event"] for m in hook[1]} >= {"deployed", "rollback"}, hook[1]
    metrics = (site.tmp / "twilight.prom").read_text()
    assert "twilight_deploys_total" in metrics
    places = {"agent output": text, "state directory": "\n".join(state.values()),
              "webhook bodies": bodies, "metrics file": metrics}
    found = {where: figures.secrets_in(where, body, SECRETS) for where, body in places.items()}
    assert found == {where: 0 for where in places}, {
        where: [s[:6] for s in SECRETS if s in body] for where, body in places.items()}

    sd = site.state_dir
    assert stat.S_IMODE(sd.stat().st_mode) == 0o700
    for f in sd.iterdir():
        if f.name.startswith("state.db") or f.name == "deploy.lock":
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert {f.name for f in sd.iterdir()} >= {"state.db", "deploy.lock"}
    figures.service_ok(site, "v4")
    figures.nothing_lost(site)
    figures.quarantine_held(site, mark)  # through status, check and the daemon's polls
