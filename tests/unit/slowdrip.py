"""A loopback HTTP server that answers slowly, one byte at a time, for deadline tests.

``mode="headers"``: the status line, then header bytes every ``step`` seconds.
``mode="body"``: full headers (``Content-Length`` huge), then body bytes every ``step``.
``mode="flood"``: full headers, then body as fast as the socket takes it.
It gives up after ``limit`` seconds, so a client without a deadline finishes (late)
instead of hanging the test run.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def slow_server(mode: str, step: float = 0.1, limit: float = 6.0) -> Iterator[dict]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stats = {"url": f"http://127.0.0.1:{listener.getsockname()[1]}/healthz", "sent": 0}
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        end = time.monotonic() + limit
        try:
            conn.recv(65536)
            if mode == "headers":
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while time.monotonic() < end and not stop.is_set():
                    conn.sendall(b"X")
                    stats["sent"] += 1
                    time.sleep(step)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
            chunk = b"x" if mode == "body" else b"x" * 65536
            while time.monotonic() < end and not stop.is_set():
                conn.sendall(chunk)
                stats["sent"] += len(chunk)
                if mode == "body":
                    time.sleep(step)
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join(2)
        listener.close()
