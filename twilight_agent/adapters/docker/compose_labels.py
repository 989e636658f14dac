"""The labels compose would give a service's new container for the ``.env`` a deploy is
about to write, so that ``docker compose up -d`` typed after the deploy finds nothing to
change, the first time too.

What compose compares before it recreates a container (read in its sources, checked on
the engine):

- v2 (2.26, ``pkg/compose/convergence.go`` ``mustRecreate``): the
  ``com.docker.compose.config-hash`` label against ``ServiceHash`` (sha256 of the
  service's resolved model, the image reference included), and the
  ``com.docker.compose.image`` label against the local id of the service's image.
- v1 (1.29, ``compose/service.py`` ``_containers_have_diverged``): the config-hash label
  against sha256 of ``config_dict`` (the options, the image reference among them, and the
  local id of that image).

The hash is compose's own answer, not a copy of its algorithm: ``config --hash SERVICE``
of the compose that made the container (its ``com.docker.compose.version`` label: 1.x is
``docker-compose``, else ``docker compose``), on the project's files, with a private copy
of the ``.env`` that already names the new tag and digest (the ``.env`` itself is written
only at COMMIT, so a rollback never leaves it naming a bad build). It is trusted only when
the same command on the ``.env`` as it is gives the old container's label (``_new_labels``).
Without compose on the host, or when it fails or disagrees, the labels stay as they were
and the first ``up -d`` recreates the container, as compose would after any change it did
not make itself. So does a v1
project whose compose file does not use ``IMAGE_DIGEST``: v1 hashes the local id of
``repo:tag``, and the image gets that tag only at COMMIT (measured on engine 26).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from twilight_agent.adapters.state.envfile import read_regular, rewrite
from twilight_agent.core.tunables import DEFAULT
from twilight_agent.errors import InvalidInput
from twilight_agent.logs import get_logger

log = get_logger("twilight.compose")

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
VERSION = "com.docker.compose.version"
WORKING_DIR = "com.docker.compose.project.working_dir"
CONFIG_FILES = "com.docker.compose.project.config_files"
CONFIG_HASH = "com.docker.compose.config-hash"
IMAGE = "com.docker.compose.image"  # v2 only
# What compose reads from the environment besides the .env; nothing else is passed on, so
# a variable of the agent's own cannot change the answer.
PASSED_ENV = ("PATH", "HOME", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")

# (old labels, new image id) -> the labels to change
Relabel = Callable[[Mapping[str, str], str], dict[str, str]]
Run = Callable[..., "subprocess.CompletedProcess[str]"]
OUTPUT_CAP = 64 * 1024  # what `config --hash SERVICE` may print: one line is expected


def capped_run(argv: list[str], *, cwd: str, env: dict[str, str], timeout: float,
               cap: int = OUTPUT_CAP, **_: object) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and keep at most ``cap`` bytes of its stdout: a compose that prints
    without end, or hangs, is killed (with what it started: the docker CLI runs compose
    as its child) at ``cap`` bytes or after ``timeout`` seconds, and fails."""
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                          start_new_session=True) as proc:
        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            out = proc.stdout.read(cap)
            if len(out) >= cap:
                kill()
            code = proc.wait()
        finally:
            timer.cancel()
    code = code if len(out) < cap else -signal.SIGKILL
    return subprocess.CompletedProcess(argv, code, out.decode(errors="replace"), "")


def compose_argv(version: str) -> list[str] | None:
    """The compose that wrote ``version`` into its labels, if it is on this host."""
    if version.startswith("1."):
        found = shutil.which("docker-compose")
        return [found] if found else None
    docker = shutil.which("docker")
    return [docker, "compose"] if docker else None


def relabeller(env_file: Path | None, tag: str, digest: str, docker_host: str,
               run: Run = capped_run) -> Relabel:
    """The label changes for a service's new container once ``.env`` says ``tag`` and
    ``digest``; asked once per service, however many replicas it has."""
    answers: dict[str, dict[str, str]] = {}

    def relabel(old: Mapping[str, str], image_id: str) -> dict[str, str]:
        if not old.get(PROJECT) or not old.get(SERVICE) or env_file is None:
            return {}
        service = old[SERVICE]
        if service not in answers:
            answers[service] = _new_labels(old, env_file, tag, digest, docker_host, run)
        new = dict(answers[service])
        if new and old.get(IMAGE) and image_id:
            new[IMAGE] = image_id
        return new

    return relabel


def _new_labels(old: Mapping[str, str], env_file: Path, tag: str, digest: str,
                docker_host: str, run: Run) -> dict[str, str]:
    """The new config-hash, only when compose's hash of the ``.env`` as it is now equals
    the old container's: otherwise compose would recreate it anyway (the compose file was
    edited since, or this compose's ``config --hash`` differs from what its ``up`` writes:
    2.22 to 2.26 leave ``env_file`` out, docker/compose#14001), and a new hash would
    hide that change from ``up -d``. Nothing is changed then."""
    try:
        data = read_regular(env_file)
    except (OSError, InvalidInput) as exc:
        return _kept(old, f"the .env cannot be read: {exc}")
    if config_hash(old, data, docker_host, run) != old.get(CONFIG_HASH):
        return _kept(old, "compose's hash of the project as it is differs from the "
                     "container's (edited since its last up, or no compose here)")
    found = config_hash(old, rewrite(data, tag, digest), docker_host, run)
    return {CONFIG_HASH: found} if found else _kept(old, "compose gave no hash")


def _kept(old: Mapping[str, str], why: str) -> dict[str, str]:
    """No new labels: the first ``up -d`` by hand recreates the container once. Said."""
    log.info("compose_labels_kept", service=old.get(SERVICE), reason=why,
             effect="the first `compose up -d` after this deploy recreates the container")
    return {}


def config_hash(labels: Mapping[str, str], env: bytes, docker_host: str,
                run: Run = capped_run) -> str | None:
    """``config --hash`` of the service ``labels`` describe, with ``env`` as its ``.env``
    (a private copy); None when it cannot be had."""
    argv = compose_argv(labels.get(VERSION, ""))
    workdir = labels.get(WORKING_DIR, "")
    if argv is None or not workdir:
        return None
    files = [f for f in labels.get(CONFIG_FILES, "").split(",") if f]
    service = labels[SERVICE]
    environ = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    environ["DOCKER_HOST"] = docker_host
    with tempfile.NamedTemporaryFile(prefix="twilight-env-") as tmp:
        tmp.write(env)
        tmp.flush()
        argv += ["--env-file", tmp.name, "--project-directory", workdir,
                 "-p", labels[PROJECT], *(a for f in files for a in ("-f", f)),
                 "config", "--hash", service]
        try:
            p = run(argv, cwd=workdir, env=environ, timeout=DEFAULT.compose_timeout_s)
        except (OSError, subprocess.SubprocessError):
            return None
    for line in p.stdout.splitlines() if p.returncode == 0 else ():
        name, _, value = line.strip().partition(" ")
        if name == service and value.strip():
            return value.strip()
    return None
