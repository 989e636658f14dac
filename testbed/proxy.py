"""A reverse proxy in front of an app, on the app's network: one container of the proxy image.

It joins the app's user-defined network, reaches the app by its network alias through the
engine's DNS (see ``testbed.proxy_image`` for the nginx settings) and publishes its port 80
on ``127.0.0.1:<port>``, so a prober on the host sees the service as a user behind the proxy
would, whichever containers hold the alias meanwhile.

    proxy = Proxy(client, name=f"{uid}-proxy", network=f"{uid}-net", upstream="web")
    proxy.start()            # builds the image first if this engine has not got it
    proxy.url                # http://127.0.0.1:<port>/healthz

A compose project's app: ``network=f"{project}_default", upstream="app"`` (compose gives
each container its service name as an alias on the project's network).
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import docker

from testbed import proxy_image
from testbed.util import BedError, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str = "/healthz", timeout: float = 2,
                host: str = "127.0.0.1") -> int:
    """The status of one GET to host:port; 0 when nothing answers."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


@dataclass
class Proxy:
    """nginx on ``network`` passing every request to ``upstream:upstream_port``."""

    client: docker.DockerClient
    name: str
    network: str
    upstream: str = "web"  # the app's network alias (a compose project: its service name)
    upstream_port: int = 8080
    port: int = field(default_factory=free_port)  # published on 127.0.0.1
    labels: dict[str, str] = field(default_factory=dict)
    host_ip: str = "127.0.0.1"  # where it publishes; "0.0.0.0" on a fleet node
    reach: str = "127.0.0.1"  # the address the test reaches it at (a fleet node's own)

    @property
    def url(self) -> str:
        return f"http://{self.reach}:{self.port}/healthz"

    def start(self, timeout: float = 15) -> str:
        """Run the proxy and wait until nginx answers (any status: the app may not be up
        yet); return the container id."""
        image = proxy_image.ensure_image(self.client)
        api = self.client.api
        hc = api.create_host_config(port_bindings={80: (self.host_ip, self.port)},
                                    network_mode=self.network)
        cid = api.create_container(
            image, name=self.name, ports=[80], host_config=hc, labels=self.labels,
            environment={"PROXY_UPSTREAM_HOST": self.upstream,
                         "PROXY_UPSTREAM_PORT": str(self.upstream_port)},
            stop_timeout=2)["Id"]
        api.start(cid)
        try:
            wait_until(lambda: http_status(self.port, host=self.reach) > 0, timeout,
                       interval=0.1, what=f"the proxy {self.name} on {self.reach}:{self.port}")
        except TimeoutError as exc:
            raise BedError(f"the proxy {self.name} never answered: {exc}\n"
                           f"{self.logs()[-1500:]}") from exc
        return str(cid)

    def logs(self) -> str:
        """nginx's access log (one line per request, with the upstream addresses it tried)
        and error log."""
        try:
            return bytes(self.client.api.logs(self.name)).decode(errors="replace")
        except docker.errors.APIError as exc:
            return f"(no logs of {self.name}: {exc})"

    def retried(self) -> list[str]:
        """Access log lines of requests that tried more than one upstream address."""
        return [ln for ln in self.logs().splitlines()
                if "," in (re.findall(r"upstream=(.*?) upstream_status=", ln) or [""])[0]]

    def retry_statuses(self) -> dict[str, int]:
        """How the retried requests went, by ``$upstream_status`` (``504, 200``: the first
        address did not accept in time, the second answered; ``502, 200``: refused)."""
        counts: dict[str, int] = {}
        for ln in self.retried():
            key = ln.rsplit("upstream_status=", 1)[1].strip()
            counts[key] = counts.get(key, 0) + 1
        return counts

    def remove(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(self.name, force=True)

    def inspect(self) -> dict[str, Any]:
        return dict(self.client.api.inspect_container(self.name))
