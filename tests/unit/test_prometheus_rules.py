"""deploy/prometheus/twilight.rules.yml, checked by Debian's real ``promtool``: the rules
load, ``promtool test rules`` passes, every alert has a case where it fires, and every
metric a rule reads is one the agent's textfile has."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from twilight_agent.adapters.notify.metrics import MetricsFile

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "twilight.rules.yml"
TESTS = RULES_DIR / "twilight.rules.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: apt-get install prometheus (scripts/test does)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60,
                          cwd=RULES_DIR, check=False)


def alerts() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


def test_the_rules_load() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_passes() -> None:
    result = promtool("test", "rules", TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_case_where_it_fires() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {a["alertname"] for c in cases for a in c["alert_rule_test"] if a["exp_alerts"]}
    assert set(alerts()) == fired
    assert {"TwilightHalted", "TwilightRolledBack", "TwilightQuarantined",
            "TwilightNoSuccessfulPoll", "TwilightStuckInWatch", "TwilightPromotionDropped",
            "TwilightWaitingForSignature"} <= fired


def test_the_rules_read_metrics_the_agent_writes(tmp_path: Path) -> None:
    prom = tmp_path / "twilight.prom"
    MetricsFile(prom).write()
    families = list(text_string_to_metric_families(prom.read_text()))
    # A family with no sample yet (nothing held) still has its HELP and TYPE lines.
    written = {f.name for f in families} | {s.name for f in families for s in f.samples}
    read = {m for expr in alerts().values() for m in re.findall(r"\btwilight_\w+", expr)}
    assert read and read <= written, read - written
