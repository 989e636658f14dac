"""Pure registry rules: challenges, Link headers, platform selection, labels, retry hints."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from twilight_agent.core import registry_rules as rr

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.timezone.utc)
AMD = "sha256:" + "a" * 64
ARM = "sha256:" + "b" * 64
ATT = "sha256:" + "c" * 64


def test_challenge_with_quoted_commas_in_scope() -> None:
    c = rr.parse_challenge('Bearer realm="https://ghcr.io/token",service="ghcr.io",'
                           'scope="repository:user/image:pull,push"')
    assert c.scheme == "bearer"
    assert c.realm == "https://ghcr.io/token"
    assert c.service == "ghcr.io"
    assert c.params["scope"] == "repository:user/image:pull,push"


def _jwt(claims: object) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.sig"


def test_jwt_expiry_is_read_without_verification() -> None:
    assert rr.jwt_expiry(_jwt({"exp": 1_800_000_000, "sub": ""})) == 1_800_000_000.0
    assert rr.jwt_expiry(_jwt({"sub": "x"})) is None
    assert rr.jwt_expiry(_jwt(["exp"])) is None
    assert rr.jwt_expiry("djE6b3duZXIvYXBwOjE3MDA=") is None  # ghcr: opaque
    assert rr.jwt_expiry("a.!!!.c") is None


def test_scope_comes_from_the_repository() -> None:
    assert rr.pull_scope("lacatfly/twilight-drive") == "repository:lacatfly/twilight-drive:pull"


@pytest.mark.parametrize(("header", "expected"), [
    ('</v2/a/b/tags/list?last=x&n=100>; rel="next"', "/v2/a/b/tags/list?last=x&n=100"),
    ("<https://r.example/v2/a/tags/list?last=y>; rel=next", "https://r.example/v2/a/tags/list?last=y"),
    ('</v2/a/tags/list?last=p>; rel="prev", </v2/a/tags/list?last=n>; rel="next"',
     "/v2/a/tags/list?last=n"),
    ('</v2/a/tags/list?last=p>; rel="prev"', None),
    ("", None),
    (None, None),
])
def test_next_link(header: str | None, expected: str | None) -> None:
    assert rr.next_link(header) == expected


def test_tag_page_shapes() -> None:
    assert rr.parse_tag_page({"name": "x", "tags": ["a", "b"]}) == ["a", "b"]
    assert rr.parse_tag_page({"name": "x", "tags": None}) == []
    for bad in ([], {"tags": "main"}, {"tags": [1, 2]}):
        with pytest.raises(ValueError):
            rr.parse_tag_page(bad)


def _index(*entries: dict) -> dict:
    return {"schemaVersion": 2, "mediaType": rr.OCI_INDEX, "manifests": list(entries)}


def _entry(digest: str, os_: str, arch: str, variant: str | None = None, **extra: object) -> dict:
    platform = {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"mediaType": rr.OCI_MANIFEST, "digest": digest, "size": 1, "platform": platform,
            **extra}


def test_platform_selection_skips_attestations() -> None:
    att = _entry(ATT, "unknown", "unknown", annotations={
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": AMD})
    index = _index(att, _entry(ARM, "linux", "arm64", "v8"), _entry(AMD, "linux", "amd64"))
    assert rr.select_platform(index, rr.Platform("linux", "amd64"))["digest"] == AMD
    assert rr.select_platform(index, rr.Platform.of("linux/arm64/v8"))["digest"] == ARM
    # asked without a variant, an entry with one still matches
    assert rr.select_platform(index, rr.Platform.of(("linux", "arm64")))["digest"] == ARM


def test_platform_selection_prefers_the_exact_variant() -> None:
    index = _index(_entry(AMD, "linux", "arm", "v6"), _entry(ARM, "linux", "arm", "v7"))
    assert rr.select_platform(index, rr.Platform("linux", "arm", "v7"))["digest"] == ARM


def test_platform_missing_names_what_the_index_has() -> None:
    index = _index(_entry(ARM, "linux", "arm64", "v8"),
                   _entry(ATT, "unknown", "unknown"))
    with pytest.raises(LookupError, match=r"no linux/amd64 image .*linux/arm64/v8"):
        rr.select_platform(index, rr.Platform())
    with pytest.raises(ValueError):
        rr.select_platform({"manifests": "nope"}, rr.Platform())


def test_platform_parsing() -> None:
    assert str(rr.Platform.of("linux/arm64/v8")) == "linux/arm64/v8"
    with pytest.raises(ValueError):
        rr.Platform.of("linux")


def test_labels_of_a_config() -> None:
    rev = "0123456789abcdef0123456789abcdef01234567"
    config = {"created": "2026-01-01T00:00:00Z", "config": {"Labels": {
        rr.REVISION_LABEL: rev, rr.CREATED_LABEL: "2026-11-22T03:00:00Z"}}}
    assert rr.labels_of(config) == (rev, "2026-11-22T03:00:00Z")
    assert rr.labels_of({"created": "2026-01-01T00:00:00Z", "config": {}}) == (
        None, "2026-01-01T00:00:00Z")
    hostile = {"config": {"Labels": {rr.REVISION_LABEL: "$(rm -rf /)"}}}
    assert rr.labels_of(hostile) == (None, None)


def test_descriptor_digest() -> None:
    assert rr.descriptor_digest({"digest": AMD}, "x") == AMD
    for bad in (None, {}, {"digest": "sha256:xyz"}, {"digest": 5}):
        with pytest.raises(ValueError, match="x has no valid"):
            rr.descriptor_digest(bad, "x")


@pytest.mark.parametrize(("text", "seconds"), [
    ("1.5s", 1.5), ("711.6µs", 0.0007116), ("2m30s", 150.0), ("1h", 3600.0),
    ("250ms", 0.25), ("3", None), ("soon", None), ("", None), ("1s junk", None),
])
def test_go_durations(text: str, seconds: float | None) -> None:
    got = rr.parse_go_duration(text)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_retry_after_header_seconds_and_date() -> None:
    assert rr.retry_after_header("7", NOW) == 7.0
    assert rr.retry_after_header("Sun, 22 Nov 2026 12:00:30 GMT", NOW) == 30.0
    assert rr.retry_after_header("Sun, 22 Nov 2026 11:00:00 GMT", NOW) == 0.0
    assert rr.retry_after_header("whenever", NOW) is None
    assert rr.retry_after_header(None, NOW) is None


def test_retry_after_from_a_ghcr_body() -> None:
    body = ('{"errors":[{"code":"TOOMANYREQUESTS","message":"retry-after: 1.25s, '
            'allowed: 44000/minute"}]}')
    assert rr.retry_after_body(body) == pytest.approx(1.25)
    assert rr.retry_after_body('{"errors":[{"code":"DENIED"}]}') is None
    # the header wins over the body
    assert rr.retry_hint("3", body, NOW) == 3.0
    assert rr.retry_hint(None, body, NOW) == pytest.approx(1.25)


def test_backoff_grows_jitters_and_caps() -> None:
    assert rr.backoff_delay(0, 0.5, 30, 0.0) == 0.25
    assert rr.backoff_delay(0, 0.5, 30, 0.999) < 0.5
    assert rr.backoff_delay(3, 0.5, 30, 0.0) == 2.0
    assert rr.backoff_delay(50, 0.5, 30, 0.999) <= 30
    assert rr.backoff_delay(50, 0.5, 30, 0.0) == 15


def test_retryable_statuses() -> None:
    assert all(rr.is_retryable_status(s) for s in (429, 500, 502, 503, 504))
    assert not any(rr.is_retryable_status(s) for s in (200, 401, 403, 404, 501))


def test_media_type_strips_parameters() -> None:
    assert rr.media_type("application/json; charset=utf-8") == "application/json"
    assert rr.media_type(None) == ""
