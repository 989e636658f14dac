"""Bad input: any bytes in the compose ``.env``, any tag, any config file.

The tag gate's own property test is ``tests/unit/test_foundations.py``
(``test_tag_gate_never_passes_what_the_pattern_refuses``); the registry's bad answers are
unit-tested in ``tests/unit/test_registry*.py``. Here: the ``.env`` rewrite is either exact
or leaves the file alone, and a bad config is one line + exit 2 with nothing touched; so
are a token file that is not UTF-8 and a state directory that cannot be made; an index
whose entry has an invalid digest is one line + exit 5. Never a traceback (under systemd
that would be a restart loop). Every setting fed arbitrary text:
``tests/unit/test_settings_any_text.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.conftest import Figures
from tests.integration.deploybed import CLI, Site, one_line, push
from twilight_agent.adapters.state.envfile import read_image_tag, write_image_tag
from twilight_agent.core.registry_rules import OCI_INDEX
from twilight_agent.errors import ConfigError, InvalidTag
from twilight_agent.settings import load_settings

pytestmark = [pytest.mark.faults, pytest.mark.one_engine]

LEAD = re.compile(rb"[ \t]*(?:export[ \t]+)?IMAGE_TAG[ \t]*=")
GOOD_TAGS = st.one_of(st.from_regex(r"\Asha-[0-9a-f]{7}\Z"), st.sampled_from(["main", "latest"]),
                      st.from_regex(r"\Av[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z"))
ANY_TAG = st.one_of(GOOD_TAGS, st.text(max_size=140))
# Bytes that look like an .env: lines made of pieces that matter to the rewrite, plus noise.
PIECES = st.sampled_from([b"IMAGE_TAG=", b"export IMAGE_TAG=", b" \tIMAGE_TAG \t= ", b"\n",
                          b"\r\n", b"\r", b"#", b"=", b"sha-1234567", b"'", b'"', b"\xff\xfe",
                          b"IMAGE_TAGS=x", b"MY_IMAGE_TAG=y", b"\x00", b"POSTGRES_DB=app"])
ENV_BYTES = st.one_of(st.binary(max_size=300),
                      st.lists(st.one_of(PIECES, st.binary(max_size=8)), max_size=30)
                      .map(b"".join))
MODES = st.sampled_from([0o600, 0o640, 0o644, 0o664, 0o400 | 0o200])


def expected_rewrite(data: bytes, tag: str) -> bytes:
    """What the file must hold after ``IMAGE_TAG=tag``, derived line by line: every
    ``IMAGE_TAG=`` line gets the new value (a bare ``\\r`` after it stays), every other
    byte is kept; with no such line, one is appended."""
    lines = data.split(b"\n")
    hit = False
    for i, line in enumerate(lines):
        m = LEAD.match(line)
        if m is None:
            continue
        hit = True
        rest = line[m.end():]
        cr = rest.find(b"\r")
        lines[i] = line[: m.end()] + tag.encode() + (rest[cr:] if cr >= 0 else b"")
    if hit:
        return b"\n".join(lines)
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    sep = b"" if not data or data.endswith(b"\n") else newline
    return data + sep + b"IMAGE_TAG=" + tag.encode() + newline


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=ENV_BYTES, tag=ANY_TAG, mode=MODES)
def test_env_rewrite_is_exact_or_leaves_the_file_alone(data: bytes, tag: str, mode: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, ".env")
        path.write_bytes(data)
        os.chmod(path, mode)
        try:
            write_image_tag(path, tag)
        except InvalidTag:
            assert path.read_bytes() == data  # refused: untouched, byte for byte
            assert stat.S_IMODE(path.stat().st_mode) == mode
            return
        assert path.read_bytes() == expected_rewrite(data, tag)
        assert stat.S_IMODE(path.stat().st_mode) == mode
        assert read_image_tag(path) == tag
        assert sorted(os.listdir(d)) == [".env"]  # no temporary file left behind


@settings(max_examples=300, deadline=None)
@given(data=ENV_BYTES)
def test_reading_any_env_file_never_raises(data: bytes) -> None:
    """The agent reads IMAGE_TAG on every poll: garbage there must not crash a poll."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, ".env")
        path.write_bytes(data)
        value = read_image_tag(path)
        assert value is None or isinstance(value, str)


KEYS = ["IMAGE", "REGISTRY_URL", "TRACK", "PIN", "CONTAINER", "COMPOSE_PROJECT", "SERVICE",
        "HEALTH_TIMEOUT", "HEALTH_INTERVAL", "POLL_INTERVAL", "PRUNE_AFTER", "LOG_FORMAT",
        "TAG_PATTERN", "STATE_DIR", "IMAGES", "HEALTHTIMEOUT", "DOCKER_HOST"]
VALUES = st.one_of(st.sampled_from(["", "0", "-1", "90s", "2m", "soon", "ghcr.io/a/b",
                                    "http://x", "ftp://x", "json", "xml", "sha-1234567",
                                    "NOT;OK", "[", "true", "1e9"]),
                   # Any text a file can hold (lone surrogates cannot be encoded at all;
                   # arbitrary bytes come from ``junk`` below).
                   st.text(alphabet=st.characters(exclude_categories=("Cs",),
                                                  exclude_characters="\n\r\x00"),
                           max_size=20))


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=8),
       junk=st.binary(max_size=20))
def test_any_config_file_loads_or_is_one_config_error(lines: list[tuple[str, str]],
                                                      junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "agent.env")
        path.write_bytes(b"".join(f"TWILIGHT_{k}={v}\n".encode() for k, v in lines) + junk)
        try:
            load_settings(path)
        except ConfigError as exc:
            assert "\n" not in str(exc)


BAD_CONFIGS = [
    (b"TWILIGHT_IMAGES=typo\n", "unknown setting"),
    (b"TWILIGHT_HEALTH_TIMEOUT=soon\n", "HEALTH_TIMEOUT"),
    (b"TWILIGHT_POLL_INTERVAL=0\n", "POLL_INTERVAL"),
    (b"TWILIGHT_LOG_FORMAT=xml\n", "LOG_FORMAT"),
    (b"TWILIGHT_PIN=NOT;OK\n", "PIN"),
    (b"TWILIGHT_REGISTRY_URL=ftp://127.0.0.1\n", "REGISTRY_URL"),
    (b"TWILIGHT_COMPOSE_PROJECT=web\n", "COMPOSE_PROJECT"),
    (b"TWILIGHT_IMAGE=\n", "IMAGE"),
    (b"TWILIGHT_IMAGE=127.0.0.1:5000/x:tag\n", "IMAGE"),
    (b"TWILIGHT_TRACK=\xff\xfe\n", "config file"),
    (b"TWILIGHT_TAG_PATTERN=sha-[0-9a-f\n", "TAG_PATTERN is not a regular expression"),
    (b"TWILIGHT_REGISTRY_URL=http://127.0.0.1:5000/\x1b[2Jv2\n", "control character"),
    (b"TWILIGHT_REGISTRY_URL=http://evil.example#@127.0.0.1:5000\n", "'evil.example'"),
    (b"TWILIGHT_REGISTRY_URL=https://127.0.0.1:5000@evil.example\n", "'evil.example'"),
    (b"TWILIGHT_REGISTRY_URL=https://user@evil.example\n", "no user or password"),
]


def cli(site: Site, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60, cwd=site.tmp)


def test_bad_config_files_are_exit_2_one_line_and_touch_nothing(
        site: Site, figures: Figures) -> None:
    old_id = site.run_app(push(site, "v1"))
    push(site, "v2")
    env_before = site.env_file.read_bytes()
    base = site.write_config().read_bytes()
    cfg = site.tmp / "bad.env"
    for i, (extra, needle) in enumerate(BAD_CONFIGS):
        figures.fault()
        body = re.sub(rb"(?m)^TWILIGHT_IMAGE=.*\n", b"", base) \
            if extra.startswith(b"TWILIGHT_IMAGE=") else base
        cfg.write_bytes(body + extra)
        for cmd in (["deploy"], ["status"], ["check"])[: 3 if i < 2 else 1]:
            figures.deploys(cmd == ["deploy"])
            p = cli(site, cfg, *cmd)
            assert p.returncode == 2, (extra, cmd, p.stdout, p.stderr)
            assert needle in one_line(p.stderr), (extra, p.stderr)
    assert site.inspect()["Id"] == old_id and site.inspect()["State"]["Running"]
    figures.service_ok(site, "v1")
    assert site.env_file.read_bytes() == env_before
    assert not site.state_dir.exists()  # nothing written, not even the state store


def test_bad_files_are_exit_2_one_line_and_touch_nothing(site: Site, figures: Figures) -> None:
    old_id = site.run_app(push(site, "v1"))
    push(site, "v2")
    env_before = site.env_file.read_bytes()
    token = site.tmp / "token"
    token.write_bytes(b"ghp_\xff\xfe\x00not-utf8\n")
    token.chmod(0o600)
    blocker = site.tmp / "a-file"
    blocker.write_text("not a directory\n")
    cases = [({"REGISTRY_USERNAME": "ci", "REGISTRY_PASSWORD_FILE": token},
              ("status", "check", "deploy"), "is not UTF-8"),
             ({"STATE_DIR": blocker / "state"}, ("status", "deploy"), "cannot be created")]
    for over, commands, needle in cases:
        figures.fault()
        cfg = site.write_config(**over)
        for cmd in commands:
            figures.deploys(cmd == "deploy")
            p = cli(site, cfg, cmd)
            assert p.returncode == 2, (over, cmd, p.stdout, p.stderr)
            assert needle in one_line(p.stderr), (over, cmd, p.stderr)
    assert site.inspect()["Id"] == old_id and site.inspect()["State"]["Running"]
    figures.service_ok(site, "v1")
    assert site.env_file.read_bytes() == env_before
    assert blocker.read_text() == "not a directory\n"


class BadIndexRegistry:
    """A registry on 127.0.0.1 whose ``main`` is an index with an entry per platform, each
    with a digest that is not one (the registry's own body digest is right)."""

    def __init__(self) -> None:
        entries = [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:not-a-digest", "size": 10,
                    "platform": {"os": "linux", "architecture": arch}}
                   for arch in ("amd64", "arm64", "arm", "ppc64le", "s390x")]
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": entries}).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()

        class Handler(BaseHTTPRequestHandler):
            def answer(self, with_body: bool) -> None:
                last = self.path.rsplit("/", 1)[1]
                found = self.path == "/v2/" or ("/manifests/" in self.path
                                                and last in ("main", digest))
                self.send_response(200 if found else 404)
                if found and self.path != "/v2/":
                    self.send_header("Content-Type", OCI_INDEX)
                    self.send_header("Docker-Content-Digest", digest)
                size = len(body) if found and self.path != "/v2/" else 0
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if with_body and size:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self.answer(True)

            def do_HEAD(self) -> None:
                self.answer(False)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_index_entry_with_an_invalid_digest_is_exit_5_one_line(
        site: Site, figures: Figures) -> None:
    old_id = site.run_app(push(site, "v1"))
    registry = BadIndexRegistry()
    try:
        cfg = site.write_config(REGISTRY_URL=registry.url)
        figures.fault()
        figures.deploys()
        p = cli(site, cfg, "deploy")
        assert p.returncode == 5, (p.stdout, p.stderr)
        assert "index entry has no valid sha256 digest" in one_line(p.stderr), p.stderr
        p = cli(site, cfg, "check")
        assert p.returncode == 5, (p.stdout, p.stderr)
        assert "index entry has no valid sha256 digest" in p.stdout, p.stdout
        assert "Traceback" not in p.stdout + p.stderr, p.stderr
    finally:
        registry.close()
    assert site.inspect()["Id"] == old_id
    figures.service_ok(site, "v1", timeout=2)
    assert site.history() == []
