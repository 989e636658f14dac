"""Every ``TWILIGHT_*`` setting, fed arbitrary text through the environment, gives a loaded
config or one line of ``ConfigError`` (exit 2): never another exception, so a typo never
ends in a traceback and a systemd restart loop; the URLs of a loaded config are ones
httpx will send a request to. The settings are read from the model's
fields, so a new setting is covered when it is added."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twilight_agent.errors import ConfigError
from twilight_agent.settings import Settings, load_settings


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    choices = getattr(alias, "choices", None)
    return str(choices[-1]) if choices else f"TWILIGHT_{field.upper()}"


NAMES = sorted(env_name(f) for f in Settings.model_fields)
DERIVED = sorted(n for n in dir(Settings) if isinstance(getattr(Settings, n, None), property)
                 and not n.startswith("_") and not n.startswith("model_"))
# What the environment can hold: any text but NUL (lone surrogates cannot be encoded).
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
               max_size=40)
VALUES = st.one_of(TEXT, st.sampled_from(["", "0", "-1", "1e999", "nan", "[", "(a", "*",
                                          "http://x#@127.0.0.1", "https://u:p@h", "\x7f",
                                          "http://127.0.0.1:5000/\x01", "/proc/x", "..",
                                          "Mon-Fri 25:00-26:00 Mars/Base", "a=b=c", "'"]),
                   # text after a scheme, so a URL setting gets past its first check
                   st.tuples(st.sampled_from(["http://", "https://", "http://127.0.0.1:5000/"]),
                             TEXT).map("".join))
BASE = b"TWILIGHT_IMAGE=127.0.0.1:5000/acme/app\nTWILIGHT_CONTAINER=app\n"


def load_with(env: dict[str, str]) -> Settings | None:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("TWILIGHT_") and k not in ("CREDENTIALS_DIRECTORY",
                                                            "RUNTIME_DIRECTORY")}
    with tempfile.TemporaryDirectory() as d, mock.patch.dict(os.environ, clean, clear=True):
        cfg = Path(d, "agent.env")
        cfg.write_bytes(BASE)
        os.environ.update(env)
        try:
            s = load_settings(cfg)
            for name in DERIVED:
                getattr(s, name)
            s.registry_password()
            s.promote_password()
            for url in (s.registry_base, s.health_url, s.webhook_url):  # as requests go
                httpx.URL(url.replace("{address}", "127.0.0.1"))
        except ConfigError as exc:
            assert "\n" not in str(exc) and str(exc), repr(exc)
            return None
        return s


def test_every_setting_is_covered() -> None:
    assert len(NAMES) == len(Settings.model_fields) > 40
    assert "TWILIGHT_TAG_PATTERN" in NAMES and "CREDENTIALS_DIRECTORY" in NAMES


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), value=VALUES)
def test_any_text_in_one_setting_loads_or_is_one_config_error(name: str, value: str) -> None:
    load_with({name: value})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=6))
def test_any_text_in_several_settings_loads_or_is_one_config_error(
        pairs: dict[str, str]) -> None:
    load_with(pairs)
