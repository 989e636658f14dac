"""What the bed's registry served, read from its access log (not from any client's count).

The registry writes one line per request it served, in the combined log format::

    127.0.0.1 - - [25/Nov/2026:19:00:09 +0000] "HEAD /v2/bed/x/app/manifests/main HTTP/1.1"
    200 0 "" "twilight-agent/0.1.0"

(one line in the log).

``AccessLog()`` remembers where the log ends; ``served(repo)`` returns the requests for
``repo`` written since, once a marker request of its own shows the registry has logged
everything sent before it.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import httpx

from testbed.services import REGISTRY_URL, registry_log_path
from testbed.util import wait_until

LINE = re.compile(r'^(?P<addr>\S+) .*?'
                  r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) ')


class AccessLog:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or registry_log_path()
        self.offset = self.path.stat().st_size

    def _since(self) -> str:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace")

    def served(self, repo: str) -> list[tuple[str, str, int]]:
        """``(method, uri, status)`` of every request for ``repo`` since the mark, in order."""
        return [(m, u, s) for _, m, u, s in self.served_from(repo)]

    def served_from(self, repo: str) -> list[tuple[str, str, str, int]]:
        """``(client address, method, uri, status)`` of every request for ``repo`` since the
        mark, in order (a fleet node's requests come from its own ``127.0.1.<n>``)."""
        marker = f"/v2/?twilight-marker={secrets.token_hex(6)}"
        httpx.get(REGISTRY_URL + marker, timeout=5)
        text = wait_until(lambda: (lambda t: t if marker in t else None)(self._since()),
                          timeout=10, interval=0.05, what="the registry to log a marker")
        found = []
        for line in text[:text.index(marker)].splitlines():
            m = LINE.search(line)
            if m and m["uri"].startswith(f"/v2/{repo}/"):
                found.append((m["addr"], m["method"], m["uri"], int(m["status"])))
        return found
