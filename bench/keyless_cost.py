"""The cost of keyless verification (#29), offline: memory and time, no engine, no network.

    .venv/bin/python -m bench.keyless_cost [--runs 20] [--no-write]

Three figures, each in a fresh interpreter so nothing loaded before counts:

- **built agent**: ``VmRSS`` after loading settings and building the agent the way
  ``twilight-agent run`` does (nothing connects), without and with
  ``TWILIGHT_VERIFY_IDENTITY``: sigstore must not be loaded, so the two should be within
  1 MB. (The long-running idle daemon beside an engine is ``bench.idle``'s job.)
- **import**: ``VmRSS`` before and after loading the keyless checker (sigstore-python and
  what it pulls in), which happens at the first candidate checked.
- **one verification**: a provenance bundle of the test bed's local Sigstore
  (``testbed/sigstore_standin.py``, a Rekor v1 entry) checked by ``BundleChecker`` against
  the stand-in's trusted root: the first one (trust root parsed, verifier built) and the
  median of ``--runs`` more. Registry requests are not included (two per bundle plus the
  referrers lookup; see bench/requests_per_poll.py for their cost).

Writes bench/results.md, section "keyless verification cost".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from bench.requests_per_poll import RESULTS  # noqa: E402
from testbed.sigstore_standin import SigstoreStandin, WorkflowIdentity  # noqa: E402

SECTION = "keyless verification cost"
IDENTITY = WorkflowIdentity().san

RSS = """
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
"""
BUILT = RSS + """
import json, sys
from pathlib import Path
from twilight_agent import app, cli, daemon  # noqa: F401
from twilight_agent.settings import load_settings
settings = load_settings(Path(sys.argv[1]))
agent = app.build_agent(settings, sinks=app.build_sinks(settings))
print(json.dumps({"rss": rss(), "sigstore": "sigstore" in sys.modules}))
"""
CHECK = RSS + """
import json, statistics, sys, time
from pathlib import Path
from twilight_agent.core.keyless import IdentityRule
from twilight_agent.core.models import Digest, Release
from twilight_agent.lazy import lazy_module
before = rss()
check = lazy_module("twilight_agent.adapters.verify.keyless_check")
root = lazy_module("twilight_agent.adapters.verify.keyless_root")
source, _ = root.FileRoot(Path(sys.argv[1])), check.BundleChecker  # both loaded now
after = rss()
raw, digest, sha, runs = open(sys.argv[2], "rb").read(), sys.argv[3], sys.argv[4], int(sys.argv[5])
checker = check.BundleChecker(source, IdentityRule(sys.argv[6]), sys.argv[7], "ghcr.io/o/a")
release = Release("main", Digest(digest), sha)
times = []
for _ in range(runs + 1):
    start = time.perf_counter()
    result = checker.check(raw, release)
    times.append((time.perf_counter() - start) * 1000)
    assert result.valid, result.describe()
print(json.dumps({"before": before, "after": after, "first_ms": times[0],
                  "median_ms": statistics.median(times[1:]), "rss_end": rss()}))
"""


def run(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=300, check=True, cwd=ROOT).stdout
    return dict(json.loads(out.splitlines()[-1]))


def built(tmp: Path, extra: str) -> dict[str, float]:
    conf = tmp / f"agent{len(extra)}.env"
    conf.write_text(f"TWILIGHT_IMAGE=ghcr.io/acme/app\nTWILIGHT_CONTAINER=app\n"
                    f"TWILIGHT_STATE_DIR={tmp}/state\n{extra}")
    return run(BUILT, str(conf))


def measure(runs: int) -> str:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        standin = SigstoreStandin(tmp)
        root = standin.write_trusted_root(tmp / "trusted_root.json")
        digest, who = "sha256:" + "5e" * 32, WorkflowIdentity()
        bundle = tmp / "bundle.json"
        bundle.write_text(json.dumps(standin.provenance_bundle(digest, who)))
        plain = built(tmp, "")
        keyless = built(tmp, f"TWILIGHT_VERIFY_IDENTITY={IDENTITY}\n"
                        f"TWILIGHT_VERIFY_TRUSTED_ROOT={root}\n")
        cost = run(CHECK, str(root), str(bundle), digest, who.sha, str(runs), IDENTITY,
                   who.issuer)
    return report(plain, keyless, cost, runs)


def report(plain: dict[str, float], keyless: dict[str, float], cost: dict[str, float],
           runs: int) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    diff = keyless["rss"] - plain["rss"]
    loaded = bool(keyless["sigstore"])
    grown = cost["after"] - cost["before"]
    return f"""`.venv/bin/python -m bench.keyless_cost --runs {runs}`, {when}, offline (the test
bed's local Sigstore, no engine, no registry). sigstore is loaded only when a candidate
is checked; goal for the built agent: within 1 MB.

| what | figure |
|---|---|
| built agent, no verification | {plain['rss']:.1f} MB RSS |
| built agent, `TWILIGHT_VERIFY_IDENTITY` set | {keyless['rss']:.1f} MB RSS \
({diff:+.1f} MB; sigstore loaded: {loaded}) |
| loading the keyless checker (sigstore-python) | {cost['before']:.1f} -> \
{cost['after']:.1f} MB RSS ({grown:+.1f} MB) |
| after {runs + 1} verifications | {cost['rss_end']:.1f} MB RSS |
| first verification (root parsed, verifier built) | {cost['first_ms']:.1f} ms |
| one verification (median of {runs}) | {cost['median_ms']:.1f} ms |
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    text = measure(max(1, args.runs))
    print(text)
    if not args.no_write:
        write_section(RESULTS, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
