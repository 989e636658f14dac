"""The atomic ``IMAGE_TAG=`` rewrite of the compose .env file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from twilight_agent.adapters.state.envfile import (
    image_lines,
    put_back,
    read_image_digest,
    read_image_tag,
    write_image_tag,
)
from twilight_agent.errors import InvalidTag


def test_rewrites_only_the_value_and_keeps_every_other_byte(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"# comment\r\nPOSTGRES_PASSWORD='x y'\r\nIMAGE_TAG=sha-1111111\r\n"
                    b"EMPTY=\r\n  no-newline-at-end=1")
    os.chmod(env, 0o640)
    assert write_image_tag(env, "sha-2222222")
    assert env.read_bytes() == (b"# comment\r\nPOSTGRES_PASSWORD='x y'\r\nIMAGE_TAG=sha-2222222"
                                b"\r\nEMPTY=\r\n  no-newline-at-end=1")
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert read_image_tag(env) == "sha-2222222"
    assert [p.name for p in tmp_path.iterdir()] == [".env"]  # no temp file left


def test_adds_the_line_when_missing(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"A=1")
    write_image_tag(env, "v1.2.3")
    assert env.read_bytes() == b"A=1\nIMAGE_TAG=v1.2.3\n"


def test_export_form_and_idempotence(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"export IMAGE_TAG=main\n")
    assert write_image_tag(env, "sha-abcdef0")
    assert env.read_bytes() == b"export IMAGE_TAG=sha-abcdef0\n"
    inode = env.stat().st_ino
    assert not write_image_tag(env, "sha-abcdef0")
    assert env.stat().st_ino == inode


def test_is_atomic_a_rename_not_an_in_place_write(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("IMAGE_TAG=main\n")
    before = env.stat().st_ino
    write_image_tag(env, "latest")
    assert env.stat().st_ino != before


@pytest.mark.parametrize("bad", ["", "sha-XYZ", "main\nEVIL=1", "a" * 200, "../x"])
def test_refuses_a_tag_that_fails_the_gate(tmp_path: Path, bad: str) -> None:
    env = tmp_path / ".env"
    env.write_text("IMAGE_TAG=main\n")
    with pytest.raises(InvalidTag):
        write_image_tag(env, bad)
    assert env.read_text() == "IMAGE_TAG=main\n"


DIGEST = "sha256:" + "d" * 64
OLDER = "sha256:" + "0" * 64


def test_the_digest_goes_beside_the_tag_with_its_at(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"# app\r\nIMAGE_TAG=sha-1111111\r\nAPP_PORT=8080\r\n")
    assert write_image_tag(env, "sha-2222222", digest=DIGEST)
    assert env.read_bytes() == (b"# app\r\nIMAGE_TAG=sha-2222222\r\nIMAGE_DIGEST=@"
                                + DIGEST.encode() + b"\r\nAPP_PORT=8080\r\n")
    assert (read_image_tag(env), read_image_digest(env)) == ("sha-2222222", DIGEST)
    assert not write_image_tag(env, "sha-2222222", digest=DIGEST)
    assert write_image_tag(env, "sha-3333333", digest=OLDER)
    assert env.read_bytes().count(b"IMAGE_DIGEST=") == 1
    assert read_image_digest(env) == OLDER


def test_a_file_without_either_key_or_final_newline_gets_both(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"A=1")
    write_image_tag(env, "v1.2.3", digest=DIGEST)
    assert env.read_bytes() == b"A=1\nIMAGE_TAG=v1.2.3\nIMAGE_DIGEST=@" + DIGEST.encode() + b"\n"
    env.write_bytes(b"IMAGE_TAG=v1.0.0")
    write_image_tag(env, "v2.0.0", digest=DIGEST)
    assert env.read_bytes() == b"IMAGE_TAG=v2.0.0\nIMAGE_DIGEST=@" + DIGEST.encode()


def test_an_env_without_the_digest_reads_as_none_and_a_bad_digest_is_refused(
        tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("IMAGE_TAG=main\nIMAGE_DIGEST=\n")
    assert read_image_digest(env) is None
    with pytest.raises(InvalidTag):
        write_image_tag(env, "main", digest="sha256:abc\nEVIL=1")
    assert env.read_text() == "IMAGE_TAG=main\nIMAGE_DIGEST=\n"


@pytest.mark.parametrize("before", [
    b"# compose env\nPOSTGRES_DB=app\nIMAGE_TAG=sha-1111111\n",  # compose made it: no digest
    b"IMAGE_TAG=sha-1111111\r\nIMAGE_DIGEST=@sha256:" + b"1" * 64 + b"\r\nX=1",
    b"export IMAGE_TAG = 'sha-1111111'  \nA=\xff\n",  # quoting, spacing, not UTF-8
    b"A=1\n",  # no IMAGE_TAG line at all
])
def test_put_back_undoes_a_commit_byte_for_byte(tmp_path: Path, before: bytes) -> None:
    env = tmp_path / ".env"
    env.write_bytes(before)
    env.chmod(0o640)
    lines = image_lines(env)
    assert lines is not None
    write_image_tag(env, "sha-2222222", digest="sha256:" + "2" * 64)  # the commit
    assert env.read_bytes() != before
    assert put_back(env, lines) is True  # the rollback in the watch
    assert env.read_bytes() == before  # what compose last saw: its hash is the old one
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert put_back(env, lines) is False


def test_image_lines_of_a_missing_file_are_none_and_an_unreadable_one_is_unknown(
        tmp_path: Path) -> None:
    assert image_lines(tmp_path / "none") == {"tag": None, "digest": None}
    (tmp_path / "dir").mkdir()
    assert image_lines(tmp_path / "dir") is None
