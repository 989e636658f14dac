"""Translating docker-py and requests exceptions into the agent's error tree.

An engine that does not answer -> ``DockerUnavailable``; anything else it refuses ->
``RuntimeError_`` with its reason. docker-py's ``requests.ConnectionError`` is not a
``DockerException``: both are caught here.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from twilight_agent.errors import DockerUnavailable, RuntimeError_

UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def close_leaked_sockets(exc: BaseException) -> None:
    """Close the socket docker-py's ``UnixHTTPConnection.connect`` leaves open when the
    engine refuses: it would otherwise be closed by the garbage collector (ResourceWarning).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            sock = tb.tb_frame.f_locals.get("sock")
            if isinstance(sock, socket.socket):
                sock.close()
            tb = tb.tb_next
        todo += [err.__cause__, err.__context__]


def unavailable(what: str, exc: Exception) -> DockerUnavailable:
    close_leaked_sockets(exc)
    return DockerUnavailable(f"{what}: the Docker engine does not answer ({exc})")


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Translate docker-py and requests exceptions raised while doing ``what``."""
    try:
        yield
    except UNREACHABLE as exc:
        raise unavailable(what, exc) from exc
    except docker.errors.APIError as exc:
        raise RuntimeError_(f"{what}: {explain(exc)}") from exc
    except docker.errors.DockerException as exc:
        raise unavailable(what, exc) from exc
