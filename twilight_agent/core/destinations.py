"""Where the agent may send a request or a credential, as pure rules: text made safe to
print, loopback hosts, the hosts a registry credential may go to, and the destinations a
registry may redirect us to. No I/O (names are checked as written, never resolved)."""

from __future__ import annotations

import ipaddress
import re
import unicodedata

# Cloud metadata endpoints: a redirect or realm there would leak the host's own credentials.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata",
                             "instance-data", "instance-data.ec2.internal"})
_METADATA_IPS = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200",
    "168.63.129.16"))


def printable(value: object, limit: int = 200) -> str:
    """``value`` as text safe for a terminal or a log line: control and format characters
    (escape sequences, newlines, bidi overrides) become ``?``; at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    text = text[:limit]
    return "".join("?" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c for c in text)


# --------------------------------------------------------------------------- destinations
def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def normal_host(host: str) -> str:
    """A hostname as compared here: lowercase, no trailing dot, no IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (also v4-mapped) or exactly ``localhost``. Not ``*.localhost``:
    RFC 6761 says those are loopback too, but a plain glibc resolver asks DNS for them."""
    name = normal_host(host)
    if name == "localhost":
        return True
    ip = _ip(name)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and ip.is_loopback


_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                          r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", re.ASCII)


def parse_auth_hosts(text: str) -> frozenset[str]:
    """``TWILIGHT_REGISTRY_AUTH_HOSTS``: hostnames or IP addresses, comma- or space-separated.
    ``ValueError`` for anything else (a scheme, a port, a path, a wildcard)."""
    hosts = set()
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        name = normal_host(item)
        if _ip(name) is None and not _HOSTNAME_RE.fullmatch(name):
            raise ValueError(f"{printable(item, 60)!r} is not a hostname (no scheme, port, "
                             "path or wildcard)")
        hosts.add(name)
    return frozenset(hosts)


def credential_host_allowed(target_host: str, registry_host: str,
                            allowed: frozenset[str] = frozenset()) -> bool:
    """May the registry credentials (Basic user:PAT) go to ``target_host``? Only to the
    registry's own hostname or one the operator allowed; the port does not matter."""
    target = normal_host(target_host)
    return target == normal_host(registry_host) or target in allowed


def destination_refusal(scheme: str, host: str, *, from_scheme: str,
                        registry_host: str) -> str | None:
    """Why a request the registry sends us to (a blob redirect, a token realm) is refused,
    or None. Refused: a downgrade from https to http; link-local, cloud metadata,
    multicast, unspecified or reserved addresses; loopback unless the registry is on
    loopback itself. Names are checked as written; the unit's ``IPAddressDeny=`` stops a
    name that resolves to link-local or multicast at the socket."""
    if scheme not in ("http", "https"):
        return f"the scheme {printable(scheme, 20)!r} is not http(s)"
    if from_scheme == "https" and scheme != "https":
        return "it goes from https to plain http"
    name = normal_host(host)
    if not name:
        return "it names no host"
    if name in _METADATA_HOSTS:
        return "it names a cloud metadata host"
    if is_loopback_host(name):
        return None if is_loopback_host(registry_host) else "it is a loopback address"
    ip = _ip(name)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_IPS:
        return "it is a cloud metadata address"
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "it is a link-local, multicast or reserved address"
    return None
