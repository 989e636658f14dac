"""Settings of the Apprise notification targets, mixed into Settings.

A target URL often holds its secret (a webhook token, a mail password), so the URLs can
come from a file or the systemd credential ``notify-urls``, one a line; they are never
part of ``repr()``, an error message or a log line (``where`` names a target safely).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, model_validator

from twilight_agent.adapters.notify.apprise_sink import split_urls
from twilight_agent.adapters.registry.secret_file import read_token

NOTIFY_CREDENTIAL = "notify-urls"
MAX_TARGETS = 20
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.I)
# `TWILIGHT_NOTIFY_FILE=` (as the example config has it) is no file, not the directory "."
OptionalPath = Annotated[Path | None, BeforeValidator(lambda v: v if v != "" else None)]


class NotifyFields(BaseModel):
    """Notifications through Apprise: chat, e-mail, push and MQTT, one URL per target."""

    if TYPE_CHECKING:  # Settings' own field, which these read
        credentials_directory: Path | None

    notify: SecretStr = Field(SecretStr(""), description="Apprise URLs that get a message on "
                              "deploy, rollback, halt, an untrusted build and a held "
                              "downgrade, separated by blanks (e.g. `ntfy://ntfy.sh/topic "
                              "mailto://user:pass@example.com`). A URL that holds a secret "
                              "belongs in `TWILIGHT_NOTIFY_FILE` instead. Empty: none.")
    notify_file: OptionalPath = Field(None, description="File with more Apprise URLs, one a "
                                     "line (`#` comments; or the systemd credential "
                                     "`notify-urls`): keeps tokens and passwords out of "
                                     "the config file.")

    @model_validator(mode="after")
    def _check_notify(self) -> Any:
        """Every target looks like a URL, and a named file exists: a mistake is exit 2 at
        load. Whether a service accepts it is what ``notify-test`` tells."""
        if self.notify_file is not None and not self.notify_file.exists() and \
                not self._notify_credential_exists():
            raise ValueError(f"TWILIGHT_NOTIFY_FILE {self.notify_file} does not exist")
        urls = self.notify_urls()
        for n, url in enumerate(urls, 1):
            if not _URL.fullmatch(url):
                raise ValueError(f"TWILIGHT_NOTIFY: target {n} is not a URL "
                                 "(scheme://...); it is not shown here, it may hold a secret")
        if len(urls) > MAX_TARGETS:
            raise ValueError(f"TWILIGHT_NOTIFY: at most {MAX_TARGETS} targets")
        return self

    def _notify_credential_exists(self) -> bool:
        directory = self.credentials_directory
        return directory is not None and (Path(directory) / NOTIFY_CREDENTIAL).exists()

    def notify_urls(self) -> list[str]:
        """``TWILIGHT_NOTIFY``, then the credential ``notify-urls`` or the file's URLs."""
        urls = split_urls(self.notify.get_secret_value())
        more = read_token(self.credentials_directory, NOTIFY_CREDENTIAL,
                          self.notify_file, "notify URLs")
        return urls + (split_urls(more.get_secret_value()) if more else [])
