"""One ``TargetKind`` record per target kind (issue #26): nothing outside the records and
the adapters branches on a kind's setting, so a new kind is its adapter, its settings
fields and one record, and the rest of the code picks it up."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fakes import REPO, FakeHealth, FakeRegistry, FakeRuntime, Sink, release
from twilight_agent import app, target_kinds
from twilight_agent.adapters.docker.container_target import ContainerTarget
from twilight_agent.adapters.state.store import Store
from twilight_agent.commands.check import _running_dict
from twilight_agent.core.clock import Clock
from twilight_agent.core.ports import TargetPort
from twilight_agent.errors import ConfigError
from twilight_agent.instances import refuse_overlap, target_key
from twilight_agent.settings import Settings
from twilight_agent.target_kinds import KINDS, TargetKind

PKG = Path(__file__).resolve().parents[2] / "twilight_agent"
OLD, NEW = release(1), release(2)


def selecting_names() -> set[str]:
    """Each kind's selecting settings, as an attribute, a config key or an env name."""
    fields = {f for kind in KINDS for f in kind.selects}
    return fields | {f.upper() for f in fields} | {f"TWILIGHT_{f.upper()}" for f in fields}


def conditions(tree: ast.AST) -> list[ast.expr]:
    """Every expression that picks a branch: if/while/ternary tests, comprehension
    filters, and/or chains."""
    out: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp, ast.While)):
            out.append(node.test)
        elif isinstance(node, ast.comprehension):
            out += node.ifs
        elif isinstance(node, ast.BoolOp):
            out.append(node)
    return out


def branching_places() -> set[tuple[str, str]]:
    """(module, function) of every branch on a kind's selecting setting, outside the
    adapters (a kind's own code)."""
    names, places = selecting_names(), set()
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "adapters":
            continue
        tree = ast.parse(path.read_text())
        fns = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef,
                                                         ast.AsyncFunctionDef))]
        for cond in conditions(tree):
            for n in ast.walk(cond):
                if (isinstance(n, ast.Attribute) and n.attr in names) or (
                        isinstance(n, ast.Constant) and n.value in names):
                    inside = [f for f in fns if f.lineno <= n.lineno <= (f.end_lineno or 0)]
                    owner = min(inside, key=lambda f: (f.end_lineno or 0) - f.lineno,
                                default=None)
                    places.add((rel.as_posix(), owner.name if owner else "<module>"))
    return places


def test_only_the_records_branch_on_a_kinds_setting() -> None:
    """The count of places that name a kind's selecting setting in a branch: six before
    the records (app.build_target, settings' checks and has_target, the swarm mixin's
    check, instances.target_key, check's kind label); now only the record module."""
    places = branching_places()
    assert {module for module, _ in places} == {"target_kinds.py"}, sorted(places)
    assert len(places) <= 2, sorted(places)  # compose's and swarm's own rules


def test_the_kinds_of_today_keep_their_names_and_labels() -> None:
    assert [(k.name, k.label, k.selects) for k in KINDS] == [
        ("container", "container", ("container",)),
        ("swarm service", "service", ("swarm_service",)),
        ("compose", "container", ("compose_project",))]


# -- a toy kind, registered through its record alone ------------------------------------
class ToySettings(Settings):
    """Settings with the toy kind's one field (a real kind adds it to ``Settings``)."""

    toy_box: str = ""


def _build_toy(settings: Any, runtime: Any, clock: Clock, auth: Any) -> TargetPort:
    """A box is a container by another name: the container adapter serves as the toy's."""
    return ContainerTarget(runtime, name=settings.toy_box, env_file=settings.env_file)


TOY = TargetKind(name="box", label="box", selects=("toy_box",), fields=("toy_box",),
                 build=_build_toy, key=lambda v: (v["TOY_BOX"], frozenset()),
                 excludes=("container", "compose_project", "swarm_service"),
                 clash="set TWILIGHT_TOY_BOX or {env}, not both")


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> TargetKind:
    monkeypatch.setattr(target_kinds, "KINDS", (*KINDS, TOY))
    return TOY


def test_a_toy_kind_is_chosen_built_keyed_and_labelled_through_its_record(
        toy: TargetKind, tmp_path: Path) -> None:
    s = ToySettings(image=REPO, toy_box="app", state_dir=tmp_path / "state")
    assert s.has_target and target_kinds.kind_of(s) is toy
    runtime = FakeRuntime("app", OLD)
    target = app.build_target(s, runtime)
    assert isinstance(target, ContainerTarget) and target.snapshot().name == "app"
    assert target_key({"TOY_BOX": "app"}) == ("unix:///var/run/docker.sock", "box", "app",
                                              frozenset())
    snap = runtime.snapshot(runtime.cid)
    assert _running_dict(snap, s) == {"container": "app", "kind": "box", "tag": OLD.tag,
                                      "digest": OLD.digest}


def test_a_toy_kind_deploys_end_to_end(toy: TargetKind, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"IMAGE_TAG={OLD.tag}\n")
    s = ToySettings(image=REPO, toy_box="app", state_dir=tmp_path / "state", env_file=env)
    runtime = FakeRuntime("app", OLD)
    agent = app.build_agent(s, [Sink()], registry=FakeRegistry(NEW), runtime=runtime,
                            health=FakeHealth(runtime), store=Store(s.state_dir))
    report = agent.deploy()
    assert (report.outcome, report.exit_code) == ("deployed", 0)
    assert runtime.running_digest() == NEW.digest


def test_a_toy_kinds_exclusivity_and_overlap_come_from_its_record(
        toy: TargetKind, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set TWILIGHT_TOY_BOX or TWILIGHT_CONTAINER, not"):
        ToySettings(image=REPO, toy_box="app", container="app")
    a, b = tmp_path / "a.env", tmp_path / "b.env"
    for path in (a, b):
        path.write_text(f"TWILIGHT_IMAGE={REPO}\nTWILIGHT_TOY_BOX=app\n")
    with pytest.raises(ConfigError, match="both deploy into box app"):
        refuse_overlap(ToySettings(image=REPO, toy_box="app"), a)
