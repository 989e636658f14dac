"""A compose project as an operator runs it, for the compose tests: ``docker compose up -d``
(v2, the plugin from Debian 13's package) or ``docker-compose up -d`` (v1, Debian 12), then
the agent configured by ``TWILIGHT_COMPOSE_PROJECT`` + ``TWILIGHT_SERVICE``."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import engines
from testbed.images import AppImage
from testbed.services import REGISTRY_HOST, REGISTRY_URL
from tests.integration.deploybed import Site

# Two networks with aliases, a fixed MAC address, a named volume (and the image's anonymous
# /cache volume), run-time env and labels, a published port: what a deploy must keep.
COMPOSE_FILE = """\
services:
  app:
    image: ${IMAGE_REPO}:${IMAGE_TAG}${IMAGE_DIGEST-}
    restart: unless-stopped
    stop_grace_period: 2s
    ports:
      - "127.0.0.1:${APP_PORT}:8080"
    environment:
      RUNTIME_VAR: hello
    labels:
      runtime.label: kept
    mac_address: "%(mac)s"
    volumes:
      - data:/data
    networks:
      front:
        aliases: [web]
      back:
        aliases: [api]
networks:
  front: {}
  back: {}
volumes:
  data: {}
"""
MAC = "02:42:ac:1f:00:0c"
HASH_LABEL, IMAGE_LABEL = "com.docker.compose.config-hash", "com.docker.compose.image"
MOVING = (HASH_LABEL, IMAGE_LABEL)  # compose labels a deploy moves to the new build


@dataclass
class ComposeSite(Site):
    """``Site`` whose app container is a compose service (``app``) of project ``uid``."""

    flavour: str = "v2"

    @property
    def project_dir(self) -> Path:
        return self.tmp / "project"

    @property
    def env_file(self) -> Path:
        return self.project_dir / ".env"

    @property
    def name(self) -> str:
        """The service's current container (compose names it; the agent keeps that name)."""
        found = self.service_containers()
        assert len(found) == 1, f"expected one container of service app, got {found}"
        return found[0]

    def service_containers(self, include_parked: bool = False) -> list[str]:
        labels = [f"com.docker.compose.project={self.uid}", "com.docker.compose.service=app"]
        names = sorted(c.name for c in self.bed.docker.containers.list(
            all=True, filters={"label": labels}))
        return names if include_parked else [n for n in names if ".twilight-prev" not in n]

    def project_containers(self) -> list[str]:
        return sorted(c.name for c in self.bed.docker.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.uid}"}))

    def base_config(self, **over: object) -> dict[str, str]:
        cfg = super().base_config(**over)
        cfg.pop("CONTAINER")
        cfg.update(COMPOSE_PROJECT=self.uid, SERVICE="app", HEALTH_URL=self.url)
        cfg.update({k.upper(): str(v) for k, v in over.items()})
        return cfg

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*engines.compose_argv(self.flavour), *args], cwd=self.project_dir,
                           env=engines.compose_env(self.flavour), capture_output=True,
                           stdin=subprocess.DEVNULL, text=True, timeout=180)
        if check:
            assert p.returncode == 0, f"{self.flavour} compose {args}: {p.stderr[-2000:]}"
        return p

    def up(self, img: AppImage) -> str:
        """Start ``img`` as service ``app`` with ``compose up -d``; write data to both volumes;
        return the container id."""
        self.project_dir.mkdir(parents=True, exist_ok=True)
        (self.project_dir / "compose.yml").write_text(COMPOSE_FILE % {"mac": MAC})
        self.env_file.write_text(f"# compose env\nCOMPOSE_PROJECT_NAME={self.uid}\n"
                                 f"IMAGE_REPO={img.ref}\nIMAGE_TAG={img.sha_tag}\n"
                                 f"APP_PORT={self.port}\n")
        self.bed.docker.images.pull(img.ref, tag=img.sha_tag)
        self.compose("-f", "compose.yml", "up", "-d")
        self.wait_serving(img.version)
        self.exec("echo named-data > /data/n && echo anon-data > /cache/a")
        return str(self.inspect()["Id"])

    def ps(self) -> list[dict[str, Any]]:
        """``compose ps`` as the user reads it: service, container name, state."""
        if self.flavour == "v2":
            out = self.compose("-f", "compose.yml", "ps", "--all", "--format", "json").stdout
            text = out.strip()
            rows = json.loads(text) if text.startswith("[") else \
                [json.loads(line) for line in text.splitlines() if line.strip()]
            return [{"service": r["Service"], "name": r["Name"], "state": r["State"],
                     "id": r["ID"]} for r in rows]
        # v1 has no JSON: its own filter says which services run (its table wraps at the
        # width it guesses for a pipe, so it is not parsed)
        ids = self.compose("-f", "compose.yml", "ps", "-q").stdout.split()
        running = set(self.compose("-f", "compose.yml", "ps", "--services", "--filter",
                                   "status=running").stdout.split())
        rows = []
        for cid in ids:
            info = self.bed.docker.api.inspect_container(cid)
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            rows.append({"service": service, "name": info["Name"].lstrip("/"),
                         "state": info["State"]["Status"] if service in running
                                  else "not running",
                         "id": cid})
        return rows

    def down(self) -> None:
        if self.project_dir.exists():
            self.compose("-f", "compose.yml", "down", "-v", "-t", "2", check=False)

    # -- what a deploy must keep ------------------------------------------------------
    def kept(self) -> dict[str, Any]:
        """Networks with aliases, compose labels (but the two that follow the build,
        ``labels_agree``), the MAC address on the first network."""
        info = self.inspect()
        short = info["Id"][:12]
        nets = info["NetworkSettings"]["Networks"]
        return {
            "networks": {n: sorted(a for a in (ep.get("Aliases") or []) if a != short)
                         for n, ep in nets.items()},
            "compose_labels": {k: v for k, v in info["Config"]["Labels"].items()
                               if k.startswith("com.docker.compose.") and k not in MOVING},
            "mac_set": MAC in {ep.get("MacAddress") for ep in nets.values()},
        }

    def labels_agree(self, service: str = "app", container: str = "") -> bool:
        """Whether a container's config-hash is what ``compose config --hash`` says for the
        ``.env`` as it is now, and (v2) its image label is its image's id: then ``up -d``
        leaves it alone."""
        info = self.bed.docker.api.inspect_container(container or self.name)
        labels = info["Config"]["Labels"]
        out = self.compose("-f", "compose.yml", "config", "--hash", service).stdout.split()
        image_ok = labels.get(IMAGE_LABEL, info["Image"]) == info["Image"]
        return out == [service, labels[HASH_LABEL]] and image_ok


def lane_flavours() -> list[str]:
    """The compose flavours to test on the engine of this lane (v1 fails on 26)."""
    key = engines.wanted() or engines.running_key() or engines.DEFAULT_ENGINE
    return list(engines.engine(key).compose)


__all__ = ["MAC", "REGISTRY_HOST", "REGISTRY_URL", "ComposeSite", "lane_flavours"]
