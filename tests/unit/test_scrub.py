"""The credential scrubber (``core/scrub.py``) blanks each credential shape in free text and
leaves digests, tags and ordinary words alone; the webhook body and every log line go
through it."""

from __future__ import annotations

import pytest

from twilight_agent.core.scrub import REDACTED, scrub
from twilight_agent.logs import redact

GHP = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"  # 36 characters after the prefix

SHAPES = [
    # (text, what must be gone, what must stay)
    ("Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop", "Authorization: Bearer"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpw", "Authorization: Basic"),
    ("pushing to https://deploy:s3cr3t-pw@git.example.com/x.git", "s3cr3t-pw",
     "https://deploy:[redacted]@git.example.com/x.git"),
    ("redis://:hunter2hunter2@cache:6379/0", "hunter2", "redis://:[redacted]@cache"),
    ("DB_PASSWORD=hunter2 started", "hunter2", "DB_PASSWORD=[redacted] started"),
    ("connect?user=app&password=pa55&db=x", "pa55", "&db=x"),
    ('config {"client_secret": "cs-123", "region": "eu"}', "cs-123", '"region": "eu"'),
    ("token=hunter2-should-never-leave", "hunter2", "token=[redacted]"),
    ("GITHUB_TOKEN: abc.def.ghi", "abc.def", "GITHUB_TOKEN: [redacted]"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "wJalr", "aws_secret_access_key"),
    ("X-Api-Key: 0123456789abcdef", "0123456789", "X-Api-Key: [redacted]"),
    (f"cloning with {GHP} failed", GHP, "cloning with [redacted] failed"),
    ("gho_" + "x" * 36, "xxxxxxxx", ""),
    ("ghu_" + "y" * 36, "yyyyyyyy", ""),
    ("ghs_" + "z" * 36, "zzzzzzzz", ""),
    ("ghr_" + "w" * 36, "wwwwwwww", ""),
    ("github_pat_11ABCDEFG0" + "a1_" * 20, "11ABCDEFG0", ""),
    ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE", "key [redacted] used"),
    ("temporary ASIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7EXAMPLE", ""),
    ("maps AIzaSyA1234567890abcdefghijklmnopqrstuv ok", "AIzaSy", "maps [redacted] ok"),
    ("slack xoxb-123456789012-1234567890123-abcdefghijkl", "xoxb-1234", "slack [redacted]"),
    ("slack xoxp-1234-5678-abcdefghij", "xoxp-1234", ""),
]


@pytest.mark.parametrize(("text", "gone", "stays"), SHAPES, ids=lambda v: str(v)[:24])
def test_each_credential_shape_is_blanked(text: str, gone: str, stays: str) -> None:
    out = scrub(text)
    assert gone not in out and REDACTED in out, out
    assert stays in out, out


ORDINARY = [
    "sha256:" + "0123456789abcdef" * 4,
    "deployed sha-abc1234 (ghcr.io/acme/app@sha256:" + "a" * 64 + ")",
    "health gate failed: http 500 after 12.5s",
    "TWILIGHT_REGISTRY_PASSWORD_FILE=/run/credentials/twilight-agent.service/registry-token",
    "registry token fetch failed: 401; the token endpoint answered",
    "https://ghcr.io/v2/acme/app/manifests/main",
    "http://127.0.0.1:5000/v2/ user@example.com wrote: fine",
    "a basic deployment with a Bearer realm=\"https://ghcr.io/token\"",
    "AKIA is a prefix, ghp_short, xoxb-, AIza",
    "phase=VERIFY outcome=rolled_back digest=sha256:" + "b" * 64,
]


@pytest.mark.parametrize("text", ORDINARY, ids=lambda v: v[:24])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub(text) == text


def test_scrubbing_is_idempotent() -> None:
    for text, _, _ in SHAPES:
        once = scrub(text)
        assert scrub(once) == once


def test_log_lines_are_scrubbed_whatever_the_key() -> None:
    event = redact(None, "info", {"event": "pull_failed",
                                  "error": f"clone https://x:pw1234567@h/r failed ({GHP})",
                                  "registry_password": "p", "digest": ORDINARY[0]})
    assert event["error"] == "clone https://x:[redacted]@h/r failed ([redacted])"
    assert event["registry_password"] == REDACTED and event["digest"] == ORDINARY[0]
