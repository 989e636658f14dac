"""The systemd unit's resource and network limits (ISSUE 14). The score of
``systemd-analyze security`` is measured on a real systemd in tests/e2e/test_systemd.py."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "twilight-agent.service"


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _bytes(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def test_no_link_local_or_multicast_addresses() -> None:
    denied = " ".join(directives()["IPAddressDeny"]).split()
    assert {"link-local", "multicast"} <= set(denied)
    assert "any" not in denied  # the registry's addresses move: no allow-list


def test_memory_and_tasks_are_capped() -> None:
    d = directives()
    assert 128 << 20 <= _bytes(d["MemoryMax"][-1]) <= 1 << 30  # idles at ~80 MiB
    assert 16 <= int(d["TasksMax"][-1]) <= 256
