"""Deploy windows and the minimum age: parsing, open/next on a fixed clock (across
midnight and a daylight-saving change), and the agent over fakes waiting, then deploying
at the window's start and once a build is old enough."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.unit.fakes import WallClock
from tests.unit.test_agent import NEW, NEWER, OLD, World
from twilight_agent.app import build_agent
from twilight_agent.core.windows import is_open, next_opening, parse_windows
from twilight_agent.errors import ConfigError, InvalidInput
from twilight_agent.settings import Settings

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


BERLIN = parse_windows("Mon-Fri 09:00-17:00 Europe/Berlin")


@pytest.mark.parametrize(("when", "open_"), [
    ("2026-11-25T08:30", True),    # Wed 09:30 in Berlin (UTC+1)
    ("2026-11-25T07:59", False),   # Wed 08:59 in Berlin
    ("2026-11-25T16:00", False),   # Wed 17:00 in Berlin: the end is not inside
    ("2026-11-28T10:00", False),   # Saturday
])
def test_a_weekday_window_in_a_zone(when: str, open_: bool) -> None:
    assert is_open(BERLIN, at(when)) is open_


def test_the_next_opening_is_monday_morning_after_a_friday_evening() -> None:
    nxt = next_opening(BERLIN, at("2026-11-27T18:00"))  # Fri 19:00 Berlin
    assert nxt == at("2026-11-30T08:00")  # Mon 09:00 Berlin


def test_summer_time_keeps_local_hours() -> None:
    nxt = next_opening(BERLIN, at("2026-06-05T18:00"))  # Fri, UTC+2
    assert nxt == at("2026-06-08T07:00")


def test_a_window_across_midnight_and_several_windows() -> None:
    w = parse_windows("Sat 22:00-02:00 UTC; Tue,Thu 12:00-13:00 UTC")
    assert is_open(w, at("2026-11-29T01:30"))  # Sunday 01:30 belongs to Saturday's window
    assert not is_open(w, at("2026-11-29T02:00"))
    assert is_open(w, at("2026-12-01T12:10"))
    assert next_opening(w, at("2026-11-29T03:00")) == at("2026-12-01T12:00")


def test_no_window_means_always_open() -> None:
    assert is_open((), at("2026-11-29T03:00")) and next_opening((), at("2026-11-29")) is None


@pytest.mark.parametrize("bad", ["Mon-Fri 9-17 UTC", "Mon-Fry 09:00-17:00 UTC",
                                 "Mon 09:00-17:00 Mars/Olympus", "Mon 25:00-26:00 UTC",
                                 "weekdays 09:00-17:00 UTC"])
def test_invalid_windows_are_a_config_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises((ValueError, ConfigError), match=r"TWILIGHT_DEPLOY_WINDOW|deploy window"):
        Settings(image="ghcr.io/a/b", container="app", state_dir=tmp_path, deploy_window=bad)


# --------------------------------------------------------------------------- the agent
class Wall:
    def __init__(self, t: dt.datetime) -> None:
        self.t = t

    def __call__(self) -> dt.datetime:
        return self.t


def agent(w: World, wall: Wall):
    return build_agent(w.settings, [w.sink], registry=w.registry, runtime=w.runtime,
                       health=w.health, store=w.store,
                       clock=WallClock(lambda: wall().timestamp()))


def test_a_build_pushed_outside_the_window_is_deployed_when_it_opens(tmp_path: Path) -> None:
    w = World(tmp_path, watch=0, deploy_window="Mon-Fri 09:00-17:00 Europe/Berlin")
    wall = Wall(at("2026-11-27T18:00"))  # Friday evening
    a = agent(w, wall)
    report = a.poll_once()
    assert report.outcome == "waiting" and "2026-11-30T09:00+01:00" in report.reason
    assert a.status()["next_window"] == "2026-11-30T09:00+01:00"
    assert w.running == OLD.digest and "pull" not in w.runtime.calls
    wall.t = at("2026-11-30T08:00")  # Monday 09:00 in Berlin
    assert a.poll_once().outcome == "deployed" and w.running == NEW.digest


def test_a_cli_deploy_outside_the_window_needs_now(tmp_path: Path) -> None:
    w = World(tmp_path, watch=0, deploy_window="Mon-Fri 09:00-17:00 UTC")
    a = agent(w, Wall(at("2026-11-28T12:00")))
    with pytest.raises(InvalidInput, match="--now"):
        a.deploy(NEW.tag)
    assert a.deploy(NEW.tag, now=True).outcome == "deployed"


def test_min_age_holds_a_new_build_until_it_has_been_seen_long_enough(tmp_path: Path) -> None:
    w = World(tmp_path, watch=0, min_age=1800)
    wall = Wall(at("2026-11-25T10:00"))
    a = agent(w, wall)
    first = a.poll_once()
    assert first.outcome == "waiting" and "1800s to go" in first.reason
    wall.t = at("2026-11-25T10:29")
    assert a.poll_once().outcome == "waiting" and w.running == OLD.digest
    wall.t = at("2026-11-25T10:30")
    assert a.poll_once().outcome == "deployed" and w.running == NEW.digest


def test_a_build_replaced_before_its_age_is_never_deployed(tmp_path: Path) -> None:
    w = World(tmp_path, watch=0, min_age=1800)
    wall = Wall(at("2026-11-25T10:00"))
    a = agent(w, wall)
    assert a.poll_once().outcome == "waiting"
    w.registry.track = NEWER  # CI replaced it after 10 minutes
    wall.t = at("2026-11-25T10:10")
    assert a.poll_once().outcome == "waiting"
    wall.t = at("2026-11-25T10:35")  # NEW would be old enough now; NEWER is not
    assert a.poll_once().outcome == "waiting" and w.running == OLD.digest
    wall.t = at("2026-11-25T10:40")
    assert a.poll_once().outcome == "deployed" and w.running == NEWER.digest
    assert NEW.digest not in w.runtime.images  # never even pulled
