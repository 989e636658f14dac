"""The benchmark harness still runs: one quick healthy swap per flow and one start-up to
READY, on the real engine and registry (~30 s). Asserts that figures come out, not that
the targets are met: the full run (``python -m bench``) is too long for the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_produces_figures(bed, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--runs", "1",
                        "--only", "swap,ready", "--no-write", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["errors"] == []
    agent, = data["results"]["swap_agent"]
    shell, = data["results"]["swap_shell"]
    for figs in (agent, shell):
        assert 0 < figs["total_s"] < 90
        assert 0 <= figs["pull_s"] < figs["total_s"]
        assert 0 < figs["boot_s"] < 30
        assert figs["gap_ms"] >= 0 and figs["gap_failed"] >= 0
    assert 0 <= agent["detect_s"] < 10  # polling every 5 s (+10% jitter) + the resolve
    assert agent["total_s"] >= 10  # the default 10 s soak is part of every agent deploy
    ready, = data["results"]["ready"]
    assert 0 < ready["ready_s"] < 30
    assert "overhead: total - pull - boot - soak" in p.stdout
    assert "start -> READY=1" in p.stdout
