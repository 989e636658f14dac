"""The layering that docs/architecture.md describes, checked against the code."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from twilight_agent.core import events, machine
from twilight_agent.core.outcomes import Outcome
from twilight_agent.core.tunables import Tunables

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "twilight_agent"
DOC = (ROOT / "docs" / "architecture.md").read_text()
# Allowed to import inside a function, to keep start-up fast (heavy libraries only).
LAZY_OK = {"app.py", "cli.py", "commands"}
AGENT_USERS = {"app.py", "agent.py", "commands"}


def modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(PKG.rglob("*.py"))]


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return []


def top(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.name


def test_only_the_composition_root_and_the_commands_import_the_agent() -> None:
    for path, tree in modules():
        if top(path) in AGENT_USERS:
            continue
        names = [n for node in ast.walk(tree) for n in imported(node)]
        assert "twilight_agent.agent" not in names, path


def test_no_import_inside_a_function_outside_the_entry_points() -> None:
    for path, tree in modules():
        if top(path) in LAZY_OK:
            continue
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for node in ast.walk(fn) for n in imported(node)]
                assert not inner, f"{path}:{fn.name} imports {inner}"


def test_core_imports_only_the_standard_library_and_core() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in sorted((PKG / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            for name in imported(node)[:1]:
                root = name.split(".")[0]
                assert root in stdlib or name.startswith("twilight_agent.core"), (path, name)


def test_no_module_over_400_lines_and_no_function_over_40() -> None:
    for path, tree in modules():
        assert len(path.read_text().splitlines()) <= 400, path
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
                assert length <= 40, f"{path}:{fn.name} has {length} lines"


def test_the_guide_names_every_state_event_and_command_of_the_machine() -> None:
    states = {s.value for s in machine.State}
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", DOC, re.M))
    assert documented == states
    for name in [*_union_names(machine.Event), *_union_names(machine.Command)]:
        assert f"`{name}`" in DOC, name
    for event in _union_names(events.Event):
        cls = getattr(events, event)
        assert f"| `{event}` | `{cls.name}` |" in DOC, event


def test_the_guide_names_no_state_or_step_the_machine_lacks() -> None:
    known = {s.value for s in machine.State} | set(_union_names(machine.Command))
    for phase, step in re.findall(r"^\| ([A-Z_]+)/([A-Za-z]+)", DOC, re.M):
        assert phase in known and step in known, (phase, step)


# Strings that equal an outcome's value but name something else, compared where they are.
NOT_OUTCOMES = {
    "adapters/notify/message.py",  # the message's ``event`` kind (``deployed``, ``halted``, ...)
}


def test_no_outcome_string_is_compared_outside_core() -> None:
    """Outside core an outcome is ``Outcome`` (or a ``HistoryRow`` property), never its
    string: a comparison with a literal such as ``"rolled_back"`` is a typo waiting."""
    values = {o.value for o in Outcome}
    for path, tree in modules():
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("core/") or rel in NOT_OUTCOMES:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in [node.left, *node.comparators]:
                found = [c.value for c in ast.walk(side) if isinstance(c, ast.Constant)
                         and c.value in values]
                assert not found, f"{rel}:{node.lineno} compares {found}"


# Reading the system's clocks is core/clock.py's job; each exception says why it cannot be.
CLOCK_READS = {"time.time", "time.monotonic", "time.sleep", "time.gmtime", "time.localtime",
               "time.perf_counter", "time.clock_gettime", "time.clock_gettime_ns",
               "datetime.now", "datetime.utcnow", "dt.datetime.now", "dt.datetime.utcnow"}
CLOCK_OK = {
    "core/clock.py",  # the one clock
    # APScheduler compares ``next_run_time`` with its own (real) clock: "run now" must be
    # the real now, whatever clock the daemon's loop is given.
    "daemon.py",
    # systemd's RELOADING=1 wants MONOTONIC_USEC: the kernel's CLOCK_MONOTONIC in µs at
    # the moment of the message, which an injected clock cannot give.
    "adapters/notify/targets.py",
}


def test_time_is_read_only_through_the_clock() -> None:
    """``time.time()``, ``time.monotonic()``, ``time.sleep`` and friends only in
    ``core/clock.py``: everything else gets a ``Clock`` (structlog's ``TimeStamper`` stamps
    log lines itself and is not ours to inject)."""
    for path, tree in modules():
        rel = path.relative_to(PKG).as_posix()
        if rel in CLOCK_OK:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and ast.unparse(node) in CLOCK_READS:
                raise AssertionError(f"{rel}:{node.lineno} reads {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and node.module == "time":
                raise AssertionError(f"{rel}:{node.lineno} imports from time")


def test_stop_grace_ends_before_systemd_kills_the_unit() -> None:
    unit = (ROOT / "systemd" / "twilight-agent.service").read_text()
    timeout = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M)
    assert timeout is not None
    assert Tunables().stop_grace_s < int(timeout.group(1))


def _union_names(union: object) -> list[str]:
    return [t.__name__ for t in getattr(union, "__args__", ())]


def test_each_target_kind_implements_the_port_and_only_the_capabilities_it_has() -> None:
    """The swap port in full for every kind; a capability only where the kind has it (no
    ``publishes_ports() -> True`` to steer the run, no refusing ``run_task``)."""
    from twilight_agent.adapters.docker.container_target import ComposeGroupTarget, ContainerTarget
    from twilight_agent.adapters.docker.swarm_target import SwarmTarget
    from twilight_agent.core.ports import RollsOutItself, RunsTasks, StartsBeside, TargetPort

    port = {n for n in vars(TargetPort) if not n.startswith("_")}
    kinds = {ContainerTarget: {StartsBeside, RunsTasks}, ComposeGroupTarget: {StartsBeside,
             RunsTasks}, SwarmTarget: {RollsOutItself}}
    for kind, capabilities in kinds.items():
        assert port <= set(dir(kind)), (kind, port - set(dir(kind)))
        has = {c for c in (StartsBeside, RunsTasks, RollsOutItself) if issubclass(kind, c)}
        assert has == capabilities, kind


# The run layer and the adapters get small config records from app.py, never Settings.
RUN_LAYER = {"agent.py", "runner.py", "deploy_run.py", "recording.py", "recovery.py",
             "refusal.py", "trust.py", "promotion.py", "status.py"}


def _imports_settings(tree: ast.Module) -> list[str]:
    """Every import of the settings (``Settings`` and its mixins), TYPE_CHECKING too."""
    found = []
    for node in ast.walk(tree):
        names = imported(node)
        if isinstance(node, ast.ImportFrom) and node.module == "twilight_agent":
            names = [f"twilight_agent.{a.name}" for a in node.names]
        found += [n for n in names if n == "twilight_agent.settings"
                  or n.startswith(("twilight_agent.settings.", "twilight_agent.settings_"))]
    return found


def test_settings_stop_at_the_composition_root() -> None:
    """No adapter and nothing of the run layer imports the settings: each is handed its
    config record (``AgentConfig``, ``RunConfig``, ``CredentialSource``, ...) by app.py."""
    checked = 0
    for path, tree in modules():
        rel = path.relative_to(PKG)
        if not (rel.parts[0] == "adapters" or rel.name in RUN_LAYER
                or rel.name.startswith("steps_")):
            continue
        checked += 1
        assert not _imports_settings(tree), (path, _imports_settings(tree))
    assert checked > 30  # the adapters and the run layer were found


# The layers of docs/architecture.md, lowest first: a module imports its own layer and the
# ones below it, never one above. Inside adapters/, state < registry < the rest.
LAYERS = (("core",), ("errors", "lazy", "logs", ""), ("adapters",), ("run",),
          ("agent", "trust", "promotion", "status"),
          ("settings", "target_kinds", "instances", "app"),
          ("cli", "__main__", "commands", "daemon"))
ADAPTER_ORDER = {"": 0, "state": 0, "registry": 1, "verify": 2, "docker": 2, "notify": 2}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _rank(module: str) -> tuple[int, int]:
    parts = [*module.split(".")[1:], ""]
    layer = next(i for i, heads in enumerate(LAYERS) if parts[0] in heads)
    return layer, ADAPTER_ORDER[parts[1]] if parts[0] == "adapters" else 0


def test_imports_run_down_the_layers_never_up() -> None:
    names = _module_names()
    ups, between = [], 0
    for module, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            for name in imported(node) + [
                    f"twilight_agent.{a.name}" for a in getattr(node, "names", [])
                    if isinstance(node, ast.ImportFrom) and node.module == "twilight_agent"]:
                if not name.startswith("twilight_agent"):
                    continue
                target = max((m for m in names if name == m or name.startswith(m + ".")),
                             key=len)
                if _rank(target) > _rank(module):
                    ups.append(f"{module} -> {target}")
                between += _rank(target)[0] != _rank(module)[0]
    assert between > 200  # the graph was read
    assert ups == [], ups
