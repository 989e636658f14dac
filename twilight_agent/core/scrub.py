"""Blank credentials inside free text (a failed container's log, an error message) before
it is logged, stored or sent.

Shapes, each replaced by ``[redacted]`` (the key or scheme is kept, so the text still says
what was there):

- ``Bearer``/``Basic`` followed by a credential (an ``Authorization`` header);
- the password of a URL's user-info: ``https://user:secret@host`` -> ``https://user:[redacted]@host``;
- ``key=value`` / ``key: value`` / ``"key": "value"`` pairs whose key ends in password,
  passwd, pwd, secret, token, api key, access key or auth (``DB_PASSWORD=...``,
  ``client_secret: ...``); a key that goes on (``PASSWORD_FILE=/path``) is not one;
- GitHub tokens (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``);
- AWS access key ids (``AKIA``/``ASIA`` + 16), Google API keys (``AIza`` + 35), Slack
  tokens (``xoxb-``, ``xoxa-``, ``xoxp-``, ``xoxr-``, ``xoxs-``).

Digests (``sha256:...``), tags (``sha-abc1234``) and ordinary words are left alone.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(@)", re.I)
_PAIR = re.compile(
    r"\b([\w.-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|auth))"
    r"(\"?\s*[=:]\s*[\"']?)(?!\[redacted\]|Bearer\b|Basic\b)[^\s\"'&;,]+", re.I)
_TOKEN_SHAPES = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}|AIza[0-9A-Za-z_-]{35}|xox[baprs]-[A-Za-z0-9-]{10,})\b")


def scrub(text: str) -> str:
    """``text`` with every credential shape above replaced by ``[redacted]``."""
    text = _SCHEME_CREDENTIAL.sub(r"\1\2" + REDACTED, text)
    text = _URL_PASSWORD.sub(r"\1" + REDACTED + r"\2", text)
    text = _PAIR.sub(r"\1\2" + REDACTED, text)
    return _TOKEN_SHAPES.sub(REDACTED, text)
