"""The bed's engine plumbing that needs no engine: which mirror the 26 engine is fetched
from (read from the host's own apt sources, whatever their form), and engine names."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import engines
from testbed.util import BedError

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def _etc(tmp_path: Path, sources: str = "", one_line: str = "") -> Path:
    (tmp_path / "apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "os-release").write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    if sources:
        (tmp_path / "apt/sources.list.d/debian.sources").write_text(sources)
    if one_line:
        (tmp_path / "apt/sources.list").write_text(one_line)
    return tmp_path


def test_mirror_comes_from_the_deb822_source_of_the_release_suite(tmp_path: Path) -> None:
    assert engines.host_mirror(_etc(tmp_path, DEB822)) == "http://mirror.example/debian"


def test_mirror_comes_from_a_one_line_source(tmp_path: Path) -> None:
    etc = _etc(tmp_path, one_line="# comment\ndeb-src http://src.example/debian bookworm main\n"
               "deb [arch=amd64] http://lines.example/debian/ bookworm main contrib\n")
    assert engines.host_mirror(etc) == "http://lines.example/debian"


def test_no_debian_source_is_a_bed_error_saying_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(BedError, match=r"sources\.list"):
        engines.host_mirror(_etc(tmp_path, DEB822.replace("bookworm ", "other ")
                                 .replace("bookworm-security", "x")))


@pytest.mark.parametrize(("version", "key"), [
    ("20.10.24+dfsg1", "20.10"), ("26.1.5+dfsg1", "26"), ("29.0.1", "29")])
def test_engine_key_of_a_version(version: str, key: str) -> None:
    assert engines.key_of(version) == key


def test_unknown_engine_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engines.ENGINE_ENV, "25")
    with pytest.raises(BedError, match=r"26, 20\.10"):
        engines.wanted()
