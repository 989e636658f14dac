"""Configuration: pydantic-settings, env prefix ``TWILIGHT_``. The only reader of the environment.

Sources, strongest first: the process environment, then the config file
(``/etc/twilight-agent/agent.env`` or ``--config PATH``), then the defaults here.
Secrets are read from files (``TWILIGHT_REGISTRY_PASSWORD_FILE`` or the systemd credential
``registry-token``) and are never part of ``repr()`` or a log line.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from twilight_agent.adapters.registry.secret_file import read_token
from twilight_agent.core.destinations import parse_auth_hosts, printable
from twilight_agent.core.durations import parse_duration
from twilight_agent.core.models import ImageRef
from twilight_agent.core.policy import DEFAULT_TAG_PATTERN, check_tag
from twilight_agent.core.windows import Window, parse_windows
from twilight_agent.errors import ConfigError
from twilight_agent.settings.notify import NotifyFields
from twilight_agent.settings.promote import PromoteFields
from twilight_agent.settings.swarm import SwarmFields
from twilight_agent.settings.urls import check_http_url, check_registry_transport
from twilight_agent.settings.verify import VerifyFields
from twilight_agent.target_kinds import check_settings, has_target

DEFAULT_CONFIG = Path("/etc/twilight-agent/agent.env")
CONFIG_DIR = DEFAULT_CONFIG.parent
STATE_BASE = Path("/var/lib/twilight-agent")
RUNTIME_BASE = Path("/run/twilight-agent")
# An instance name is a file name and a systemd instance: no path, no escaping needed.
INSTANCE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_DURATION = 30 * 86400.0
CREDENTIAL_NAME = "registry-token"

Duration = Annotated[float, BeforeValidator(parse_duration)]


class Settings(BaseSettings, SwarmFields, PromoteFields, VerifyFields, NotifyFields):
    """Every setting of twilight-agent. Field descriptions feed docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="TWILIGHT_", extra="forbid", case_sensitive=False, frozen=True,
        env_file_encoding="utf-8",
    )

    instance: str = Field("", description="Name of this app when one host runs several "
                          "(`twilight-agent --instance NAME`, the unit "
                          "`twilight-agent@NAME`): config `/etc/twilight-agent/NAME.env`, "
                          "state in `/var/lib/twilight-agent/NAME`, its own lock.")
    image: str = Field(description="Repository to follow, with its registry host, "
                       "e.g. `ghcr.io/lacatfly/twilight-drive`. No tag.")
    registry_url: str = Field("", description="Registry base URL. Default: `https://` + the "
                              "image's host (`http://127.0.0.1:5000` in tests).")
    track: str = Field("main", description="Moving tag CI pushes on every build of main.")
    tag_pattern: str = Field(DEFAULT_TAG_PATTERN, description="Regex every tag must match "
                             "before anything is done with it (pin, CLI, registry).")
    pin: str = Field("", description="Deploy this tag and stop following the track; empty "
                     "= follow the track. Changed with `twilight-agent pin` + reload.")
    container: str = Field("", description="Name of the container to roll forward.")
    compose_project: str = Field("", description="Compose project of the target (with "
                                 "`TWILIGHT_SERVICE`), instead of `TWILIGHT_CONTAINER`.")
    service: str = Field("", description="Compose service of the target; every replica of "
                         "a scaled service is swapped, one at a time.")
    services: str = Field("", description="Compose services that share the image and deploy "
                          "as one unit (`web,worker`), swapped and gated in this order, rolled "
                          "back together; with `TWILIGHT_COMPOSE_PROJECT`. The health URL "
                          "belongs to the first. Neither this nor `TWILIGHT_SERVICE`: every "
                          "service of the project running `TWILIGHT_IMAGE`.")
    pre_deploy: str = Field("", description="Task run once before the swap in a one-off "
                            "container of the new image with the first service's env, "
                            "networks and volumes (a migration): an argv, split like a "
                            "shell would (`python manage.py migrate`), never run by a shell. "
                            "Not exit 0: nothing is swapped and the build is quarantined.")
    pre_deploy_timeout: Duration = Field(600.0, description="How long the pre-deploy task "
                                         "may run before it is killed and counted as failed.")
    env_file: Path | None = Field(None, description="Compose `.env` whose `IMAGE_TAG=` and "
                                  "`IMAGE_DIGEST=` lines are rewritten on commit, so `docker "
                                  "compose up -d` by hand stays on the deployed build.")
    health_url: str = Field("", description="URL probed for 2xx. Default: "
                            "`http://127.0.0.1:<first published port>/healthz`.")
    health_timeout: Duration = Field(60.0, description="How long a new version has to "
                                     "become healthy.")
    health_interval: Duration = Field(2.0, description="Time between health probes.")
    health_soak: Duration = Field(10.0, description="How long it must stay healthy after "
                                  "the first pass.")
    health_failures: int = Field(5, ge=0, le=1000, description="This many 5xx answers in a "
                                 "row fail the health gate at once: the app is up and "
                                 "broken, not slow (a boot that refuses connections still "
                                 "gets the whole `TWILIGHT_HEALTH_TIMEOUT`). 0 = wait out "
                                 "the timeout.")
    swap: Literal["auto", "start-first", "stop-first"] = Field(
        "auto", description="`start-first`: the new container starts beside the old one "
        "(same network aliases and labels, named `<name>.twilight-next`), is gated on its "
        "own address (`{address}` in `TWILIGHT_HEALTH_URL`), and only then is the old one "
        "stopped and parked: no gap behind a reverse proxy; needs a target that publishes "
        "no host port. `stop-first`: the new container is created first, then the old one "
        "stopped and the new one started (the gap is stop + start + boot). `auto`: "
        "start-first when no unit publishes a host port, else stop-first.")
    drain: Duration = Field(0.0, description="Start-first: how long the old container "
                            "keeps running after the new one passed its gate, before it is "
                            "stopped (let a proxy's connections move over).")
    min_age: Duration = Field(0.0, description="A new build on the track is deployed only "
                              "once the agent has seen the track point at it this long "
                              "(first-seen time kept in the state store): a build CI replaces "
                              "quickly never rolls out. An explicit `deploy TAG` is not held "
                              "back. 0 = at once.")
    deploy_window: str = Field("", description="When deploys may happen, e.g. `Mon-Fri "
                               "09:00-17:00 Europe/Berlin`; several separated by `;`. Polls "
                               "run anytime; a new build waits for the next window; "
                               "`status` and `check` show it; `deploy` outside needs `--now`. "
                               "Empty = anytime.")
    watch: Duration = Field(300.0, description="After commit, how long the new version is "
                            "watched with the previous one kept parked: an exit, restart, "
                            "`unhealthy` or a health URL failing for `TWILIGHT_HEALTH_TIMEOUT` "
                            "in that time rolls back to it and quarantines the build. "
                            "A new build waits for the watch to end. 0 = no watch.")
    stall: Duration = Field(300.0, description="Under systemd's watchdog: how long a deploy "
                            "may go without progress (pull bytes, a swarm task's state, the "
                            "health gate's or the watch's next look) before the watchdog "
                            "pings stop and systemd restarts the agent; work that moves is "
                            "never cut short, however long it takes.")
    poll_interval: Duration = Field(60.0, description="Time between registry polls "
                                    "(jittered by up to 10%).")
    prune_after: Duration = Field(7 * 86400.0, description="Remove images of this "
                                  "repository older than this; never the current or previous.")
    state_dir: Path = Field(Path("/var/lib/twilight-agent"), description="Journal, history, "
                            "quarantine (sqlite) and the deploy lock.")
    registry_username: str = Field("", description="User for Basic auth at the token "
                                   "endpoint (a GitHub user for ghcr.io).")
    registry_password_file: Path | None = Field(None, description="File holding the "
                                                "registry token (a PAT with read:packages).")
    registry_auth_hosts: str = Field("", description="Other hostnames (comma-separated) "
                                     "the registry may name as its token realm and receive "
                                     "the credentials. Empty: only the registry's own host.")
    log_format: Literal["auto", "json", "console", "journald"] = Field(
        "auto", description="`auto`: journald fields under systemd, JSON when not a TTY, "
        "console on a TTY.")
    docker_host: str = Field("unix:///var/run/docker.sock", description="Docker engine socket.")
    metrics_file: Path | None = Field(None, description="Prometheus textfile to write "
                                      "(node_exporter textfile collector). Off when empty.")
    webhook_log_lines: int = Field(50, ge=0, le=1000, description="Last log lines of a "
                                   "failed container sent with a webhook (scrubbed of "
                                   "credentials); 0 sends none.")
    webhook_url: str = Field("", description="URL that gets a JSON POST on deploy, rollback "
                             "and halt. Off when empty.")
    credentials_directory: Path | None = Field(
        None, validation_alias=AliasChoices("CREDENTIALS_DIRECTORY"),
        description="Set by systemd (`LoadCredential=`); holds `registry-token`.")
    runtime_directory: Path = Field(
        Path("/run/twilight-agent"),
        validation_alias=AliasChoices("RUNTIME_DIRECTORY", "TWILIGHT_RUNTIME_DIRECTORY"),
        description="Where `run` writes its pidfile for `pin`/`unpin`; systemd sets it "
        "(`RuntimeDirectory=`).")

    @model_validator(mode="before")
    @classmethod
    def _instance_defaults(cls, data: Any) -> Any:
        """An instance keeps its state and pidfile apart unless the config says where."""
        if not isinstance(data, dict) or not data.get("instance"):
            return data
        name = str(data["instance"])
        if not INSTANCE_RE.fullmatch(name):
            raise ValueError(f"TWILIGHT_INSTANCE: {name[:40]!r} is not an instance name "
                             "(lowercase letters, digits, - and _)")
        data = dict(data)
        data.setdefault("state_dir", STATE_BASE / name)
        if not any(k.upper() in ("RUNTIME_DIRECTORY", "TWILIGHT_RUNTIME_DIRECTORY")
                   for k in data):
            data["RUNTIME_DIRECTORY"] = RUNTIME_BASE / name
        return data

    @field_validator("tag_pattern")
    @classmethod
    def _is_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except (re.error, RecursionError, OverflowError) as exc:
            raise ValueError(f"TWILIGHT_TAG_PATTERN is not a regular expression: "
                             f"{printable(exc, 120)}") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        try:
            ImageRef.parse(self.image)
        except ValueError as exc:
            raise ValueError(f"TWILIGHT_IMAGE: {exc}") from None
        for name in ("track", "pin"):
            value = getattr(self, name)
            if value:
                try:
                    check_tag(value, self.tag_pattern)
                except ValueError as exc:
                    raise ValueError(f"TWILIGHT_{name.upper()}: {exc}") from None
        check_settings(self)  # each target kind's exclusivity and rules
        try:
            self.pre_deploy_argv  # noqa: B018 (parsed once here: a bad quote fails at load)
        except ValueError as exc:
            raise ValueError(f"TWILIGHT_PRE_DEPLOY: {exc}") from None
        check_registry_transport(self.registry_url, self.registry_auth_hosts)
        self._check_durations()
        self.windows  # noqa: B018  (an invalid TWILIGHT_DEPLOY_WINDOW is a config error)
        for name in ("health_url", "webhook_url"):
            if getattr(self, name):
                check_http_url(name, getattr(self, name))
        return self

    def _check_durations(self) -> None:
        for name in ("health_timeout", "health_interval", "poll_interval", "prune_after",
                     "pre_deploy_timeout", "health_soak", "watch", "drain", "min_age",
                     "stall"):
            value = getattr(self, name)
            zero_ok = name in ("health_soak", "watch", "drain", "min_age")
            if value > MAX_DURATION or value < 0 or (value == 0 and not zero_ok):
                least = ">= 0" if zero_ok else "> 0"
                raise ValueError(f"TWILIGHT_{name.upper()} must be {least} and at most 30 days")
        if self.health_timeout <= self.health_interval:
            raise ValueError("TWILIGHT_HEALTH_TIMEOUT must be longer than "
                             "TWILIGHT_HEALTH_INTERVAL (the gate probes several times)")

    # -- derived ----------------------------------------------------------------------
    @property
    def windows(self) -> tuple[Window, ...]:
        try:
            return parse_windows(self.deploy_window)
        except ValueError as exc:
            raise ValueError(f"TWILIGHT_DEPLOY_WINDOW: {exc}") from None

    @property
    def image_ref(self) -> ImageRef:
        return ImageRef.parse(self.image)

    @property
    def registry_base(self) -> str:
        return (self.registry_url or f"https://{self.image_ref.host}").rstrip("/")

    @property
    def auth_hosts(self) -> frozenset[str]:
        """``TWILIGHT_REGISTRY_AUTH_HOSTS`` as lowercase hostnames."""
        return parse_auth_hosts(self.registry_auth_hosts)

    @property
    def has_target(self) -> bool:
        return has_target(self)

    @property
    def service_list(self) -> tuple[str, ...]:
        """The compose services to deploy, in order; () = every one running the image."""
        names = self.services.split(",") if self.services else [self.service]
        return tuple(n.strip() for n in names if n.strip())

    @property
    def pre_deploy_argv(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.pre_deploy)) if self.pre_deploy.strip() else ()

    def registry_password(self) -> SecretStr | None:
        """The registry token: the systemd credential first, then the password file."""
        token = read_token(self.credentials_directory, CREDENTIAL_NAME,
                           self.registry_password_file, "registry token")
        if token is not None:
            return token
        if self.registry_password_file and not self.registry_password_file.exists():
            raise ConfigError("TWILIGHT_REGISTRY_PASSWORD_FILE "
                              f"{printable(str(self.registry_password_file), 200)} does not "
                              "exist")
        return None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown setting {loc.upper()!s} (typo?)"
    if err["type"] == "missing":
        return f"TWILIGHT_{loc.upper()} is required"
    return f"TWILIGHT_{loc.upper()}: {msg}" if loc and not msg.startswith("TWILIGHT_") else msg


def config_path(config: Path | None, instance: str | None) -> Path:
    """The settings file: ``--config``, else the instance's ``NAME.env``, else agent.env."""
    if config is not None:
        return config
    if instance:
        if not INSTANCE_RE.fullmatch(instance):
            raise ConfigError(f"--instance {instance[:40]!r} is not an instance name "
                              "(lowercase letters, digits, - and _)")
        return CONFIG_DIR / f"{instance}.env"
    return DEFAULT_CONFIG


def load_settings(config: Path | None = None, instance: str | None = None,
                  **overrides: Any) -> Settings:
    """Read the config file (if it exists; a path given explicitly must exist) + environment.

    ``instance`` (``--instance NAME``) picks ``/etc/twilight-agent/NAME.env``, which must
    exist. Raises ``ConfigError`` with one line naming the setting at fault.
    """
    path = config_path(config, instance)
    if instance:
        overrides.setdefault("instance", instance)
        if config is None and not path.exists():
            raise ConfigError(f"instance {instance}: config file {printable(str(path), 200)} "
                              "does not exist")
    if config is not None and not config.exists():
        raise ConfigError(f"config file {printable(str(config), 200)} does not exist")
    env_file = path if path.exists() else None
    if env_file is not None:
        try:
            env_file.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        where = f" (in {path} or the environment)" if env_file else ""
        # one line whatever a value held (a newline in a pattern, an escape sequence)
        raise ConfigError(printable(_first_error(exc), 1000) + where) from None


def environ() -> dict[str, str]:
    """The process environment, for the few places that must pass it on (subprocesses)."""
    return dict(os.environ)
