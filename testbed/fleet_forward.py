"""The registry and token server inside each fleet node: ``127.0.0.1:5000`` and ``:5001``.

A fleet node has its own network namespace, so its ``127.0.0.1`` is its own: the image
references every host uses (``127.0.0.1:5000/bed/...``) would not reach the bed's registry
from there. This process listens on the node's loopback (its listening sockets are made
inside the node's namespace, with ``setns``, then it returns to the host's) and connects to
the registry on the host's loopback *from a source address of the node's own*
(``127.0.1.<n>``), so the registry's access log says which node asked for what.

    python -m testbed.fleet_forward /run/netns/twbed-n1=127.0.1.1 /run/netns/twbed-n2=...

It runs until SIGTERM; ``testbed.fleet`` starts and stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading

PORTS = (5000, 5001)  # the registry, its token server
CLONE_NEWNET = 0x40000000
IDLE_S = 300  # a connection with no byte either way for this long is closed
CHUNK = 65536

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def listen_in(netns: str, port: int) -> socket.socket:
    """A socket listening on ``127.0.0.1:port`` inside ``netns`` (the caller's namespace is
    restored before returning)."""
    here = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    home = os.open(here, os.O_RDONLY)
    try:
        _setns(netns)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(128)
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host namespace")
    finally:
        os.close(home)
    return s


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve_one(conn: socket.socket, port: int, source: str) -> None:
    conn.settimeout(IDLE_S)
    try:
        up = socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=(source, 0))
    except OSError:
        conn.close()
        return
    up.settimeout(IDLE_S)
    back = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
    back.start()
    _pipe(conn, up)
    back.join(IDLE_S)
    conn.close()
    up.close()


def _accept_loop(listener: socket.socket, port: int, source: str) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serve_one, args=(conn, port, source), daemon=True).start()


def main(argv: list[str]) -> int:
    listeners = []
    for spec in argv:
        netns, _, source = spec.partition("=")
        for port in PORTS:
            listeners.append((listen_in(netns, port), port, source))
    for listener, port, source in listeners:
        threading.Thread(target=_accept_loop, args=(listener, port, source),
                         daemon=True).start()
    print(f"fleet_forward: {len(argv)} node(s), ports {PORTS}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
