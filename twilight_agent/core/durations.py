"""Durations as operators write them: ``90``, ``90s``, ``2m``, ``168h``, ``7d``, ``1h30m``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str | int | float) -> float:
    """Return seconds; a bare number is seconds. Raises ``ValueError`` on anything else."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or e.g. 90s, 2m, 168h")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = text.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            value = float(s)
        else:
            pos, value = 0, 0.0
            for m in _PART.finditer(s):
                if m.start() != pos:
                    break
                value += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(s) or not s:
                raise ValueError(f"invalid duration {text!r}: use e.g. 90, 90s, 2m, 168h")
    if value < 0:
        raise ValueError(f"duration must not be negative: {text!r}")
    return value
