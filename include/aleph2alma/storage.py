"""The artifact store: every file a run produces, staged in S3-compatible object storage.

Layout (ARCHITECTURE.md)::

    s3://<bucket>/<migration_id>/runs/<dag_id>/<run_id>/<stage>/<entity>/<name>
    s3://<bucket>/<migration_id>/runs/<dag_id>/<run_id>/<stage>/<entity>/_MANIFEST.json
    s3://<bucket>/<migration_id>/state/…
    s3://<bucket>/<migration_id>/reports/<dag_id>/<run_id>/…

A task writes only under its own run and stage, overwrites rather than appends, and writes
its manifest last. Readers trust only committed manifests. This module is the only one that
talks to boto3; it takes a client so the same code runs against AWS, an S3-compatible store
or the embedded endpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_SCHEMA_VERSION = 1
_S3_URI = re.compile(r"^s3a?://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>.*)$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._:+\-=]+$")


class StorageError(RuntimeError):
    """An artifact is missing, uncommitted or does not match its manifest."""


class S3UriError(ValueError):
    """A string is not an ``s3://bucket/key`` URI."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key."""
    match = _S3_URI.match(uri)
    if not match:
        raise S3UriError(f"not an S3 URI: {uri!r}; expected s3://<bucket>/<key> with a valid bucket name")
    return match["bucket"], match["key"]


def _segment(value: str, what: str) -> str:
    if not value or not _SAFE_SEGMENT.match(value):
        raise ValueError(f"{what} {value!r} cannot be used in an object key; use letters, digits and . _ : + - =")
    return value


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """One object written to the store, as listed in a manifest."""

    key: str
    bytes: int
    sha256: str
    records: int = 0
    rejected: int = 0
    source: str = ""
    kind: str = "part"  # part | rejects | report

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    """What a stage committed for one entity: its files with counts and checksums."""

    migration_id: str
    dag_id: str
    run_id: str
    stage: str
    entity: str
    files: list[StoredFile]
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA_VERSION

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files if f.kind == "part")

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files if f.kind == "part")

    def to_json(self) -> str:
        body = {
            "schema_version": self.schema_version,
            "migration_id": self.migration_id,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "stage": self.stage,
            "entity": self.entity,
            "records": self.records,
            "rejected": self.rejected,
            "files": [f.to_dict() for f in sorted(self.files, key=lambda f: f.key)],
            "extra": self.extra,
        }
        return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            migration_id=data["migration_id"],
            dag_id=data["dag_id"],
            run_id=data["run_id"],
            stage=data["stage"],
            entity=data["entity"],
            files=[StoredFile(**f) for f in data["files"]],
            extra=data.get("extra", {}),
            schema_version=data["schema_version"],
        )

    def parts(self, source: str | None = None) -> list[StoredFile]:
        return [f for f in self.files if f.kind == "part" and (source is None or f.source == source)]


@dataclass(frozen=True)
class RunScope:
    """The run whose artifacts a task reads and writes."""

    migration_id: str
    dag_id: str
    run_id: str

    def prefix(self, stage: str, entity: str | None = None) -> str:
        parts = [_segment(self.migration_id, "migration id"), "runs", _segment(self.dag_id, "dag id"),
                 _segment(self.run_id, "run id"), _segment(stage, "stage")]
        if entity:
            parts.append(_segment(entity, "entity"))
        return "/".join(parts) + "/"

    def report_prefix(self) -> str:
        return f"{self.migration_id}/reports/{self.dag_id}/{self.run_id}/"


def part_name(source: str, index: int, ext: str) -> str:
    """Deterministic part file name: a retry writes the same key."""
    return f"{source.lower()}-part-{index:05d}.{ext}"


class ArtifactStore:
    """Reads and writes run artifacts in one bucket through a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_file(self, key: str, path: str | Path, *, records: int = 0, rejected: int = 0,
                 source: str = "", kind: str = "part") -> StoredFile:
        path = Path(path)
        digest = sha256_file(path)
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
        return StoredFile(key, path.stat().st_size, digest, records, rejected, source, kind)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
                  records: int = 0, source: str = "", kind: str = "report") -> StoredFile:
        digest = hashlib.sha256(data).hexdigest()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                               Metadata={"sha256": digest})
        return StoredFile(key, len(data), digest, records, 0, source, kind)

    def get_bytes(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise StorageError(f"cannot read {self.uri(key)}: {exc.response['Error'].get('Code')}") from exc
        return body

    def download(self, key: str, dest: str | Path, expected_sha256: str | None = None) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, key, str(dest))
        if expected_sha256 and sha256_file(dest) != expected_sha256:
            raise StorageError(f"{self.uri(key)} does not match the sha256 in its manifest")
        return dest

    def iter_lines(self, key: str) -> Iterator[bytes]:
        """Stream an object line by line without loading it whole."""
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        yield from body.iter_lines(keepends=True)

    def exists(self, key: str) -> bool:
        """Whether ``key`` is in the bucket (a missing key is not an error)."""
        return key in self.list_keys(key)

    def list_keys(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [obj["Key"] for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
                for obj in page.get("Contents", [])]

    def commit(self, scope: RunScope, stage: str, entity: str, files: Iterable[StoredFile],
               extra: dict[str, Any] | None = None) -> str:
        """Write the entity's manifest last; returns its URI. Same inputs, same manifest."""
        manifest = Manifest(scope.migration_id, scope.dag_id, scope.run_id, stage, entity, list(files), extra or {})
        key = scope.prefix(stage, entity) + MANIFEST_NAME
        self.put_bytes(key, manifest.to_json().encode("utf-8"), content_type="application/json", kind="manifest")
        return self.uri(key)

    def manifest(self, uri_or_key: str) -> Manifest:
        """Read a committed manifest; an uncommitted stage is an error, never an empty result."""
        key = parse_s3_uri(uri_or_key)[1] if uri_or_key.startswith("s3") else uri_or_key
        try:
            return Manifest.from_json(self.get_bytes(key).decode("utf-8"))
        except StorageError as exc:
            raise StorageError(f"no committed manifest at {self.uri(key)}: the stage has not finished") from exc
