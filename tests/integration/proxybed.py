"""The app behind a reverse proxy: the layout of a zero-downtime (start-first) swap.

``ProxySite`` is a ``deploybed.Site`` whose app publishes no host port: it runs on
``<uid>-net`` with the alias ``web`` (port 8080 inside), and nginx (``testbed.proxy``) runs
on the same network publishing ``127.0.0.1:<proxy_port>:80``. ``url`` (so ``serving()`` and
``wait_serving()``) goes through the proxy, as a user's request would. ``start_beside()``
starts another container with the same alias, the way a start-first swap does, and
``prober()`` is the bench's 50 ms prober pointed at the proxy.

    site.run_app(v1)                         # app + proxy; serving "ok v1" through it
    with site.prober() as probe:
        t0 = time.time()
        new = site.start_beside(v2)
        site.gate(new, "v2")                  # on its own address, like the swap's gate
        site.bed.docker.api.stop(site.name)   # the old one, cleanly
        site.wait_serving("v2")
    assert failed(probe.samples, t0) == []
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.probe import Prober, Sample
from testbed.images import APP_PORT, AppImage
from testbed.proxy import Proxy, free_port
from tests.integration.deploybed import Site

ALIAS = "web"


@dataclass
class ProxySite(Site):
    """An operator-run app container without a host port, behind nginx on its network."""

    proxy_port: int = field(default_factory=free_port)

    @property
    def network(self) -> str:
        return f"{self.uid}-net"

    @property
    def proxy(self) -> Proxy:
        return Proxy(self.bed.docker, name=f"{self.uid}-proxy", network=self.network,
                     upstream=ALIAS, upstream_port=APP_PORT, port=self.proxy_port)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def proxy_url(self) -> str:
        return self.proxy.url

    def run_app(self, img: AppImage, entrypoint: list[str] | None = None) -> str:
        """Run ``img`` like an operator (alias, env, labels, a named and an anonymous volume,
        restart policy; no published port), then the proxy; wait until ``ok <version>``
        comes through the proxy; write data into both volumes."""
        d = self.bed.docker
        d.networks.create(self.network)
        d.volumes.create(f"{self.uid}-data")
        cid = self._create(img, self.name, entrypoint)
        self.proxy.start()
        self.env_file.write_text(f"# compose env\nPOSTGRES_DB=app\nIMAGE_TAG={img.sha_tag}\n")
        self.wait_serving(img.version)
        self.exec("echo named-data > /data/n && echo anon-data > /cache/a")
        return cid

    def start_beside(self, img: AppImage, name: str | None = None) -> str:
        """Start another container of ``img`` on the network with the same alias (what a
        start-first swap does before it stops the old one); return its id."""
        return self._create(img, name or f"{self.uid}-app-new", None)

    def _create(self, img: AppImage, name: str, entrypoint: list[str] | None) -> str:
        d, api = self.bed.docker, self.bed.docker.api
        ref = f"{img.ref}@{img.digest}"
        d.images.pull(ref)
        hc = api.create_host_config(network_mode=self.network,
                                    binds=[f"{self.uid}-data:/data"],
                                    restart_policy={"Name": "unless-stopped"})
        cid = api.create_container(
            ref, name=name, environment={"RUNTIME_VAR": "hello"}, stop_timeout=2,
            entrypoint=entrypoint, labels={"runtime.label": "kept"}, host_config=hc,
            networking_config=api.create_networking_config(
                {self.network: api.create_endpoint_config(aliases=[ALIAS])}))["Id"]
        api.start(cid)
        return str(cid)

    def backends(self) -> list[str]:
        """Names of the running containers holding the alias on the network."""
        net = self.bed.docker.api.inspect_network(self.network)
        names = []
        for cid in net.get("Containers") or {}:
            info = self.bed.docker.api.inspect_container(cid)
            eps = info["NetworkSettings"]["Networks"].get(self.network) or {}
            if ALIAS in (eps.get("Aliases") or []) and info["State"]["Running"]:
                names.append(info["Name"].lstrip("/"))
        return sorted(names)

    def app_address(self, name: str | None = None) -> str:
        """The IP of an app container on the network (the start-first gate's ``{address}``)."""
        info = self.bed.docker.api.inspect_container(name or self.name)
        return str(info["NetworkSettings"]["Networks"][self.network]["IPAddress"])

    def wait_backends(self, n: int, timeout: float = 10) -> list[str]:
        """Wait until ``n`` running containers hold the alias; return their names."""
        deadline = time.monotonic() + timeout
        while len(names := self.backends()) != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} containers behind {ALIAS!r}, got {names}")
            time.sleep(0.1)
        return names

    def gate(self, name: str, version: str, timeout: float = 15) -> None:
        """Wait until the container ``name`` answers ``ok <version>`` on its own address
        (from the host, not through the proxy): the start-first swap's health gate."""
        url = f"http://{self.app_address(name)}:{APP_PORT}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(url, timeout=1)
                if r.status_code == 200 and r.text.strip() == f"ok {version}":
                    return
            time.sleep(0.1)
        raise AssertionError(f"{name} never answered ok {version} on {url}")

    def containers(self) -> list[str]:
        """The site's containers, the proxy left out."""
        return [n for n in super().containers() if n != self.proxy.name]

    def prober(self, period: float = 0.05) -> Prober:
        """The bench's prober (``GET /healthz`` every 50 ms) through the proxy."""
        return Prober(self.proxy_port, period=period)


def failed(samples: list[Sample], since: float, until: float | None = None) -> list[Sample]:
    """Requests sent in ``[since, until]`` (wall clock) that got no 2xx answer."""
    end = until if until is not None else float("inf")
    return [s for s in samples if since <= s.t <= end and not s.ok]


def summary(samples: list[Sample], since: float = 0.0) -> dict[str, Any]:
    """Counts for a report line: requests, failures, their statuses, the slowest answer."""
    window = [s for s in samples if s.t >= since]
    bad = [s for s in window if not s.ok]
    return {"requests": len(window), "failed": len(bad),
            "statuses": sorted({s.status for s in bad}),
            "slowest_ms": round(1000 * max((s.done - s.t for s in window), default=0.0))}

