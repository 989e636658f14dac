"""Read a token from the first of several files (a systemd credential, a password file).

The token comes back as a ``SecretStr``: it is never part of a repr or a log line. A
file that the group or everyone may read is said once per process, with the fix.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from twilight_agent.errors import ConfigError
from twilight_agent.logs import get_logger

_WARNED: set[str] = set()


def read_token(credentials_directory: Path | None, credential: str,
               password_file: Path | None, what: str) -> SecretStr | None:
    """The token: the systemd credential ``credential`` first, then ``password_file``;
    the first non-empty file's text, stripped; None when none exists or all are empty.

    ``what`` names the token in the one-line error a file that cannot be read gives.
    """
    candidates = [Path(credentials_directory) / credential] if credentials_directory else []
    if password_file:
        candidates.append(password_file)
    for path in candidates:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from exc
        if text:
            warn_if_shared(path)
            return SecretStr(text)
    return None


def warn_if_shared(path: Path) -> None:
    """A token file that the group or everyone may read is said once per process."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077 and str(path) not in _WARNED:
        _WARNED.add(str(path))
        get_logger("twilight.settings").warning(
            "password_file_readable_by_others", path=str(path), mode=oct(mode),
            fix=f"chmod 600 {path}")
