"""Promotion: the pure rules, and the Promoter over a real state store, a fake target and a
fake registry writer (wall clock injected)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json as jsonlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.unit.fakes import (
    REPO,
    FakeHealth,
    FakeRegistry,
    FakeRuntime,
    Sink,
    WallClock,
    digest,
    release,
)
from twilight_agent.adapters.notify.sinks import EventBus
from twilight_agent.adapters.registry.credentials import Credentials
from twilight_agent.adapters.registry.push import TagPusher
from twilight_agent.adapters.state.store import Store
from twilight_agent.app import build_agent
from twilight_agent.core import promotion as rules
from twilight_agent.core.history import HistoryRow
from twilight_agent.core.models import Digest, Release
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.ports import ContainerState, HealthVerdict, Meta, Snapshot
from twilight_agent.core.promotion import Order
from twilight_agent.errors import ConfigError, RegistryUnavailable
from twilight_agent.promotion import PromoteConfig, Promoter
from twilight_agent.settings import Settings, load_settings

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc).timestamp()
ISO = "2026-11-25T12:00:00Z"  # T0


class Pusher:
    def __init__(self, stable: Digest | None) -> None:
        self.stable = stable
        self.puts: list[tuple[str, Digest]] = []
        self.down = False
        self.labels: dict[str, str] = {}
        self.heads = 0

    def tag_digest(self, tag: str) -> Digest | None:
        self.heads += 1
        if self.down:
            raise RegistryUnavailable("HEAD manifest stable: HTTP 503 after 4 attempts")
        return self.stable

    def created(self, d: Digest) -> str | None:
        return self.labels.get(str(d))

    def point(self, tag: str, d: Digest) -> Digest:
        self.puts.append((tag, d))
        self.stable = d
        return d


class Target:
    def __init__(self, running: Release) -> None:
        self.running = running
        self.health: str | None = None

    def state(self, instance: str) -> ContainerState:
        return ContainerState("running", True, health=self.health)

    def snapshot(self) -> Snapshot:
        r = self.running
        return Snapshot("c1", "app", "img", str(r.digest), r.tag)

    def health_url(self, unit: Snapshot, instance: str) -> str | None:
        return f"http://{instance}:8080/healthz"


def deployed(store: Store, n: int, finished: str = ISO, prev: int | None = None) -> None:
    to, frm = release(n), release(prev) if prev else None
    store.finish(HistoryRow(id=f"d{n}", started=finished, finished=finished,
                            from_tag=frm.tag if frm else None,
                            from_digest=str(frm.digest) if frm else None, to_tag=to.tag,
                            to_digest=str(to.digest), outcome=Outcome.DEPLOYED, phase="WATCH"),
                 Meta(current=to))


class Bed:
    def __init__(self, tmp: Path, stable: int | None = 1) -> None:
        self.store = Store(tmp / "state")
        self.pusher = Pusher(digest(stable) if stable else None)
        self.target = Target(release(2))
        self.sink = Sink()
        self.now = T0

    def promoter(self, gate: Any = None) -> Promoter:  # what a restarted agent builds
        return Promoter(PromoteConfig("stable", 60.0), self.store, self.target,
                        EventBus([self.sink]), lambda: self.pusher, WallClock(lambda: self.now),
                        gate)


@pytest.fixture
def bed(tmp_path: Path) -> Bed:
    b = Bed(tmp_path)
    deployed(b.store, 1)
    deployed(b.store, 2, prev=1)
    return b


def test_the_wait_is_recorded_once_and_survives_a_restart(bed: Bed) -> None:
    p = bed.promoter().tick()
    # finished 12:00:00 in whole seconds: it ended before 12:00:01, so 60 s later is due
    assert p is not None and (p.step, p.due) == ("waiting", T0 + 1 + 60)
    bed.now = T0 + 60.5  # 60 s after 12:00:00.5 would be too soon
    assert bed.promoter().tick().step == "waiting"  # type: ignore[union-attr]
    assert (bed.pusher.heads, bed.pusher.puts) == (0, [])  # no request while it waits
    bed.now = T0 + 61
    done = bed.promoter().tick()
    assert done is not None and done.step == "promoted"
    assert bed.pusher.puts == [("stable", digest(2))]
    row = bed.store.history(1)[0]
    assert (row.outcome, row.phase, row.to_digest, row.from_digest) == (
        "promoted", "PROMOTE", str(digest(2)), str(digest(1)))
    assert bed.sink.named("promotion")[0]["outcome"] == "promoted"
    bed.now += 3600
    assert bed.promoter().tick().step == "promoted"  # type: ignore[union-attr]
    assert len(bed.pusher.puts) == 1


def test_a_killed_promotion_is_done_again_and_a_put_that_landed_is_not_repeated(
        bed: Bed) -> None:
    bed.promoter().tick()
    bed.now = T0 + 61
    bed.pusher.down = True
    assert bed.promoter().tick() is None  # registry trouble: logged, retried
    assert bed.promoter().promotions.in_flight() is not None  # still "promoting"
    bed.pusher.down = False
    bed.pusher.stable = digest(2)  # the PUT landed before the agent died
    assert bed.promoter().tick().step == "promoted"  # type: ignore[union-attr]
    assert bed.pusher.puts == []
    assert bed.store.history(1)[0].outcome == "promoted"


def test_never_a_quarantined_digest_unless_an_operator_says_so(bed: Bed) -> None:
    bed.store.quarantine(str(digest(2)), "sha-0000002", "watch: exited with code 3")
    asked: list[str] = []

    def gate(container_id: str, url: str | None) -> HealthVerdict:
        asked.append(container_id)
        return HealthVerdict(True, "healthy", 0.1)

    bed.promoter(gate).tick()
    bed.now = T0 + 61
    p = bed.promoter(gate).tick()
    assert p is not None and (p.step, p.reason) == ("dropped", "quarantined")
    assert bed.pusher.puts == [] and asked == []  # refused before the gate is asked
    forced = bed.promoter(gate).force(release(2))
    assert asked == []  # an operator's promotion skips every rule, the gate too
    assert forced.step == "promoted" and bed.pusher.puts == [("stable", digest(2))]
    assert bed.store.history(1)[0].trigger == "cli"


def test_never_a_build_older_than_the_one_the_tag_points_at(bed: Bed) -> None:
    deployed(bed.store, 3, prev=2)
    bed.pusher.stable = digest(3)
    bed.store.finish(HistoryRow(id="d2b", started=ISO, finished=ISO, to_digest=str(
        digest(2)), to_tag="sha-0000002", outcome=Outcome.DEPLOYED, phase="WATCH"),
        Meta(current=release(2)))  # a rollback to 2 is recorded as a deploy of 2
    bed.promoter().tick()
    bed.now = T0 + 61
    p = bed.promoter().tick()
    assert p is not None and p.step == "dropped" and "older" in p.reason
    assert bed.pusher.puts == []


def test_a_pinned_older_build_is_not_promoted_over_the_tag(tmp_path: Path) -> None:
    """The canary ran 1, then 3 (promoted), then was pinned to 2, a build it never ran:
    by history 2 came last, but it was built before 3, so the fleet is not moved back."""
    bed = Bed(tmp_path, stable=3)
    deployed(bed.store, 1)
    deployed(bed.store, 3, prev=1)
    deployed(bed.store, 2, prev=3)  # the pin: 2 first runs here after 3
    bed.pusher.labels = {str(digest(n)): f"2026-11-2{n}T12:00:00Z" for n in (1, 2, 3)}
    bed.promoter().tick()
    bed.now = T0 + 61
    p = bed.promoter().tick()
    assert p is not None and p.step == "dropped" and "older" in p.reason
    assert bed.pusher.puts == []


def test_no_wait_is_due_at_once(tmp_path: Path) -> None:
    b = Bed(tmp_path)
    deployed(b.store, 2)
    p = Promoter(PromoteConfig("stable", 0.0), b.store, b.target, EventBus([b.sink]),
                 lambda: b.pusher, WallClock(lambda: b.now)).tick()
    assert p is not None and p.step == "promoted", p  # PROMOTE_AFTER=0: the same poll


def test_a_build_no_longer_running_is_dropped_and_a_new_deploy_supersedes(bed: Bed) -> None:
    bed.promoter().tick()
    bed.target.running = release(9)
    bed.now = T0 + 61
    assert bed.promoter().tick().reason == "not running healthy on this host"  # type: ignore[union-attr]
    deployed(bed.store, 3, finished="2026-11-25T12:05:00Z", prev=2)
    bed.target.running = release(3)
    p = bed.promoter().tick()
    assert p is not None and (p.step, p.digest, p.due) == ("waiting", str(digest(3)),
                                                            T0 + 300 + 1 + 60)


def test_nothing_is_scheduled_for_a_build_this_host_did_not_deploy(tmp_path: Path) -> None:
    b = Bed(tmp_path)
    b.store.set_current(release(2))  # read from the engine on a first start
    assert b.promoter().tick() is None
    assert b.promoter().pending() is None


def test_order_by_history_uses_the_first_deploy_of_each_digest() -> None:
    rows = [HistoryRow("1", "s", "f", Outcome.DEPLOYED, "WATCH", to_digest="b"),
            HistoryRow("2", "s", "f", Outcome.DEPLOYED, "WATCH", to_digest="a"),
            HistoryRow("3", "s", "f", Outcome.ROLLED_BACK, "VERIFY", to_digest="c"),
            HistoryRow("4", "s", "f", Outcome.DEPLOYED, "WATCH", to_digest="b")]
    assert rules.order_by_history(rows, "a", "b") is Order.NEWER
    assert rules.order_by_history(rows, "b", "a") is Order.OLDER
    assert rules.order_by_history(rows, "c", "a") is Order.UNKNOWN
    assert rules.order_by_history(rows, "a", "a") is Order.SAME


@pytest.mark.parametrize(("a", "b", "order"), [
    ("2026-11-25T12:00:01.123456789Z", "2026-11-25T12:00:00Z", Order.NEWER),
    ("2026-11-25T12:00:00+01:00", "2026-11-25T12:00:00Z", Order.OLDER),
    (None, "2026-11-25T12:00:00Z", Order.UNKNOWN),
    ("yesterday", "2026-11-25T12:00:00Z", Order.UNKNOWN),
])
def test_order_by_created(a: str | None, b: str, order: Order) -> None:
    assert rules.order_by_created(a, b) is order


def _settings(tmp_path: Path, **over: Any) -> Settings:
    env = {"TWILIGHT_IMAGE": "ghcr.io/acme/app", "TWILIGHT_CONTAINER": "app",
           "TWILIGHT_STATE_DIR": str(tmp_path / "s"), **over}
    cfg = tmp_path / "agent.env"
    cfg.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return load_settings(cfg)


def test_promote_settings_are_checked_at_load(tmp_path: Path, monkeypatch: Any) -> None:
    token = tmp_path / "promote"
    token.write_text("ghp_secret\n")
    ok = {"TWILIGHT_PROMOTE_TO": "stable", "TWILIGHT_REGISTRY_USERNAME": "ci",
          "TWILIGHT_PROMOTE_PASSWORD_FILE": str(token)}
    s = _settings(tmp_path, **ok)
    assert s.promote_password().get_secret_value() == "ghp_secret"  # type: ignore[union-attr]
    assert "ghp_secret" not in repr(s)
    for bad, says in [({"TWILIGHT_PROMOTE_TO": "Stable!"}, "TWILIGHT_PROMOTE_TO"),
                      ({"TWILIGHT_PROMOTE_TO": "main"}, "differ from TWILIGHT_TRACK"),
                      ({"TWILIGHT_REGISTRY_USERNAME": ""}, "TWILIGHT_REGISTRY_USERNAME"),
                      ({"TWILIGHT_PROMOTE_PASSWORD_FILE": str(tmp_path / "none")},
                       "promote-token"),
                      ({"TWILIGHT_PROMOTE_AFTER": "-1"}, "TWILIGHT_PROMOTE_AFTER")]:
        with pytest.raises(ConfigError) as exc:
            _settings(tmp_path, **{**ok, **bad})
        assert says in str(exc.value) and "\n" not in str(exc.value), bad
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "promote-token").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = _settings(tmp_path, **{**ok, "TWILIGHT_PROMOTE_PASSWORD_FILE": ""})
    assert s.promote_password().get_secret_value() == "from-systemd"  # type: ignore[union-attr]


def test_the_pusher_puts_the_same_bytes_and_media_type_with_a_push_token() -> None:
    body = jsonlib.dumps({"schemaVersion": 2, "mediaType":
                          "application/vnd.oci.image.manifest.v1+json"}).encode()
    d = "sha256:" + hashlib.sha256(body).hexdigest()
    media = "application/vnd.oci.image.manifest.v1+json"
    seen: list[tuple[str, str, bytes, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((req.method, req.url.path + ("?" + req.url.query.decode()
                                                 if req.url.query else ""),
                     req.content, req.headers.get("content-type", "")))
        if req.url.path == "/token":
            return httpx.Response(200, json={"token": "t0k"})
        if "authorization" not in req.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://'
                                                'reg.example/token",service="reg"'})
        if req.method == "GET":
            return httpx.Response(200, content=body, headers={"Content-Type": media})
        return httpx.Response(201, headers={"Docker-Content-Digest": d})

    pusher = TagPusher("https://reg.example", "acme/app",
                       Credentials("ci", SecretStr("ghp_x"), "promote token"),
                       tag_pattern=r"^(stable|main)$",
                       session={"transport": httpx.MockTransport(handler)})
    assert pusher.point("stable", Digest(d)) == d
    token = [s for s in seen if s[1].startswith("/token")]
    assert token and "scope=repository%3Aacme%2Fapp%3Apull%2Cpush" in token[0][1]
    (put,) = [s for s in seen if s[0] == "PUT"]
    assert put == ("PUT", "/v2/acme/app/manifests/stable", body, media)


def test_the_agent_promotes_after_its_polls_and_status_shows_the_wait(tmp_path: Path) -> None:
    token = tmp_path / "promote"
    token.write_text("ghp_secret\n")
    settings = Settings(image=REPO, container="app", state_dir=tmp_path / "state",
                        env_file=tmp_path / ".env", watch=0, promote_to="stable",
                        promote_after=60, registry_username="ci",
                        promote_password_file=token, tag_pattern=r"^(sha-[0-9a-f]{7}|main|stable)$")
    (tmp_path / ".env").write_text("IMAGE_TAG=sha-0000001\n")
    runtime = FakeRuntime("app", release(1))
    store, sink, pusher = Store(settings.state_dir), Sink(), Pusher(digest(1))
    agent = build_agent(settings, [sink], registry=FakeRegistry(release(2)), runtime=runtime,
                        health=FakeHealth(runtime), store=store)
    offset = [0.0]
    agent.promoter = Promoter(PromoteConfig("stable", 60.0), store, agent.target,
                              EventBus([sink]), lambda: pusher,
                              WallClock(lambda: time.time() + offset[0]))
    assert agent.poll_once().outcome == "deployed"
    assert agent.poll_once().outcome == "up_to_date"
    shown = agent.status()["promotion"]
    assert (shown["step"], shown["tag"]) == ("waiting", "stable") and shown["left_s"] > 50
    offset[0] = 61
    agent.poll_once()
    assert pusher.puts == [("stable", digest(2))]
    assert agent.status()["promotion"]["step"] == "promoted"
    assert agent.promote("sha-0000002").step == "promoted"  # forced: already there
    assert pusher.puts == [("stable", digest(2))]


def test_promotions_are_not_counted_as_deploys(bed: Bed) -> None:
    bed.promoter().tick()
    bed.now = T0 + 61
    bed.promoter().tick()
    assert bed.store.history(1)[0].outcome == "promoted"
    assert set(bed.store.outcome_counts()) == {"deployed"}


def test_an_unhealthy_build_is_not_promoted(bed: Bed) -> None:
    bed.promoter().tick()
    bed.target.health = "unhealthy"
    bed.now = T0 + 61
    p = bed.promoter().tick()
    assert p is not None and p.step == "dropped"
    assert p.reason == "not running healthy on this host: app is unhealthy"
    assert bed.pusher.puts == []


def test_a_build_whose_health_url_fails_at_the_due_time_is_dropped(bed: Bed) -> None:
    """Past its gate and its watch the build broke: the gate asked again says 5xx."""
    asked: list[tuple[str, str | None]] = []

    def gate(container_id: str, url: str | None) -> HealthVerdict:
        asked.append((container_id, url))
        return HealthVerdict(False, "5 server errors in a row (last: HTTP 500: fail)", 10.0)

    bed.promoter(gate).tick()
    assert asked == []  # nothing is asked before the due time
    bed.now = T0 + 61
    p = bed.promoter(gate).tick()
    assert asked == [("c1", "http://c1:8080/healthz")]
    assert p is not None and p.step == "dropped"
    assert p.reason == ("not running healthy on this host: app: 5 server errors in a row "
                        "(last: HTTP 500: fail)")
    assert bed.pusher.puts == []
    assert bed.sink.typed[-1].step == "dropped"


def test_a_build_the_gate_still_passes_is_promoted(bed: Bed) -> None:
    bed.promoter(lambda cid, url: HealthVerdict(True, "healthy", 0.1)).tick()
    bed.now = T0 + 61
    p = bed.promoter(lambda cid, url: HealthVerdict(True, "healthy", 0.1)).tick()
    assert p is not None and p.step == "promoted"
    assert bed.pusher.puts == [("stable", digest(2))]


def test_an_operator_promotion_drops_an_unfinished_one(bed: Bed) -> None:
    bed.promoter().tick()
    bed.now = T0 + 61
    bed.pusher.down = True
    bed.promoter().tick()  # left at "promoting" for sha-0000002
    bed.pusher.down = False
    assert bed.promoter().force(release(1)).step == "promoted"
    assert bed.pusher.stable == digest(1)
    assert bed.promoter().tick().step == "dropped"  # type: ignore[union-attr]
    assert bed.pusher.stable == digest(1)  # the operator's choice stays


def test_with_verification_on_a_canary_promotes_only_a_digest_it_verified(bed: Bed) -> None:
    verified: set[str] = set()
    bed.promoter().tick(verified=verified.__contains__)
    bed.now = T0 + 61
    dropped = bed.promoter().tick(verified=verified.__contains__)
    assert dropped is not None and dropped.step == "dropped"
    assert dropped.reason == "its signature was never verified on this host"
    assert bed.pusher.puts == []  # the tag never moved
    assert bed.sink.named("promotion")[0]["outcome"] == "dropped"


def test_a_verified_digest_promotes_as_before(bed: Bed) -> None:
    verified = {str(digest(2))}
    bed.promoter().tick(verified=verified.__contains__)
    bed.now = T0 + 61
    done = bed.promoter().tick(verified=verified.__contains__)
    assert done is not None and done.step == "promoted"
    assert bed.pusher.puts == [("stable", digest(2))]
