"""RegistryPort over the OCI distribution API as ghcr.io serves it (httpx).

Finding the newest build on the track (docs/operations.md, "Checking what would be deployed"):

1. ``HEAD manifests/<track>`` with the full Accept list -> digest D. When D is the digest
   of the last result, that is all: one request per idle poll, whatever the tag count.
2. ``GET manifests/D`` (verified against D), for an index the entry for our platform
   (attestations skipped), then its config blob (a redirect to another host is followed
   without the registry token): ``org.opencontainers.image.revision`` -> ``sha-<7>``,
   confirmed by a ``HEAD`` that must answer D.
3. No label or no confirmation: page through ``tags/list`` (``Link``, page cap, loop check)
   and ``HEAD`` the ``sha-*`` tags until one answers D.

The Release carries the ``sha-`` tag and D itself (for a multi-arch image the index digest:
the engine pulls that). Everything the registry sends is untrusted: each public call has one
overall deadline, tags/list is capped in pages and tags, a blob redirect may not downgrade to
http nor point at link-local, metadata or (unless the registry is there) loopback addresses,
tags, digests and revisions are checked with ``re.fullmatch``, and registry text goes through
``printable`` before it is part of a message. Any answer ends in a ``RegistryError``
(``RegistryProtocolError`` for garbage), never a ``KeyError`` or ``RecursionError``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from twilight_agent.adapters.registry.auth import RegistrySession, Reply
from twilight_agent.adapters.registry.credentials import Credentials
from twilight_agent.core.destinations import destination_refusal, printable
from twilight_agent.core.models import Digest, Release, Tag
from twilight_agent.core.policy import DEFAULT_TAG_PATTERN, check_tag, sha_tag
from twilight_agent.core.registry_rules import (
    ACCEPT,
    IMAGE_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    SHA_TAG_RE,
    Platform,
    descriptor_digest,
    labels_of,
    next_link,
    parse_tag_page,
    pull_scope,
    select_platform,
    sha256_digest,
)
from twilight_agent.errors import InvalidTag, ManifestNotFound, RegistryProtocolError
from twilight_agent.logs import get_logger

log = get_logger("twilight.registry")

_REDIRECTS = (301, 302, 303, 307, 308)


def _digest(value: str | None, what: str) -> Digest:
    try:
        return Digest(value or "")  # the same fullmatch as registry_rules.is_digest
    except ValueError as exc:
        raise RegistryProtocolError(f"{printable(what, 120)}: the registry sent no valid "
                                    "sha256 digest") from exc


class HttpRegistry:
    """The agent's view of one repository. Cheap to construct; ``close()`` when done."""

    def __init__(self, base_url: str, repository: str, *,
                 credentials: Credentials | None = None,
                 tag_pattern: str = DEFAULT_TAG_PATTERN,
                 platform: tuple[str, ...] | str | Callable[[], tuple[str, ...]] = (
                     "linux", "amd64"),
                 page_size: int = 1000, max_pages: int = 100, max_candidates: int = 2000,
                 max_tags: int = 50_000, scope: str = "", **session: Any) -> None:
        self.repository = repository
        self.name = f"{httpx.URL(base_url).netloc.decode()}/{repository}"
        self._platform_source = platform  # os/arch, or a callable asking the engine once
        self._platform: Platform | None = None
        self._pattern = tag_pattern
        self._page_size, self._max_pages = page_size, max_pages
        self._max_candidates, self._max_tags = max_candidates, max_tags
        self._v2 = f"{base_url.rstrip('/')}/v2/{repository}"
        self._http = RegistrySession(base_url, scope or pull_scope(repository), credentials,
                                     **session)

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            source = self._platform_source
            self._platform = Platform.of(source() if callable(source) else source)
        return self._platform

    @property
    def requests(self) -> int:
        """HTTP requests sent so far (token requests included)."""
        return self._http.requests

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- RegistryPort
    def track_digest(self, track: str) -> Digest:
        tag = self._gate(track)
        with self._http.operation():
            return self._head(tag)

    def resolve_track(self, track: str, known: Release | None = None,
                      digest: Digest | None = None) -> Release:
        tag = self._gate(track)
        with self._http.operation():
            return self._resolve_track(tag, known, digest)

    def resolve_tag(self, tag: str, known: Release | None = None) -> Release:
        checked = tag if isinstance(tag, Tag) else self._gate(tag)  # a Tag passed the gate
        with self._http.operation():
            return self._resolve_tag(checked, known)

    def created(self, digest: Digest) -> str | None:
        """The build's ``org.opencontainers.image.created`` label, if it has one."""
        return self.labels(digest)[1]

    def labels(self, digest: Digest) -> tuple[str | None, str | None]:
        """``(revision, created)``: the labels of the build under ``digest``."""
        with self._http.operation():
            return self._labels(digest, str(digest))

    def _resolve_track(self, track: str, known: Release | None,
                       digest: Digest | None) -> Release:
        digest = digest or self._head(track)  # the caller's HEAD of the track, if it made one
        if known is not None and known.digest == digest:
            return known
        revision, created = self._labels(digest, track)
        tag = self._confirmed_tag(digest, revision, track)
        log.info("registry_resolved", track=track, tag=tag, digest=str(digest))
        return Release(tag=tag, digest=digest, revision=revision, created=created)

    def _resolve_tag(self, tag: Tag, known: Release | None) -> Release:
        digest = self._head(tag)
        if known is not None and known.digest == digest and known.tag == tag:
            return known
        revision, created = self._labels(digest, tag)
        return Release(tag=tag, digest=digest, revision=revision, created=created)

    # ----------------------------------------------------------------------- steps
    def _gate(self, tag: str) -> Tag:
        """The tag gate (``Tag.parse`` matches the pattern as a whole: ``$`` in a pattern
        does not let ``"tag\n"`` through)."""
        try:
            return check_tag(tag, self._pattern)
        except ValueError as exc:
            raise InvalidTag(printable(exc)) from exc

    def _passes(self, tag: str) -> Tag | None:
        with contextlib.suppress(InvalidTag):
            return self._gate(tag)
        return None

    def _labels(self, digest: Digest, ref: str) -> tuple[str | None, str | None]:
        """``(revision, created)`` from the config of our platform's image under ``digest``."""
        doc, media_type, _ = self._manifest(digest)
        if media_type in INDEX_TYPES:
            try:  # a malformed entry or digest is the registry's garbage, not a bug
                entry = select_platform(doc, self.platform)
                child = Digest(descriptor_digest(entry, "index entry"))
            except LookupError as exc:
                raise ManifestNotFound(f"{self.name}:{ref}: {printable(exc)}") from exc
            except ValueError as exc:
                raise RegistryProtocolError(f"{self.name}:{ref}: {printable(exc)}") from exc
            doc, media_type, _ = self._manifest(child)
            if media_type not in IMAGE_TYPES:
                raise RegistryProtocolError(f"{self.name}:{ref}: the {self.platform} entry "
                                            f"is {printable(media_type, 80)}, not an image "
                                            "manifest")
        try:
            config_digest = descriptor_digest(doc.get("config"), "image manifest config")
        except ValueError as exc:
            raise RegistryProtocolError(f"{self.name}:{ref}: {exc}") from exc
        config = self._json_blob(_digest(config_digest, "config"))
        return labels_of(config)

    def _confirmed_tag(self, digest: Digest, revision: str | None, track: str) -> Tag:
        if revision:
            tag = sha_tag(revision)
            checked = self._passes(tag) if SHA_TAG_RE.fullmatch(tag) else None
            if checked is not None and self._head_or_none(checked) == digest:
                return checked
            log.info("registry_label_unconfirmed", track=track, tag=tag, digest=str(digest))
        return self._scan(digest, track)

    def _scan(self, digest: Digest, track: str) -> Tag:
        """HEAD the ``sha-*`` tags (in listing order) until one answers ``digest``."""
        tried = 0
        for listed in self.tags():
            tag = self._passes(listed) if SHA_TAG_RE.fullmatch(listed) else None
            if tag is None:
                continue
            if tried >= self._max_candidates:
                raise RegistryProtocolError(
                    f"{self.name}: none of the first {tried} sha-* tags points at {track} "
                    f"({digest.short}); label images with org.opencontainers.image.revision")
            tried += 1
            if self._head_or_none(tag) == digest:
                return tag
        raise RegistryProtocolError(f"{self.name}: no sha-* tag points at {track} "
                                    f"({digest.short}) among {tried} candidates; CI may "
                                    "still be pushing")

    # ----------------------------------------------------------------------- HTTP reads
    def _head_or_none(self, tag: str) -> Digest | None:
        with contextlib.suppress(ManifestNotFound):
            return self._head(tag)
        return None

    def _head(self, ref: str) -> Digest:
        reply = self._http.request("HEAD", f"{self._v2}/manifests/{ref}",
                                   headers={"Accept": ACCEPT}, what=f"manifest {ref}")
        self._check_manifest_reply(reply, ref)
        header = reply.headers.get("docker-content-digest")
        if not header:  # rare; the body tells us
            return self._manifest(ref)[2]
        return _digest(header, f"HEAD manifest {ref}")

    def _manifest(self, ref: str) -> tuple[dict[str, Any], str, Digest]:
        """GET a manifest -> (doc, media type, digest). The body must hash to ``ref`` when
        it is a digest, and to the ``Docker-Content-Digest`` header when there is one."""
        reply = self._http.request("GET", f"{self._v2}/manifests/{ref}",
                                   headers={"Accept": ACCEPT}, what=f"manifest {ref}")
        self._check_manifest_reply(reply, ref)
        actual = sha256_digest(reply.body)
        header = reply.headers.get("docker-content-digest", "")
        if ref.startswith("sha256:") and actual != ref:
            raise RegistryProtocolError(f"manifest {ref[:19]}: the body does not match the "
                                        f"requested digest (it hashes to {actual[:19]})")
        if header.startswith("sha256:") and header != actual:
            raise RegistryProtocolError(f"manifest {ref[:19]}: the body does not match "
                                        f"Docker-Content-Digest {header[:19]}")
        doc = reply.json(f"manifest {ref[:19]}")
        if not isinstance(doc, dict):
            raise RegistryProtocolError(f"manifest {ref[:19]} is not a JSON object")
        declared = doc.get("mediaType")
        if declared is not None and declared != reply.content_type:
            raise RegistryProtocolError(f"manifest {ref[:19]} says it is "
                                        f"{printable(declared, 80)} but was served as "
                                        f"{printable(reply.content_type, 80)}")
        return doc, reply.content_type, _digest(actual, f"manifest {ref}")

    def _check_manifest_reply(self, reply: Reply, ref: str) -> None:
        if reply.status == 404:
            sep = "@" if ref.startswith("sha256:") else ":"
            raise ManifestNotFound(f"{self.name}{sep}{ref} does not exist")
        if reply.status != 200:
            raise RegistryProtocolError(f"manifest {ref[:19]}: unexpected HTTP {reply.status}")
        if reply.content_type not in MANIFEST_TYPES:
            raise RegistryProtocolError(f"manifest {ref[:19]}: content type "
                                        f"{printable(reply.content_type, 80)!r} is not an OCI "
                                        "or Docker v2 manifest")

    def _json_blob(self, digest: Digest) -> dict[str, Any]:
        body = self._blob(digest)
        if sha256_digest(body) != digest:
            raise RegistryProtocolError(f"config blob {digest.short}: the body does not match "
                                        "its digest")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise RegistryProtocolError(f"config blob {digest.short}: malformed JSON") from exc
        if not isinstance(doc, dict):
            raise RegistryProtocolError(f"config blob {digest.short} is not a JSON object")
        return doc

    def _blob(self, digest: Digest) -> bytes:
        """GET a blob; a redirect (ghcr.io: 307 to its blob host) is followed, and the
        session sends the registry token to the registry's own origin only."""
        url = f"{self._v2}/blobs/{digest}"
        for _ in range(4):
            reply = self._http.request("GET", url, what=f"config blob {digest.short}")
            if reply.status in _REDIRECTS:
                url = self._redirect_target(reply, digest)
                continue
            if reply.status == 404:
                raise ManifestNotFound(f"{self.name}: config blob {digest.short} does not exist")
            if reply.status != 200:
                raise RegistryProtocolError(f"config blob {digest.short}: HTTP {reply.status}")
            return reply.body
        raise RegistryProtocolError(f"config blob {digest.short}: too many redirects")

    def _redirect_target(self, reply: Reply, digest: Digest) -> str:
        """Where a blob redirect may go: http(s), never from https down to http, never to a
        link-local, metadata, multicast or (unless the registry is there) loopback address."""
        location = reply.headers.get("location", "")
        here = httpx.URL(reply.url)
        try:
            target = here.join(location)
        except httpx.InvalidURL as exc:
            raise RegistryProtocolError(f"config blob {digest.short}: bad redirect") from exc
        if not location or target.scheme not in ("http", "https"):
            raise RegistryProtocolError(f"config blob {digest.short}: redirect without a "
                                        "usable Location")
        refusal = destination_refusal(target.scheme, target.host, from_scheme=here.scheme,
                                      registry_host=httpx.URL(self._v2).host)
        if refusal:
            raise RegistryProtocolError(f"config blob {digest.short}: redirect to "
                                        f"{printable(target.host, 80)} refused: {refusal}")
        return str(target)

    # ----------------------------------------------------------------------- signatures
    def manifest_or_none(self, ref: str) -> tuple[dict[str, Any], str] | None:
        """(doc, media type) of a manifest by tag or digest (a signature's); None if none."""
        with self._http.operation(), contextlib.suppress(ManifestNotFound):
            return self._manifest(ref)[:2]
        return None

    def referrers(self, digest: Digest, artifact_type: str) -> dict[str, Any] | None:
        """The OCI 1.1 referrers index of ``digest``; None when the registry has no such API."""
        with self._http.operation():
            url = httpx.URL(f"{self._v2}/referrers/{digest}",  # `+` goes as %2B
                            params={"artifactType": artifact_type})
            reply = self._http.request("GET", str(url), what=f"referrers {digest.short}")
        ok = reply.status == 200 and reply.content_type == OCI_INDEX
        doc = reply.json(f"referrers {digest.short}") if ok else None
        return doc if isinstance(doc, dict) else None

    def verified_blob(self, digest: Digest) -> bytes:
        """A blob whose body must hash to ``digest`` (a signature payload)."""
        with self._http.operation():
            body = self._blob(digest)
        if sha256_digest(body) != digest:
            raise RegistryProtocolError(f"blob {digest.short}: the body does not match it")
        return body

    # ----------------------------------------------------------------------- tags/list
    def tags(self) -> Iterator[str]:
        """Every tag, page by page (``Link: <...>; rel="next"``), with a page cap, a cap on
        the tags of all pages together, and a check that each page brings new tags (a
        ``Link`` loop otherwise); all under one overall deadline."""
        with self._http.operation():
            yield from self._tags()

    def _tags(self) -> Iterator[str]:
        url = f"{self._v2}/tags/list?n={self._page_size}"
        seen_urls: set[str] = set()
        seen_tags: set[str] = set()
        for _ in range(self._max_pages):
            if url in seen_urls:
                raise RegistryProtocolError(f"{self.name}: tags/list Link loops back to a page "
                                            "already read")
            seen_urls.add(url)
            reply = self._tag_page(url)
            try:
                page = parse_tag_page(reply.json("tags/list"))
            except ValueError as exc:
                raise RegistryProtocolError(f"{self.name}: {printable(exc)}") from exc
            fresh = [t for t in page if t not in seen_tags]
            if page and not fresh:
                raise RegistryProtocolError(f"{self.name}: tags/list Link loops (a page "
                                            "repeated tags already listed)")
            seen_tags.update(fresh)
            if len(seen_tags) > self._max_tags:
                raise RegistryProtocolError(f"{self.name}: tags/list has more than "
                                            f"{self._max_tags} tags")
            yield from fresh
            link = next_link(reply.headers.get("link"))
            if not link:
                return
            url = self._next_url(reply, link)
        raise RegistryProtocolError(f"{self.name}: tags/list has more than {self._max_pages} "
                                    f"pages of {self._page_size}")

    def _tag_page(self, url: str) -> Reply:
        reply = self._http.request("GET", url, what="tags/list")
        if reply.status == 404:
            raise ManifestNotFound(f"{self.name}: repository does not exist")
        if reply.status != 200:
            raise RegistryProtocolError(f"{self.name}: tags/list answered HTTP {reply.status}")
        if reply.content_type != "application/json":
            raise RegistryProtocolError(f"{self.name}: tags/list content type "
                                        f"{printable(reply.content_type, 80)!r} is not "
                                        "application/json")
        return reply

    def _next_url(self, reply: Reply, link: str) -> str:
        try:
            target = httpx.URL(reply.url).join(link)
        except httpx.InvalidURL as exc:
            raise RegistryProtocolError(f"{self.name}: tags/list sent a bad Link") from exc
        here = httpx.URL(self._v2)
        if (target.scheme, target.netloc) != (here.scheme, here.netloc) \
                or target.path != f"{here.path}/tags/list":
            raise RegistryProtocolError(f"{self.name}: tags/list Link leaves the repository")
        return str(target)
