"""An operator's deploy reaches the webhook and the metrics file, on the real engine.

The app lives in a private repository, so the agent holds the bed's registry credentials
(Basic user:PAT, and the tokens they buy) while it notifies: none may reach a webhook body,
the metrics file or the agent's output."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.deploybed import (
    SECRET_FORMS,
    Site,
    private_site,
    push,
    webhook_receiver,
)

pytestmark = [pytest.mark.integration, pytest.mark.one_engine]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def chat() -> Iterator[tuple[str, list[dict]]]:
    """An HTTP endpoint behind Apprise's json:// (TWILIGHT_NOTIFY)."""
    with webhook_receiver() as (url, got):
        yield url.replace("http://", "json://", 1), got


@pytest.fixture
def site(bed, private_repo, cleanup, tmp_path) -> Iterator[Site]:
    s = private_site(bed, private_repo, cleanup, tmp_path)
    yield s
    s.teardown()


def _metrics(site: Site) -> dict[tuple[str, tuple], float]:
    text = (site.tmp / "twilight.prom").read_text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_rollback_reaches_webhook_and_metrics(site: Site, receiver, chat) -> None:
    url, got = receiver
    notify_url, chats = chat
    v1 = push(site, "v1")
    site.run_app(v1)
    v2 = push(site, "v2", mode="exit")
    over = {"webhook_url": url, "metrics_file": site.tmp / "twilight.prom",
            "notify": notify_url}

    p = site.cli("deploy", **over)
    output = [p.stdout, p.stderr]
    assert p.returncode == 1, p.stderr
    site.wait_serving("v1")
    rollbacks = [m for m in got if m["event"] == "rollback"]
    assert len(rollbacks) == 1, got
    msg = rollbacks[0]
    assert msg["from"] == {"tag": v1.sha_tag, "digest": v1.digest}
    assert msg["to"] == {"tag": v2.sha_tag, "digest": v2.digest}
    assert "fatal: cannot open database" in msg["log_tail"]
    assert msg["reason"]
    (told,) = [m for m in chats if "ROLLED BACK" in m["title"]]  # the same, through Apprise
    assert f"failed build: {v2.sha_tag}" in told["message"]
    assert f"reason: {msg['reason']}" in told["message"]
    assert "fatal: cannot open database" in told["message"]

    m = _metrics(site)
    assert m[("twilight_deploys_total", (("outcome", "rolled_back"),))] == 1
    assert m[("twilight_rollbacks_total", ())] == 1

    v3 = push(site, "v3")
    p = site.cli("deploy", **over)
    output += [p.stdout, p.stderr]
    assert p.returncode == 0, p.stderr
    site.wait_serving("v3")
    deployed = [m for m in got if m["event"] == "deployed"]
    assert deployed and deployed[-1]["to"]["digest"] == v3.digest
    m = _metrics(site)
    assert m[("twilight_deploys_total", (("outcome", "deployed"),))] == 1
    assert m[("twilight_last_success_timestamp_seconds", ())] > 0
    info = [k for k, v in m.items() if k[0] == "twilight_current_revision_info" and v == 1]
    assert any(("digest", v3.digest) in labels for _, labels in info), info
    # The agent used the credentials (it cannot read a private repository without them),
    # and they never travel in a notification, the metrics file or the agent's output.
    assert site.running_digest() == v3.digest
    places = {"webhook bodies": json.dumps(got), "Apprise messages": json.dumps(chats),
              "metrics file": (site.tmp / "twilight.prom").read_text(),
              "agent output": "\n".join(output)}
    leaks = {where: [s[:6] for s in SECRET_FORMS if s in text] for where, text in places.items()}
    assert leaks == {where: [] for where in places}, leaks
