"""Source URIs: one normal form for every spelling, and the per-tenant prefix rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from miosa_operator.settings import Settings, SettingsError
from miosa_operator.store.sources import SourceNotAllowed, SourcePolicy, normalise

POLICY = SourcePolicy("s3://miosa-uploads", (), "s3://miosa-releases")


@pytest.mark.parametrize(
    ("spelling", "normal"),
    [
        ("s3://miosa-uploads/ns-a/site.tar.gz", "s3://miosa-uploads/ns-a/site.tar.gz"),
        ("S3://miosa-uploads/ns-a/site.tar.gz", "s3://miosa-uploads/ns-a/site.tar.gz"),
        ("s3://miosa-uploads//ns-a///site.tar.gz", "s3://miosa-uploads/ns-a/site.tar.gz"),
        ("s3://miosa-uploads/./ns-a/./site.tar.gz", "s3://miosa-uploads/ns-a/site.tar.gz"),
        ("s3://miosa-uploads/ns-a/sub/../site.tar.gz", "s3://miosa-uploads/ns-a/site.tar.gz"),
        ("s3://miosa-uploads/%6Es-a/site%2Etar.gz", "s3://miosa-uploads/ns-a/site.tar.gz"),
        ("s3://miosa-uploads/ns-a%2Fsite.tar.gz", "s3://miosa-uploads/ns-a/site.tar.gz"),
        ("s3://miosa-uploads/ns-a/caf%C3%A9.tar", "s3://miosa-uploads/ns-a/café.tar"),
        ("s3://miosa-uploads/ns-a/report%25202024.tar", "s3://miosa-uploads/ns-a/report%202024.tar"),
        ("file:///srv/uploads/ns-a/site.tar", "file:///srv/uploads/ns-a/site.tar"),
        ("FILE:///srv/uploads/ns-a/site.tar", "file:///srv/uploads/ns-a/site.tar"),
        ("file:////srv/uploads/ns-a/site.tar", "file:///srv/uploads/ns-a/site.tar"),
        ("file://localhost/srv/uploads/ns-a/site.tar", "file:///srv/uploads/ns-a/site.tar"),
        ("file:///srv/./uploads//ns-a/x/../site.tar", "file:///srv/uploads/ns-a/site.tar"),
        ("file:///srv/uploads/ns-a/%2e%2e/ns-a/site.tar", "file:///srv/uploads/ns-a/site.tar"),
    ],
)
def test_every_spelling_has_one_normal_form(spelling: str, normal: str) -> None:
    assert normalise(spelling).uri == normal


@pytest.mark.parametrize(
    "uri",
    [
        "http://miosa-uploads/ns-a/x",
        "miosa-uploads/ns-a/x",
        "s3:///ns-a/x",
        "s3://Miosa-Uploads/ns-a/x",
        "s3://miosa-uploads/ns-a/",
        "s3://miosa-uploads",
        "s3://miosa-uploads/../other-bucket/x",
        "file:///../etc/passwd",
        "file://host/etc/passwd",
        "s3://miosa-uploads/ns-a/%zz",
        "s3://miosa-uploads/ns-a/%ff%fe",
        "s3://miosa-uploads/ns-a/a%00b",
        "s3://miosa-uploads/ns-a/a%0Ab",
        "s3://miosa-uploads/ns-a/a\x1bb",
    ],
)
def test_what_has_no_normal_form_is_refused(uri: str) -> None:
    with pytest.raises(SourceNotAllowed):
        normalise(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://miosa-uploads/ns-a/site.tar.gz",
        "s3://miosa-uploads/ns-a/deep/er/site.tar.gz",
        "S3://miosa-uploads//ns-a/./site.tar.gz",
        "s3://miosa-uploads/ns-b/../ns-a/site.tar.gz",
    ],
)
def test_a_tenant_may_name_its_own_uploads(uri: str) -> None:
    assert POLICY.check(uri, "ns-a").startswith("s3://miosa-uploads/ns-a/")


@pytest.mark.parametrize(
    "uri",
    [
        "s3://miosa-uploads/ns-b/site.tar.gz",
        "s3://miosa-uploads/ns-ab/site.tar.gz",
        "s3://miosa-uploads/ns-a/../ns-b/site.tar.gz",
        "s3://miosa-uploads/ns-a/%2E%2E/ns-b/site.tar.gz",
        "s3://miosa-uploads/ns-a%2F..%2Fns-b/site.tar.gz",
        "s3://miosa-uploads/site.tar.gz",
        "s3://other-bucket/ns-a/site.tar.gz",
        "s3://miosa-releases/ns-a/dep/ver/dist.tar.zst",
        "file:///etc/passwd",
    ],
)
def test_everything_else_is_refused(uri: str) -> None:
    with pytest.raises(SourceNotAllowed, match="outside this namespace's allowed sources"):
        POLICY.check(uri, "ns-a")


def test_refusals_name_the_default_prefix_and_nothing_about_the_object() -> None:
    with pytest.raises(SourceNotAllowed) as caught:
        POLICY.check("s3://miosa-uploads/ns-b/site.tar.gz", "ns-a")
    assert "s3://miosa-uploads/ns-a/" in str(caught.value)


def test_extra_prefixes_widen_but_never_to_the_releases() -> None:
    policy = SourcePolicy(
        "s3://miosa-uploads", ("s3://shared-assets/{namespace}/", "s3://public-bundles/", "s3://"), "s3://miosa-uploads/releases"
    )
    assert policy.check("s3://shared-assets/ns-a/x.tar", "ns-a")
    assert policy.check("s3://public-bundles/any/x.tar", "ns-a")
    assert policy.check("s3://anything/x.tar", "ns-a")  # "s3://" alone: every bucket
    with pytest.raises(SourceNotAllowed):
        policy.check("s3://miosa-uploads/releases/ns-a/dep/ver/dist.tar.zst", "ns-a")


def test_file_sources_are_compared_after_resolving_links(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    (uploads / "ns-b").mkdir(parents=True)
    (uploads / "ns-b" / "site.tar").write_bytes(b"theirs")
    (uploads / "ns-a").mkdir()
    (uploads / "ns-a" / "link.tar").symlink_to(uploads / "ns-b" / "site.tar")
    (uploads / "ns-a" / "dirlink").symlink_to(uploads / "ns-b")
    policy = SourcePolicy(f"file://{uploads}", (), f"file://{tmp_path}/releases")
    for uri in (f"file://{uploads}/ns-a/link.tar", f"file://{uploads}/ns-a/dirlink/site.tar"):
        with pytest.raises(SourceNotAllowed):
            policy.check(uri, "ns-a")
    (uploads / "ns-a" / "own.tar").write_bytes(b"mine")
    assert policy.check(f"file://{uploads}/ns-a/own.tar", "ns-a") == f"file://{uploads}/ns-a/own.tar"


def test_settings_default_uploads_follow_the_store() -> None:
    assert Settings.defaults(s3_endpoint="http://127.0.0.1:9000").uploads == "s3://miosa-uploads"
    assert Settings.defaults().uploads.startswith("file://") and Settings.defaults().uploads.endswith("/miosa-operator/uploads")
    assert Settings.defaults(uploads_uri="s3://tenant-drops/").uploads == "s3://tenant-drops"
    config = Settings.from_env({"MIOSA_UPLOADS_URI": "s3://drops", "MIOSA_SOURCE_PREFIXES": "s3://shared/{namespace}/"})
    assert config.source_allowed("s3://shared/ns-a/x", "ns-a") and not config.source_allowed("s3://shared/ns-b/x", "ns-a")


def test_an_invalid_prefix_is_a_startup_error() -> None:
    with pytest.raises(SettingsError, match="MIOSA_SOURCE_PREFIXES"):
        Settings.from_env({"MIOSA_SOURCE_PREFIXES": "https://example.com/"})
