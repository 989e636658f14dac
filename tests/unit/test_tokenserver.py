"""The bed's token server decides like ghcr.io's (pure part, no sockets)."""

from __future__ import annotations

import base64
from pathlib import Path

import jwt
import pytest

from testbed.tokenserver import SERVICE, TokenServer, make_signing_material


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> TokenServer:
    key, _ = make_signing_material(tmp_path_factory.mktemp("tok"))
    return TokenServer(Path(key), {"ci": "pat"})


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def _access(body: dict) -> list:
    return jwt.decode(body["token"], options={"verify_signature": False},
                      audience=SERVICE)["access"]


def test_anonymous_public_pull_only(server: TokenServer) -> None:
    status, body = server.decide(None, ["repository:org/app:pull,push"])
    assert status == 200 and set(body) == {"token"}
    assert _access(body) == [{"type": "repository", "name": "org/app", "actions": ["pull"]}]


def test_private_needs_credentials(server: TokenServer) -> None:
    assert server.decide(None, ["repository:private/app:pull"])[0] == 401
    assert server.decide(_basic("ci", "nope"), ["repository:private/app:pull"])[0] == 401
    status, body = server.decide(_basic("ci", "pat"), ["repository:private/app:pull,push"])
    assert status == 200 and _access(body)[0]["actions"] == ["pull", "push"]


def test_wrong_credentials_refused_even_for_public(server: TokenServer) -> None:
    assert server.decide(_basic("ci", "nope"), ["repository:org/app:pull"])[0] == 401
