"""Idle RSS with keyless verification configured, beside idle RSS without it (#29).

    .venv/bin/python -m bench.idle_keyless [--window 60] [--no-write]

Two daemons (``twilight-agent run``, 30 s polls), each on its own fresh site of the test
bed (engine + registry), run side by side for the same window: one without verification,
one with ``TWILIGHT_VERIFY_IDENTITY`` and ``TWILIGHT_VERIFY_TRUSTED_ROOT`` (the trusted root
of the bed's local Sigstore, ``testbed/sigstore_standin.py``, written to a file). Both
sites already run their current build, and the keyless one's is attested by the main
workflow as CI attests it (a provenance bundle attached to its digest), so no idle poll has
anything to verify: sigstore-python must stay unloaded and cost nothing. A verification
during the window (a ``signature_checked`` line in that daemon's log) fails the run.
RSS (``VmRSS``) is sampled once a second; the peak of each of five slices is printed for
both, side by side, and the difference of the peaks. Goal: within 1 MB. Writes
bench/results.md, section "idle with keyless verification".
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import idle_pair  # noqa: E402
from bench.site import Site  # noqa: E402
from testbed.sigstore_oci import attach_bundle  # noqa: E402
from testbed.sigstore_standin import SigstoreStandin, WorkflowIdentity  # noqa: E402

MAIN = WorkflowIdentity(repository="lacatfly/twilight-demo")


def prepare(plain: Site, keyless: Site) -> dict[str, str]:
    """Both sites up on an attested v1; the keyless daemon's verification settings."""
    standin = SigstoreStandin(keyless.dir / "sigstore")
    root = standin.write_trusted_root(keyless.dir / "trusted_root.json")
    plain.up(plain.push("v1"))
    v1 = keyless.push("v1")
    who = dataclasses.replace(MAIN, sha=v1.revision)
    attach_bundle(keyless.raw, keyless.repo, v1.digest,
                  standin.provenance_bundle(v1.digest, who, image=keyless.ref))
    keyless.up(v1)
    return {"TWILIGHT_VERIFY_IDENTITY": MAIN.san, "TWILIGHT_VERIFY_TRUSTED_ROOT": str(root)}


def nothing_verified(keyless: Site) -> None:
    """An idle daemon that verified something measured sigstore, not idleness."""
    checked = [e for e in keyless.agent_events() if e["event"] == "signature_checked"]
    if checked:
        raise RuntimeError(f"the keyless daemon verified while idle: {checked[0]}")


PAIR = idle_pair.Pair(
    module="bench.idle_keyless", doc=__doc__ or "", section="idle with keyless verification",
    feature="with keyless verification", without="idle RSS without verification",
    with_="with TWILIGHT_VERIFY_IDENTITY + trusted root",
    compared="one with `TWILIGHT_VERIFY_IDENTITY` and `TWILIGHT_VERIFY_TRUSTED_ROOT` (the "
             "bed's local Sigstore; its running build attested), one without",
    note="sigstore-python is loaded only when a candidate is checked.", prepare=prepare,
    check=nothing_verified)


def main(argv: list[str] | None = None) -> int:
    return idle_pair.main(PAIR, argv)


if __name__ == "__main__":
    raise SystemExit(main())
