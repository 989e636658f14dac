"""The agent's metrics file through the real tools: Debian's ``prometheus-node-exporter``
reads it with its textfile collector, Debian's ``prometheus`` scrapes that, evaluates
``deploy/prometheus/twilight.rules.yml``, and the HALTED alert fires.

The halt is recorded the way a run records it (``recording.Recorder`` into the real state
store, its ``DeployFinished`` into the real ``MetricsFile``) after the start-up
announcement the daemon and the CLI make; no Docker engine is needed. Both servers listen
on free loopback ports of their own, with their own storage in the test's directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.integration.deploybed import free_port
from twilight_agent.adapters.notify.metrics import MetricsFile
from twilight_agent.adapters.state.store import Store
from twilight_agent.core.events import Started
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome
from twilight_agent.run.deploy_run import DeployRun
from twilight_agent.run.recording import Recorder
from twilight_agent.status import totals

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "twilight.rules.yml"
BAD = Release("sha-3333333", Digest("sha256:" + "3" * 64))


def binary(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} missing: apt-get install {package} (scripts/test does)"
    return path


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


class Server:
    """One of the two servers, its output kept for the failure message."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """(the textfile directory, node_exporter's URL, Prometheus' URL)."""
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    node_port, prom_port = free_port(), free_port()
    node = Server([binary("prometheus-node-exporter", "prometheus-node-exporter"),
                   "--collector.disable-defaults", "--collector.textfile",
                   f"--collector.textfile.directory={textfiles}",
                   f"--web.listen-address=127.0.0.1:{node_port}"], tmp_path / "node.log")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "node", "static_configs": [
            {"targets": [f"127.0.0.1:{node_port}"]}]}]}))
    prom = Server([binary("prometheus", "prometheus"), f"--config.file={config}",
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                   f"--web.listen-address=127.0.0.1:{prom_port}"], tmp_path / "prom.log")
    try:
        yield textfiles, f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{prom_port}"
    except BaseException:
        print("node_exporter:", node.tail(), "prometheus:", prom.tail(), sep="\n")
        raise
    finally:
        prom.stop()
        node.stop()


def firing(prom_url: str) -> set[str]:
    alerts = json.loads(get(f"{prom_url}/api/v1/alerts"))["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def test_a_halt_in_the_textfile_fires_the_halted_alert(
        servers: tuple[Path, str, str], tmp_path: Path) -> None:
    textfiles, node_url, prom_url = servers
    store = Store(tmp_path / "state")
    sink = MetricsFile(textfiles / "twilight.prom")
    sink.emit(Started(totals(store)))  # the daemon's announcement: nothing wrong yet
    wait_until(lambda: "twilight_halted 0" in get(f"{node_url}/metrics"), 15,
               what="node_exporter serving the agent's file")
    wait_until(lambda: "TwilightHalted" in get(f"{prom_url}/api/v1/rules"), 15,
               what="prometheus loading twilight.rules.yml")

    run = DeployRun("d-halt", "poll", to=BAD, phase="VERIFY_PREVIOUS",
                    outcome=Outcome.HALTED)
    Recorder(store, sink).record(run, "previous version unhealthy too")

    exposed = get(f"{node_url}/metrics")
    assert "twilight_halted 1" in exposed
    assert 'twilight_phase{phase="HALTED"} 1' in exposed
    assert 'node_textfile_scrape_error 0' in exposed
    assert wait_until(lambda: firing(prom_url) == {"TwilightHalted"}, 30,
                      what="TwilightHalted firing in prometheus")
