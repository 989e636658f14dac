"""Peak memory of a piece of the agent, run in a child Python process.

The peak is the child's ``VmHWM`` (``/proc/self/status``), not ``ru_maxrss``: Linux
carries the parent's high-water mark across ``fork`` + ``exec`` into ``ru_maxrss``, so a
child of pytest starts at pytest's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

REPORT = """
import json as _json
with open("/proc/self/status") as _f:
    _peak = next(int(ln.split()[1]) for ln in _f if ln.startswith("VmHWM:"))
print(_json.dumps({"peak_kb": _peak, **RESULT}))
"""


def run_measured(code: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    """Run ``code`` (which leaves a JSON-able dict in ``RESULT``) with ``args`` as
    ``sys.argv[1:]``; its result with ``peak_kb``, the child's peak resident set in KiB."""
    p = subprocess.run([sys.executable, "-c", code + REPORT, *args], capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return dict(json.loads(p.stdout.splitlines()[-1]))
