"""The README's first command tells its story: ``scripts/demo.py`` on the running bed.

``bash scripts/demo`` is ``scripts/setup.sh`` (packages, venv, the bed) followed by this
script; the bed is already up here, so the test runs the script itself, as a user would
see it, and then looks for anything the demo left behind on the engine.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from testbed import engines
from tests.conftest import Bed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "twilightdemo"  # scripts/demo.py's compose project
REPO = "demo/twilight-drive"  # and its repository in the bed's registry
BUDGET_S = 180.0  # issue #6: under 3 minutes
PYTHON = ROOT / ".venv" / "bin" / "python"  # what scripts/demo runs it with


def leftovers(bed: Bed) -> list[str]:
    """Containers, volumes, networks and images of the demo still on the engine."""
    d = bed.docker
    label = {"label": f"com.docker.compose.project={PROJECT}"}
    found = [f"container {c.name}" for c in d.containers.list(all=True, filters=label)]
    found += [f"container {c.name}" for c in d.containers.list(all=True,
                                                                filters={"name": PROJECT})]
    found += [f"volume {v.name}" for v in d.volumes.list(filters=label)]
    found += [f"volume {v.name}" for v in d.volumes.list() if v.name.startswith(PROJECT)]
    found += [f"network {n.name}" for n in d.networks.list() if n.name.startswith(PROJECT)]
    for img in d.api.images(all=True):  # no inspect per image: the engine is shared
        refs = (img.get("RepoTags") or []) + (img.get("RepoDigests") or [])
        if any(REPO in r for r in refs):
            found.append(f"image {img['Id'][7:19]} {refs}")
    return sorted(set(found))


def test_demo_tells_the_story_and_cleans_up(bed: Bed) -> None:
    assert leftovers(bed) == [], "a previous demo left these behind"
    t0 = time.monotonic()
    proc = subprocess.run([str(PYTHON), "scripts/demo.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=BUDGET_S + 60, check=False)
    took = time.monotonic() - t0
    out = proc.stdout
    assert proc.returncode == 0, f"demo exited {proc.returncode}:\n{out}\n{proc.stderr}"

    # It says which engine and compose it used: v2 on 26 (v1 cannot run a service there).
    want = "v2" if engines.running_key() == "26" else "v1"
    assert re.search(rf"engine [0-9.]+; compose {want} ", out), out
    # The narration: v1 serves; v2 waits for its signature, is signed, deployed and watched;
    # v3 signed by another key is refused; v4 (signed, broken) rolled back + quarantined.
    assert "/healthz -> 200 ok v1" in out, out
    assert re.search(r"agent: sha-[0-9a-f]{7} is waiting for a signature", out), out
    assert re.search(r"agent: signature valid; sha-[0-9a-f]{7} passed its health gate; "
                     r"watching it for \d+s more with v1 kept parked; /healthz -> 200 ok v2",
                     out), out
    assert re.search(r"\.env now says IMAGE_TAG=sha-[0-9a-f]{7}", out), out
    assert re.search(r"agent: sha-[0-9a-f]{7} untrusted \(no configured key verifies", out), out
    assert "v4 failed its health gate, rolled back; v2 serves: 200 ok v2" in out, out
    assert re.search(r"sha256:[0-9a-f]{12}\.\.\. quarantined", out), out

    # status and history, as an operator would run them afterwards.
    status = out.split("$ twilight-agent status\n", 1)[1].split("$ twilight-agent history", 1)[0]
    assert re.search(r"^current\s+sha-[0-9a-f]{7} \(sha256:", status, re.M), status
    assert re.search(r"^quarantined\s+2$", status, re.M), status
    history = out.split("$ twilight-agent history\n", 1)[1]
    assert re.search(r"rolled_back\s+sha-[0-9a-f]{7} -> sha-[0-9a-f]{7}", history), history
    assert re.search(r"deployed\s+sha-[0-9a-f]{7} -> sha-[0-9a-f]{7}  \[poll, WATCH, verified\]",
                     history), history
    assert re.search(r"untrusted\s+sha-[0-9a-f]{7} -> sha-[0-9a-f]{7}", history), history
    assert "demo finished: OK" in out, out

    assert took < BUDGET_S, f"the demo took {took:.0f}s (budget {BUDGET_S:.0f}s)"
    assert leftovers(bed) == [], f"the demo left these behind:\n{out}"
    print(f"demo took {took:.0f}s")
