"""The artifact store: every file a run produces, staged in S3-compatible object storage.

Layout (ARCHITECTURE.md)::

    s3://<bucket>/<migration_id>/runs/<dag_id>/<run_id>/<stage>/<entity>/<name>
    s3://<bucket>/<migration_id>/runs/<dag_id>/<run_id>/<stage>/<entity>/_MANIFEST.json
    s3://<bucket>/<migration_id>/state/…
    s3://<bucket>/<migration_id>/reports/<dag_id>/<run_id>/…

A task writes only under its own run and stage, overwrites rather than appends, and writes
its manifest last, after checking that every file it lists is in the bucket whole (its size
and the sha256 it was uploaded with): a manifest never points at a missing or partial file.
Readers trust only committed manifests, and read every part through its sha256. This module
is the only one that talks to boto3; it takes a client so the same code runs against AWS, an
S3-compatible store or the embedded endpoint.

Every object is written with server-side encryption (``Encryption``: SSE-S3 unless the
migration names a KMS key) and tagged with its stage (``aleph2alma-stage=raw`` …), so a
bucket lifecycle rule can expire the raw extracts after go-live (README, "Storage").
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from aleph2alma.errors import PermanentError

MANIFEST_NAME = "_MANIFEST.json"
MANIFEST_SCHEMA_VERSION = 1
_S3_URI = re.compile(r"^s3a?://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>.*)$")
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._:+\-=]+$")
_RUN_KEY = re.compile(r"^[^/]+/runs/[^/]+/[^/]+/(?P<stage>[^/]+)/")
STAGE_TAG = "aleph2alma-stage"
"""The object tag naming the stage of a run's object (``raw``, ``alma`` …): lifecycle rules
filter on it, since a key prefix cannot select ``raw/`` inside every run."""
_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class StorageError(RuntimeError):
    """An artifact is missing, uncommitted or does not match its manifest."""


class IntegrityError(StorageError, PermanentError):
    """A part does not match its manifest, or a commit would list a part that is missing or
    partial: retrying the same task cannot fix it (the part must be written again)."""


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
        raise ValueError(
            f"{what} {value!r} cannot be used in an object key; use letters, digits and . _ : + - ="
        )
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
        parts = [
            _segment(self.migration_id, "migration id"),
            "runs",
            _segment(self.dag_id, "dag id"),
            _segment(self.run_id, "run id"),
            _segment(stage, "stage"),
        ]
        if entity:
            parts.append(_segment(entity, "entity"))
        return "/".join(parts) + "/"

    def report_prefix(self) -> str:
        return f"{self.migration_id}/reports/{self.dag_id}/{self.run_id}/"


@dataclass(frozen=True)
class Encryption:
    """Server-side encryption of every object the store writes.

    SSE-S3 (``AES256``, keys managed by S3) unless ``kms_key_id`` names a KMS key, then
    SSE-KMS with that key (``aws:kms``). These are PutObject's ``x-amz-server-side-encryption``
    and ``x-amz-server-side-encryption-aws-kms-key-id`` headers, which boto3 takes as
    ``ServerSideEncryption`` and ``SSEKMSKeyId`` on ``put_object`` and in ``upload_file``'s
    ``ExtraArgs`` (sent with CreateMultipartUpload for a multipart upload); see
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html and
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/specifying-kms-encryption.html.
    """

    kms_key_id: str = ""

    @property
    def mode(self) -> str:
        return "SSE-KMS" if self.kms_key_id else "SSE-S3"

    def args(self) -> dict[str, str]:
        """The encryption arguments of a PutObject / CreateMultipartUpload / CopyObject."""
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}


def stage_of(key: str) -> str:
    """The stage of a run's object key (``<migration>/runs/<dag>/<run>/<stage>/…``); '' otherwise."""
    match = _RUN_KEY.match(key)
    return match["stage"] if match else ""


def part_name(source: str, index: int, ext: str) -> str:
    """Deterministic part file name: a retry writes the same key."""
    return f"{source.lower()}-part-{index:05d}.{ext}"


class ArtifactStore:
    """Reads and writes run artifacts in one bucket through a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str, encryption: Encryption | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.encryption = encryption or Encryption()

    def write_args(self, key: str, sha256: str) -> dict[str, Any]:
        """What every write sends besides the body: the sha256 as metadata, the encryption,
        and the stage tag of a run's object."""
        args: dict[str, Any] = {"Metadata": {"sha256": sha256}, **self.encryption.args()}
        if stage := stage_of(key):
            args["Tagging"] = f"{STAGE_TAG}={stage}"
        return args

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_file(
        self,
        key: str,
        path: str | Path,
        *,
        records: int = 0,
        rejected: int = 0,
        source: str = "",
        kind: str = "part",
    ) -> StoredFile:
        path = Path(path)
        digest = sha256_file(path)
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=self.write_args(key, digest))
        return StoredFile(key, path.stat().st_size, digest, records, rejected, source, kind)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        records: int = 0,
        source: str = "",
        kind: str = "report",
    ) -> StoredFile:
        digest = hashlib.sha256(data).hexdigest()
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **self.write_args(key, digest)
        )
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
            raise IntegrityError(f"{self.uri(key)} does not match the sha256 in its manifest")
        return dest

    def iter_lines(self, key: str, expected_sha256: str | None = None) -> Iterator[bytes]:
        """Stream an object line by line without loading it whole; with ``expected_sha256`` the
        stream ends in ``StorageError`` when the bytes read do not match it."""
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        digest = hashlib.sha256()
        for line in body.iter_lines(keepends=True):
            digest.update(line)
            yield line
        if expected_sha256 and digest.hexdigest() != expected_sha256:
            raise IntegrityError(f"{self.uri(key)} does not match the sha256 in its manifest")

    # --- reading committed stages: the one part reader -------------------------------

    def stage_manifest(self, scope: RunScope, stage: str, entity: str) -> Manifest:
        """The committed manifest of ``entity`` in ``stage`` of the run ``scope``."""
        return self.manifest(scope.prefix(stage, entity) + MANIFEST_NAME)

    def stage_committed(self, scope: RunScope, stage: str, entity: str) -> bool:
        return self.exists(scope.prefix(stage, entity) + MANIFEST_NAME)

    def local_copies(self, files: Iterable[StoredFile], tmp: Path) -> list[Path]:
        """Download ``files`` into ``tmp`` (distinct names), each checked against its sha256."""
        tmp.mkdir(parents=True, exist_ok=True)
        return [
            self.download(f.key, tmp / f"{i:05d}-{Path(f.key).name}", f.sha256) for i, f in enumerate(files)
        ]

    def read_table(
        self,
        files: Iterable[StoredFile],
        tmp: Path,
        *,
        schema: Any = None,
        columns: list[str] | None = None,
        read_dictionary: list[str] | None = None,
        filters: Any = None,
    ) -> Any:
        """Parquet ``files`` as one ``pyarrow.Table``: only ``columns`` when given, the
        ``read_dictionary`` columns dictionary-encoded, rows passing ``filters``; cast to
        ``schema`` (which also types the empty table when there are no files)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [
            pq.read_table(p, columns=columns, read_dictionary=read_dictionary, filters=filters)
            for p in self.local_copies(files, tmp)
        ]
        if schema is None:
            return pa.concat_tables(tables) if tables else pa.table({})
        return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()

    def iter_jsonl(self, files: Iterable[StoredFile]) -> Iterator[dict[str, Any]]:
        """The JSON-lines records of ``files``, each file checked against its sha256 *before*
        its first record is yielded (a consumer that acts on records, such as the API load,
        never acts on a tampered or partial part); one file on local disk at a time."""
        for f in files:
            with tempfile.TemporaryDirectory(prefix="aleph2alma-jsonl-") as tmp:
                local = self.download(f.key, Path(tmp) / "part.jsonl", f.sha256)
                with open(local, "rb") as fh:
                    for line in fh:
                        if line.strip():
                            yield json.loads(line)

    def head(self, key: str, *, checksum: bool = False) -> dict[str, Any] | None:
        """The object's HEAD response (with ``checksum``, its S3 checksum too: ``ChecksumSHA256``
        when it was written with one); None when it is not there (any other error is raised: an S3
        fault is worth retrying)."""
        extra = {"ChecksumMode": "ENABLED"} if checksum else {}
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key, **extra)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES:
                return None
            raise
        return head

    def check_whole(self, files: Iterable[StoredFile], what: str) -> None:
        """``IntegrityError`` naming every file of ``files`` that is missing from the bucket, or
        whose size or uploaded sha256 differs from what the writer recorded."""
        problems = []
        for f in files:
            head = self.head(f.key)
            if head is None:
                problems.append(f"{f.key} is missing")
                continue
            size, digest = int(head.get("ContentLength", -1)), head.get("Metadata", {}).get("sha256")
            if size != f.bytes:
                problems.append(f"{f.key} has {size} bytes, expected {f.bytes}")
            elif digest != f.sha256:
                problems.append(f"{f.key} carries sha256 {digest}, expected {f.sha256}")
        if problems:
            raise IntegrityError(f"{what}: refusing to commit: " + "; ".join(problems))

    def exists(self, key: str) -> bool:
        """Whether ``key`` is in the bucket (a missing key is not an error)."""
        return key in self.list_keys(key)

    def list_keys(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def commit(
        self,
        scope: RunScope,
        stage: str,
        entity: str,
        files: Iterable[StoredFile],
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Write the entity's manifest last; returns its URI. Same inputs, same manifest.

        Every file must be in the bucket whole first (``check_whole``): a part task that died
        or wrote a short object makes the commit fail, never a manifest pointing at it.
        """
        files = list(files)
        key = scope.prefix(stage, entity) + MANIFEST_NAME
        self.check_whole(files, f"{stage}/{entity}")
        manifest = Manifest(scope.migration_id, scope.dag_id, scope.run_id, stage, entity, files, extra or {})
        self.put_bytes(
            key, manifest.to_json().encode("utf-8"), content_type="application/json", kind="manifest"
        )
        return self.uri(key)

    def manifest(self, uri_or_key: str) -> Manifest:
        """Read a committed manifest; an uncommitted stage is an error, never an empty result."""
        key = parse_s3_uri(uri_or_key)[1] if uri_or_key.startswith("s3") else uri_or_key
        try:
            return Manifest.from_json(self.get_bytes(key).decode("utf-8"))
        except StorageError as exc:
            raise StorageError(
                f"no committed manifest at {self.uri(key)}: the stage has not finished"
            ) from exc
