"""Artifact store: URIs, manifests, idempotent retries against a real S3 endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from aleph2alma.storage import (
    ArtifactStore,
    Manifest,
    RunScope,
    S3UriError,
    StorageError,
    parse_s3_uri,
    part_name,
)

SCOPE = RunScope("demo", "migration_extract", "manual__2026-11-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket-1/a/b.parquet", ("bucket-1", "a/b.parquet")),
        ("s3://my.bucket/", ("my.bucket", "")),
        ("s3a://bucket/x", ("bucket", "x")),
    ],
    ids=["key", "empty-key", "s3a"],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    ["http://bucket/key", "s3://", "bucket/key", "s3://B/key"],
    ids=["http", "no-bucket", "no-scheme", "uppercase-bucket"],
)
def test_parse_s3_uri_rejects_with_the_bad_input_in_the_message(uri: str) -> None:
    with pytest.raises(S3UriError, match="not an S3 URI"):
        parse_s3_uri(uri)


def test_run_prefix_layout() -> None:
    assert SCOPE.prefix("raw", "items") == (
        "demo/runs/migration_extract/manual__2026-11-01T00:00:00+00:00/raw/items/"
    )
    assert part_name("Z30", 3, "parquet") == "z30-part-00003.parquet"


def test_run_prefix_refuses_unsafe_segments() -> None:
    with pytest.raises(ValueError, match="entity '../x'"):
        RunScope("demo", "d", "r").prefix("raw", "../x")


def _write_part(store: ArtifactStore, tmp: Path, content: bytes) -> list:
    local = tmp / "part.seq"
    local.write_bytes(content)
    key = SCOPE.prefix("raw", "bibs") + part_name("BNU01", 0, "seq")
    return [store.put_file(key, local, records=2, source="BNU01")]


def test_retry_writes_same_keys_and_identical_manifest(store: ArtifactStore, tmp_path: Path) -> None:
    content = b"000000001 FMT   L BK\n000000002 FMT   L BK\n"
    first = store.commit(SCOPE, "raw", "bibs", _write_part(store, tmp_path, content))
    keys_before = store.list_keys(SCOPE.prefix("raw"))
    manifest_before = store.get_bytes(parse_s3_uri(first)[1])

    second = store.commit(SCOPE, "raw", "bibs", _write_part(store, tmp_path, content))

    assert second == first
    assert store.list_keys(SCOPE.prefix("raw")) == keys_before
    assert store.get_bytes(parse_s3_uri(second)[1]) == manifest_before


def test_manifest_counts_and_checksums(store: ArtifactStore, tmp_path: Path) -> None:
    files = _write_part(store, tmp_path, b"abc\n")
    manifest = store.manifest(store.commit(SCOPE, "raw", "bibs", files))
    assert manifest.records == 2
    assert manifest.files[0].sha256 == "edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb"
    downloaded = store.download(manifest.files[0].key, tmp_path / "back", manifest.files[0].sha256)
    assert downloaded.read_bytes() == b"abc\n"


def test_download_detects_a_changed_object(store: ArtifactStore, tmp_path: Path) -> None:
    files = _write_part(store, tmp_path, b"abc\n")
    store.put_bytes(files[0].key, b"tampered\n")
    with pytest.raises(StorageError, match="does not match the sha256"):
        store.download(files[0].key, tmp_path / "back", files[0].sha256)


def test_uncommitted_stage_is_an_error_not_an_empty_result(store: ArtifactStore) -> None:
    with pytest.raises(StorageError, match="has not finished"):
        store.manifest(SCOPE.prefix("raw", "items") + "_MANIFEST.json")


def test_manifest_json_round_trip() -> None:
    manifest = Manifest("demo", "d", "r", "raw", "items", [], {"k": 1})
    assert Manifest.from_json(manifest.to_json()).to_json() == manifest.to_json()
