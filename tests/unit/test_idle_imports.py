"""The idle daemon imports only what the idle loop needs (#15, footprint).

Each library here costs the daemon's RSS megabytes for a feature most hosts leave off:
cryptography (~7 MB, only with ``TWILIGHT_VERIFY_KEY``), prometheus-client (only with
``TWILIGHT_METRICS_FILE``), Apprise and its plugins (~40 MB, only when a message is sent,
even with ``TWILIGHT_NOTIFY`` set). A fresh interpreter loads settings and builds the daemon's
parts the way ``twilight-agent run`` does, then reports what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_signatures import CI, pem

PROBE = """
import json, sys
from pathlib import Path
from twilight_agent import app, cli, daemon  # noqa: F401
from twilight_agent.settings import load_settings
settings = load_settings(Path(sys.argv[1]))
app.build_agent(settings, sinks=app.build_sinks(settings))
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""
SEND = """
import json, sys
from twilight_agent.adapters.notify.apprise_sink import AppriseSink
sink = AppriseSink(["json://127.0.0.1:9/hook"], "ghcr.io/acme/app", attempts=1)
sink.send_now({"event": "test", "host": "h", "image": "i", "deploy_id": "", "reason": "",
               "log_tail": "", "text": "t", "from": {}, "to": {}})
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def imports_with(tmp_path: Path, extra: str = "") -> set[str]:
    conf = tmp_path / "agent.env"
    conf.write_text(f"TWILIGHT_IMAGE=ghcr.io/acme/app\nTWILIGHT_CONTAINER=app\n"
                    f"TWILIGHT_STATE_DIR={tmp_path}/state\n{extra}")
    out = subprocess.run([sys.executable, "-c", PROBE, str(conf)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return set(json.loads(out))


def test_an_idle_daemon_without_keys_or_metrics_loads_neither(tmp_path: Path) -> None:
    loaded = imports_with(tmp_path)
    assert "cryptography" not in loaded
    assert "prometheus_client" not in loaded
    assert {"docker", "httpx", "apscheduler"} <= loaded  # the probe did load the daemon


def test_notification_targets_load_apprise_only_to_send(tmp_path: Path) -> None:
    """The sink is built with the daemon, Apprise (and paho-mqtt, its MQTT client) with
    the first message."""
    urls = tmp_path / "notify-urls"
    urls.write_text("mqtt://127.0.0.1:9/twilight\nmailto://127.0.0.1:9?to=a@example.com\n")
    urls.chmod(0o600)
    loaded = imports_with(tmp_path, "TWILIGHT_NOTIFY=json://127.0.0.1:9/hook\n"
                          f"TWILIGHT_NOTIFY_FILE={urls}\n")
    assert not loaded & {"apprise", "paho", "markdown", "yaml", "requests_oauthlib"}
    out = subprocess.run([sys.executable, "-c", SEND], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "apprise" in set(json.loads(out.splitlines()[-1]))  # the probe sees it load


@pytest.mark.parametrize("feature", ["key", "metrics"])
def test_each_library_comes_with_its_setting(tmp_path: Path, feature: str) -> None:
    if feature == "key":
        public = tmp_path / "cosign.pub"
        public.write_bytes(pem(CI))
        assert "cryptography" in imports_with(tmp_path, f"TWILIGHT_VERIFY_KEY={public}\n")
    else:
        extra = f"TWILIGHT_METRICS_FILE={tmp_path}/m.prom\n"
        assert "prometheus_client" in imports_with(tmp_path, extra)
