"""Pure rules of the OCI distribution API as ghcr.io serves it. No I/O, no third-party imports.

Media types and the Accept list, ``WWW-Authenticate`` and ``Link`` parsing, platform
selection in an index (attestation manifests skipped), digest checks, OCI labels, and the
retry arithmetic: ``Retry-After`` (header or GHCR's ``retry-after: <duration>`` body hint)
and exponential backoff with jitter.

Where credentials and requests may go: ``credential_host_allowed`` (a token realm gets
the Basic user:PAT only on the registry's own hostname or one the operator lists) and
``destination_refusal`` (no link-local, metadata, multicast or unspecified addresses, no
loopback unless the registry itself is there, never https -> http). "Host" means the
hostname, port ignored: the bed's registry on 127.0.0.1:5000 and its token server on
127.0.0.1:5001 are one host, as ghcr.io and its realm https://ghcr.io/token are.

Everything from the registry is untrusted text: tags, digests and revisions are checked
with ``re.fullmatch`` (``$`` would let ``sha-abcdef0\n`` through), ``created`` must be
RFC 3339, and ``printable`` replaces control characters before a value is shown or logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

REVISION_LABEL = "org.opencontainers.image.revision"
CREATED_LABEL = "org.opencontainers.image.created"
_ATTESTATION = "attestation-manifest"
_REVISION_RE = re.compile(r"[0-9a-fA-F]{7,64}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
SHA_TAG_RE = re.compile(r"sha-[0-9a-f]{7,40}")  # metadata-action: 7, or 40 (long)
# RFC 3339 date-time (what docker/metadata-action writes): date, "T", time, optional
# fraction, Z or an offset. Lowercase t/z are allowed by RFC 3339, section 5.6.
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
GHCR_HOSTS = frozenset({"ghcr.io"})
def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json`` (lowercased)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def sha256_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def is_digest(value: object) -> bool:
    """``sha256:`` + exactly 64 lowercase hex digits, nothing before or after."""
    return isinstance(value, str) and DIGEST_RE.fullmatch(value) is not None


def is_rfc3339(value: object) -> bool:
    """An RFC 3339 date-time with a real calendar date and time (``2026-11-22T03:00:00Z``)."""
    if not isinstance(value, str) or len(value) > 40:
        return False
    m = _RFC3339_RE.fullmatch(value)
    if m is None:
        return False
    try:
        dt.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]),
                    min(int(m[6]), 59))  # 60: a leap second
    except ValueError:
        return False
    return int(m[6]) <= 60 and (m[8] in "Zz" or (int(m[8][1:3]) < 24 and int(m[8][4:]) < 60))


# --------------------------------------------------------------------------- auth
@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: ``Bearer realm="...",service="...",scope="..."``."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")


_PARAM_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge:
    """Parse one challenge; quoted values may contain commas (GHCR's scopes do)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else (m.group(3) or "")
        params[m.group(1).lower()] = value.replace('\\"', '"')
    return Challenge(scheme=scheme.lower(), params=params)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, read without verifying it (the registry
    does that); None for an opaque token. Lets a cached token be renewed before the
    registry refuses it, instead of after a wasted request."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return finite_number(exp)


def finite_number(value: object) -> float | None:
    """``value`` as a finite float if it is a JSON number (not a bool) that fits, else None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if abs(number) < 1e15 else None


def pull_scope(repository: str) -> str:
    """The token scope for pulling ``repository``; never taken from a ``/v2/`` challenge,
    because ghcr.io answers there with a placeholder scope."""
    return f"repository:{repository}:pull"


# --------------------------------------------------------------------------- tags/list
_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")


def next_link(header: str | None) -> str | None:
    """The target of ``rel="next"`` in a ``Link`` header (may be relative), else None."""
    if not header:
        return None
    for m in _LINK_RE.finditer(header):
        rels = re.findall(r'rel\s*=\s*"?([^";]+)"?', m.group(2))
        if any("next" in r.split() for r in rels):
            return m.group(1).strip()
    return None


def parse_tag_page(doc: Any) -> list[str]:
    """The ``tags`` of one ``tags/list`` page; raise ``ValueError`` on any other shape."""
    if not isinstance(doc, dict):
        raise ValueError("tags/list did not answer a JSON object")
    tags = doc.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("tags/list 'tags' is not a list of strings")
    return tags


# --------------------------------------------------------------------------- manifests
@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def of(cls, value: tuple[str, ...] | str) -> Platform:
        """From ``("linux", "arm64", "v8")`` or ``"linux/arm64/v8"``."""
        parts = tuple(value.split("/")) if isinstance(value, str) else tuple(value)
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform must be os/arch[/variant]: {value!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def is_attestation(entry: Mapping[str, Any]) -> bool:
    """buildx lists provenance/SBOM manifests with an ``unknown/unknown`` platform."""
    annotations = entry.get("annotations")
    platform = entry.get("platform")
    annotations = annotations if isinstance(annotations, dict) else {}
    platform = platform if isinstance(platform, dict) else {}
    return (annotations.get("vnd.docker.reference.type") == _ATTESTATION
            or platform.get("os") == "unknown" or platform.get("architecture") == "unknown")


def _entry_platform(entry: Mapping[str, Any]) -> Platform | None:
    p = entry.get("platform")
    if not isinstance(p, dict):
        return None
    os_, arch, variant = p.get("os"), p.get("architecture"), p.get("variant")
    if not (isinstance(os_, str) and os_ and isinstance(arch, str) and arch):
        return None
    return Platform(os_, arch, variant if isinstance(variant, str) and variant else None)


def select_platform(index: Mapping[str, Any], want: Platform) -> Mapping[str, Any]:
    """The index entry for ``want`` (exact variant preferred); ``LookupError`` if none."""
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise ValueError("index has no 'manifests' list")
    usable = [e for e in entries if isinstance(e, dict) and not is_attestation(e)]
    matches = []
    for entry in usable:
        p = _entry_platform(entry)
        if p and p.os == want.os and p.architecture == want.architecture:
            matches.append((p.variant == want.variant, entry))
    if not matches:
        have = sorted(str(p) for e in usable if (p := _entry_platform(e)))
        raise LookupError(f"no {want} image in the index (it has: {', '.join(have) or 'none'})")
    matches.sort(key=lambda m: not m[0])
    return matches[0][1]


def descriptor_digest(descriptor: Any, what: str) -> str:
    """``descriptor["digest"]`` checked for shape; ``ValueError`` names ``what``."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if not isinstance(digest, str) or not is_digest(digest):
        raise ValueError(f"{what} has no valid sha256 digest")
    return digest


def labels_of(config: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(revision, created)`` from an image config's OCI labels; a revision that is not
    7-64 hex digits counts as missing. ``created`` falls back to the config's own field."""
    inner = config.get("config") or {}
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    labels = labels if isinstance(labels, dict) else {}
    revision = labels.get(REVISION_LABEL)
    revision = revision.lower() if isinstance(revision, str) \
        and _REVISION_RE.fullmatch(revision) else None
    created = labels.get(CREATED_LABEL)
    if not is_rfc3339(created):
        created = config.get("created")
    return revision, created if is_rfc3339(created) else None


# --------------------------------------------------------------------------- retries
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}
_BODY_HINT = re.compile(r"retry-after:\s*([0-9.]+[a-zµμ0-9.]*)", re.I)


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration (``1.5s``, ``711.6µs``, ``1m30s``); None if it is not one."""
    pos, total = 0, 0.0
    for m in _GO_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos else None


def retry_after_header(value: str | None, now: dt.datetime) -> float | None:
    """Seconds from ``Retry-After``: delta-seconds or an HTTP date (relative to ``now``)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def retry_after_body(body: str) -> float | None:
    """GHCR's hint in a JSON error body: ``"message": "retry-after: 1.1s, allowed: ..."``."""
    m = _BODY_HINT.search(body[:4096])
    return parse_go_duration(m.group(1).rstrip(".,")) if m else None


def retry_hint(header: str | None, body: str, now: dt.datetime) -> float | None:
    """The registry's own wait, header first, then the body hint."""
    hint = retry_after_header(header, now)
    return hint if hint is not None else retry_after_body(body)


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above ``cap``.

    ``attempt`` counts from 0; ``rand`` is a number in [0, 1) from the caller.
    """
    ceiling = min(cap, base * float(2 ** min(attempt, 30)))
    return ceiling / 2 + ceiling / 2 * rand


def is_retryable_status(status: int) -> bool:
    """429 and the 5xx a registry or its CDN answers when it is briefly unwell."""
    return status == 429 or status in (500, 502, 503, 504)
