"""What the operator sees from the CLI: help with examples that really parse, pull progress
on a terminal (and a clean single line in a pipe), ``status`` as a table or as JSON."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import select
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.unit.fakes import REPO, FakeHealth, FakeRegistry, FakeRuntime, release
from twilight_agent import app, cli
from twilight_agent.agent import Agent
from twilight_agent.core.models import Digest
from twilight_agent.settings import Settings

OLD, NEW = release(1), release(2)


# --------------------------------------------------------------------------- --help
def help_text(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def examples(text: str) -> list[list[str]]:
    """The command lines under ``examples:``, as argv (a pipe into jq and the trailing
    comment column dropped; ``<64 hex>`` filled in)."""
    block = text.split("examples:\n", 1)[1].split("\n\n", 1)[0]
    lines = [ln.strip().split(" | ")[0].split("   ")[0] for ln in block.splitlines()]
    return [shlex.split(ln.replace("<64 hex>", "a" * 64)) for ln in lines if ln]


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_has_help_with_examples_that_parse(command: str) -> None:
    found = examples(help_text(command))
    assert found, f"`{command} --help` shows no examples"
    for argv in found:
        assert argv[0] == "twilight-agent"
        args = cli.build_parser().parse_args(argv[1:])
        assert args.command == command, argv


def test_top_level_help_has_examples_and_exit_codes() -> None:
    text = help_text()
    for argv in examples(text):
        if "COMMAND" not in argv:
            assert cli.build_parser().parse_args(argv[1:]).command in cli.COMMANDS
    assert "exit codes: 0 done" in text and "5 registry or Docker" in text


# --------------------------------------------------------------------------- deploy
class PullingRuntime(FakeRuntime):
    """Reports pull progress the way the engine's stream does."""

    def pull(self, repository: str, digest: Digest, auth: Mapping[str, str] | None,
             progress: Callable[[str], None] | None = None,
             moved: Callable[[str], None] | None = None) -> str:
        if progress is not None:
            progress(f"Pulling from {repository}")
            progress("0123456789ab: Pull complete")
            progress(f"Digest: {digest}")
        return super().pull(repository, digest, auth, progress)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config file, and ``app.build_agent`` building the agent over in-memory fakes of the
    registry, the engine and the health gate (the real store and lock in the state dir)."""
    path = tmp_path / "agent.env"
    path.write_text(f"TWILIGHT_IMAGE={REPO}\nTWILIGHT_CONTAINER=app\n"
                    f"TWILIGHT_STATE_DIR={tmp_path / 'state'}\n")
    runtime = PullingRuntime("app", OLD)
    real_build_agent = app.build_agent

    def build_agent(settings: Settings, sinks: list[Any] | None = None, **parts: Any) -> Agent:
        # What the command hands in (the held lock, a read-only store) is kept.
        return real_build_agent(settings, sinks, registry=FakeRegistry(NEW), runtime=runtime,
                                health=FakeHealth(runtime), **parts)

    monkeypatch.setattr(app, "build_agent", build_agent)
    # The CLI sets up logging and signal handlers for its process: give them back after.
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    logging_config = structlog.get_config()
    yield path
    structlog.configure(**logging_config)
    for s, handler in saved.items():
        signal.signal(s, handler)


def on_a_terminal(monkeypatch: pytest.MonkeyPatch, run: Callable[[], int]) -> tuple[int, str]:
    """Run with stdout on a pseudo-terminal; return the exit code and what it showed."""
    master, slave = pty.openpty()
    term = os.fdopen(slave, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", term)
    try:
        code = run()
        term.flush()
        chunks = []
        while select.select([master], [], [], 0.2)[0]:
            chunks.append(os.read(master, 65536))
    finally:
        monkeypatch.undo()
        term.close()
        os.close(master)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def test_deploy_on_a_terminal_shows_the_pull(config: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    code, shown = on_a_terminal(monkeypatch, lambda: cli.main(["--config", str(config),
                                                               "deploy"]))
    assert code == 0, shown
    assert f"pull: Pulling from {REPO}\n" in shown
    assert "pull: 0123456789ab: Pull complete\n" in shown
    assert f"pull: Digest: {NEW.digest}\n" in shown
    assert shown.endswith(f"deployed: {NEW.label}\n")


def test_deploy_in_a_pipe_prints_one_line(config: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(config), "deploy"]) == 0
    out, err = capsys.readouterr()
    assert out == f"deployed: {NEW.label}\n"
    assert err == ""


# --------------------------------------------------------------------------- status
def test_status_is_a_table_on_a_terminal_and_in_a_pipe(
        config: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(config), "deploy"]) == 0
    capsys.readouterr()
    code, shown = on_a_terminal(monkeypatch, lambda: cli.main(["--config", str(config),
                                                               "status"]))
    assert code == 0
    assert cli.main(["--config", str(config), "status"]) == 0
    piped = capsys.readouterr().out
    assert shown == piped
    rows = dict(line.split(None, 1) for line in piped.splitlines() if " " in line.strip())
    assert rows["current"].startswith(f"{NEW.tag} (sha256:")
    assert rows["previous"].startswith(f"{OLD.tag} (sha256:")
    assert rows["following"] == "track main"
    assert rows["phase"] == "IDLE"
    assert rows["quarantined"] == "0"


def test_status_json_is_for_scripts(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(config), "deploy"]) == 0
    capsys.readouterr()
    assert cli.main(["--config", str(config), "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["current"] == {"tag": NEW.tag, "digest": str(NEW.digest)}
    assert st["previous"] == {"tag": OLD.tag, "digest": str(OLD.digest)}
    assert (st["pinned"], st["quarantined"], st["phase"]) == (None, [], "IDLE")
    assert st["last_result"]["outcome"] == "deployed"
