"""The archive of the final Aleph snapshot and of every delivered package, kept after go-live.

What is archived: every file a *committed* manifest of the extract run lists (all its stages),
every file of the delivery packages of the given runs (their ``package/`` and ``autoextract/``
stages), and those manifests themselves. A file no manifest lists (a killed try's leftover) is
not archived. Each goes to ``<migration id>/archive/<label>/<its key below the migration id>``
in the artifact bucket, copied server-side (CopyObject; a managed multipart copy above 5 GiB,
CopyObject's limit), with:

- the storage class ``ArchiveSettings.storage_class``. Only classes whose objects can be read at
  once are allowed: every copy is verified by its checksum, and a copy in GLACIER (flexible
  retrieval) or DEEP_ARCHIVE could only be read after a restore. To go colder, let a lifecycle
  transition move ``archive/`` later;
- server-side encryption as every artifact (``storage.Encryption``);
- the tags ``aleph2alma-stage=archive`` (replacing the source's ``raw``/``package`` tag, so the
  README's lifecycle rule that expires ``raw`` after go-live never matches an archived copy)
  and ``retain-until=<yyyy-mm-dd>`` (the run's as-of date + ``retention_days``);
- when the bucket has Object Lock enabled (``GetObjectLockConfiguration``), an Object Lock
  retention (``object_lock_mode``, retain-until that date) set once the copy is verified.
  Without Object Lock the tag is only a label: S3 deletes nothing by itself and protects
  nothing either, so the bucket owner must make a lifecycle rule (or policy) honour it, e.g. a
  rule on ``<migration id>/archive/`` that expires objects only after the date, and deny
  ``s3:DeleteObject`` on the prefix (README, "Artifact storage").

Verification: each copy's sha256 must equal the sha256 its manifest recorded (a manifest's own
sha256 is taken when it is read). CopyObject is asked for a SHA-256 checksum
(``ChecksumAlgorithm``), which S3 computes over the copied bytes and returns; where the store
returns none (or after a multipart copy, whose checksum is per part), the copy is read back and
hashed. A source that was changed after its commit (other size, other bytes) is refused with
``ArchiveIntegrityError`` naming it, and its bad copy removed: nothing that does not match its
manifest stays in the archive. Retention is set only after verification.

Idempotent: an object already at its archive key with the expected sha256 is not copied again
(its retention is checked and completed); one with another sha256 is never overwritten
(``ArchiveConflict``: choose another label). The archive manifest (JSON, one entry per object:
source key, archive key, bytes, sha256, storage class, retain-until) is written last.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from aleph2alma.errors import PermanentError
from aleph2alma.phases.context import PhaseContext
from aleph2alma.postlive.settings import ArchiveSettings
from aleph2alma.refs import Ref
from aleph2alma.runs import RunRef
from aleph2alma.storage import MANIFEST_NAME, STAGE_TAG, ArtifactStore, IntegrityError, Manifest, RunScope

ARCHIVE_MANIFEST = "_ARCHIVE_MANIFEST.json"
ARCHIVE_SCHEMA_VERSION = 1
ARCHIVE_STAGE = "archive"
RETAIN_TAG = "retain-until"
DELIVERY_STAGES = ("package", "autoextract")
"""The stages of a run that hold what was delivered: our package, or what AutoExtract produced."""
SINGLE_COPY_LIMIT = 5 * 1024**3
"""CopyObject copies up to 5 GiB in one request; larger objects need a multipart copy."""
_NO_LOCK_CODES = {"ObjectLockConfigurationNotFoundError", "NotImplemented"}
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


class ArchiveError(PermanentError):
    """What was asked cannot be archived: a bad label, a run with nothing committed."""


class ArchiveConflict(ArchiveError):
    """The archive key already holds a different object: an archive is never overwritten."""


class ArchiveIntegrityError(IntegrityError):
    """A source does not match the sha256 or size its manifest recorded: it was changed after it
    was committed, and is not archived."""


@dataclass(frozen=True)
class Source:
    key: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ArchivedObject:
    """One entry of the archive manifest."""

    source_key: str
    archive_key: str
    bytes: int
    sha256: str
    storage_class: str
    retain_until: str
    verified_by: str  # "checksum" (S3's SHA-256 of the copy) or "read" (read back and hashed)


class ArchiveResult(Ref):
    """What the archive holds now, and what this run copied."""

    label: str
    manifest: str
    objects: int
    bytes: int
    copied: int
    already_archived: int
    storage_class: str
    retain_until: date
    retention: str
    """``object-lock GOVERNANCE`` / ``object-lock COMPLIANCE``, or ``tag`` (a lifecycle rule must
    honour it)."""


def archive_prefix(migration_id: str, label: str) -> str:
    if not _LABEL.match(label):
        raise ArchiveError(
            f"archive label {label!r} cannot be used in an object key; use letters, digits and . _ - "
            "(starting with a letter or digit), e.g. final-2026-08"
        )
    return f"{migration_id}/archive/{label}/"


def archive_key(migration_id: str, label: str, source_key: str) -> str:
    """``<migration>/archive/<label>/`` + the source key below ``<migration>/``."""
    mine = f"{migration_id}/"
    if not source_key.startswith(mine):
        raise ArchiveError(f"{source_key!r} is not an artifact of migration {migration_id!r}")
    return archive_prefix(migration_id, label) + source_key[len(mine) :]


def _run_root(scope: RunScope) -> str:
    return scope.prefix(ARCHIVE_STAGE)[: -len(ARCHIVE_STAGE) - 1]


def _committed(store: ArtifactStore, manifest_keys: list[str]) -> list[Source]:
    """The manifests and every file they list (a manifest's sha256 as read now)."""
    sources: dict[str, Source] = {}
    for key in manifest_keys:
        text = store.get_bytes(key)
        sources[key] = Source(key, len(text), hashlib.sha256(text).hexdigest())
        for f in Manifest.from_json(text.decode("utf-8")).files:
            sources.setdefault(f.key, Source(f.key, f.bytes, f.sha256))
    return list(sources.values())


def sources_of(
    store: ArtifactStore, migration_id: str, extract: RunRef, packages: Sequence[RunRef]
) -> list[Source]:
    """Every committed file of ``extract`` and of the delivery stages of ``packages``, sorted by key."""
    extract_root = _run_root(extract.scope(migration_id))
    manifests = [k for k in store.list_keys(extract_root) if k.endswith("/" + MANIFEST_NAME)]
    if not manifests:
        raise ArchiveError(
            f"{extract} has no committed stage under {store.uri(extract_root)}: nothing to archive"
        )
    for run in packages:
        scope = run.scope(migration_id)
        found = [
            k
            for stage in DELIVERY_STAGES
            for k in store.list_keys(scope.prefix(stage))
            if k.endswith("/" + MANIFEST_NAME)
        ]
        if not found:
            raise ArchiveError(
                f"{run} has no committed delivery ({' or '.join(DELIVERY_STAGES)} stage): "
                "give runs that delivered"
            )
        manifests += found
    return sorted(_committed(store, manifests), key=lambda s: s.key)


class _Bucket:
    """The S3 calls the archive makes, on the artifact store's client and bucket."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store, self.client, self.bucket = store, store.client, store.bucket

    def object_lock_enabled(self) -> bool:
        try:
            conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _NO_LOCK_CODES:
                return False
            raise
        return bool(conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def copy(
        self, source: Source, key: str, storage_class: str, single_copy_limit: int
    ) -> tuple[str | None, str | None]:
        """Copy ``source`` to ``key``; (sha256 hex from S3's checksum or None, version id or None)."""
        args: dict[str, Any] = {
            "StorageClass": storage_class,
            "MetadataDirective": "REPLACE",
            "Metadata": {"sha256": source.sha256, "source-key": source.key},
            "TaggingDirective": "REPLACE",
            "Tagging": urlencode({STAGE_TAG: ARCHIVE_STAGE}),
            **self.store.encryption.args(),
        }
        copy_source = {"Bucket": self.bucket, "Key": source.key}
        if source.bytes > single_copy_limit:
            self.client.copy(copy_source, self.bucket, key, ExtraArgs=args)
            return None, None
        response = self.client.copy_object(
            Bucket=self.bucket, Key=key, CopySource=copy_source, ChecksumAlgorithm="SHA256", **args
        )
        return _hex(response.get("CopyObjectResult", {}).get("ChecksumSHA256")), response.get("VersionId")

    def read_sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        for chunk in self.client.get_object(Bucket=self.bucket, Key=key)["Body"].iter_chunks(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()

    def delete(self, key: str, version_id: str | None) -> None:
        extra = {"VersionId": version_id} if version_id else {}
        self.client.delete_object(Bucket=self.bucket, Key=key, **extra)

    def retain(self, key: str, until: date, lock_mode: str | None, head: dict[str, Any] | None) -> None:
        """Tag ``key`` (stage and retain-until) and, with Object Lock, lock it until ``until``
        unless it is locked that long already."""
        tags = [{"Key": STAGE_TAG, "Value": ARCHIVE_STAGE}, {"Key": RETAIN_TAG, "Value": until.isoformat()}]
        self.client.put_object_tagging(Bucket=self.bucket, Key=key, Tagging={"TagSet": tags})
        if lock_mode is None:
            return
        locked = (head or {}).get("ObjectLockRetainUntilDate")
        if locked is not None and locked.date() >= until:
            return
        retain_until = datetime(until.year, until.month, until.day, tzinfo=UTC)
        self.client.put_object_retention(
            Bucket=self.bucket, Key=key, Retention={"Mode": lock_mode, "RetainUntilDate": retain_until}
        )


def _hex(checksum: str | None) -> str | None:
    """S3's base64 SHA-256 as hex; None for none or a composite (per-part, ``…-N``) checksum."""
    if not checksum or "-" in checksum:
        return None
    return base64.b64decode(checksum).hex()


def _archive_one(
    bucket: _Bucket,
    source: Source,
    key: str,
    settings: ArchiveSettings,
    until: date,
    lock: str | None,
    limit: int,
) -> tuple[ArchivedObject, bool]:
    """(the archived object, whether this call copied it)."""
    uri = bucket.store.uri

    def entry(verified_by: str) -> ArchivedObject:
        return ArchivedObject(
            source.key,
            key,
            source.bytes,
            source.sha256,
            settings.storage_class,
            until.isoformat(),
            verified_by,
        )

    head = bucket.store.head(key, checksum=True)
    if head is not None:
        got, how = _hex(head.get("ChecksumSHA256")), "checksum"
        if got is None:
            got, how = bucket.read_sha256(key), "read"
        if got != source.sha256:
            raise ArchiveConflict(
                f"{uri(key)} already holds another object (sha256 {got}) than {uri(source.key)} "
                f"(sha256 {source.sha256}): an archive is never overwritten; archive under another label"
            )
        bucket.retain(key, until, lock, head)
        return entry(how), False
    src_head = bucket.store.head(source.key)
    if src_head is None:
        raise ArchiveIntegrityError(
            f"{uri(source.key)} is listed in its manifest but missing: cannot archive it"
        )
    size = int(src_head.get("ContentLength", -1))
    if size != source.bytes:
        raise ArchiveIntegrityError(
            f"{uri(source.key)} has {size} bytes, its manifest says {source.bytes}: it was changed after "
            "it was committed; not archived"
        )
    got, version = bucket.copy(source, key, settings.storage_class, limit)
    how = "checksum"
    if got is None:
        got, how = bucket.read_sha256(key), "read"
    if got != source.sha256:
        bucket.delete(key, version)
        raise ArchiveIntegrityError(
            f"{uri(source.key)} does not match its manifest: its bytes hash to sha256 {got}, the manifest "
            f"says {source.sha256}; it was changed after it was committed, so it is not archived (its copy "
            "was removed). Re-run the stage that wrote it, or archive another run"
        )
    bucket.retain(key, until, lock, None)
    return entry(how), True


def archive(
    ctx: PhaseContext,
    label: str,
    extract: RunRef,
    packages: Sequence[RunRef],
    settings: ArchiveSettings,
    *,
    single_copy_limit: int = SINGLE_COPY_LIMIT,
) -> ArchiveResult:
    """Archive ``extract`` and the deliveries of ``packages`` under ``<migration>/archive/<label>/``
    (module docstring); the archive manifest is written last. ``single_copy_limit``: bytes above
    which an object is copied in parts (S3: 5 GiB)."""
    store, migration_id = ctx.store, ctx.migration_id
    prefix = archive_prefix(migration_id, label)
    until = ctx.as_of + timedelta(days=settings.retention_days)
    bucket = _Bucket(store)
    lock = settings.object_lock_mode if bucket.object_lock_enabled() else None
    archived, copied = [], 0
    for source in sources_of(store, migration_id, extract, packages):
        done, new = _archive_one(
            bucket,
            source,
            archive_key(migration_id, label, source.key),
            settings,
            until,
            lock,
            single_copy_limit,
        )
        archived.append(done)
        copied += new
    retention = f"object-lock {lock}" if lock else "tag"
    body = {
        "schema_version": ARCHIVE_SCHEMA_VERSION,
        "migration_id": migration_id,
        "label": label,
        "extract": str(extract),
        "packages": [str(p) for p in packages],
        "archived_by": {
            "dag_id": ctx.scope.dag_id,
            "run_id": ctx.scope.run_id,
            "as_of": ctx.as_of.isoformat(),
        },
        "storage_class": settings.storage_class,
        "retain_until": until.isoformat(),
        "retention": retention,
        "objects": [asdict(a) for a in archived],
        "totals": {"objects": len(archived), "bytes": sum(a.bytes for a in archived)},
    }
    data = (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    key = prefix + ARCHIVE_MANIFEST
    store.client.put_object(
        Bucket=store.bucket,
        Key=key,
        Body=data,
        ContentType="application/json",
        StorageClass=settings.storage_class,
        ChecksumAlgorithm="SHA256",
        **{
            **store.write_args(key, hashlib.sha256(data).hexdigest()),
            "Tagging": urlencode({STAGE_TAG: ARCHIVE_STAGE, RETAIN_TAG: until.isoformat()}),
        },
    )
    bucket.retain(key, until, lock, None)
    return ArchiveResult(
        label=label,
        manifest=store.uri(key),
        objects=len(archived),
        bytes=sum(a.bytes for a in archived),
        copied=copied,
        already_archived=len(archived) - copied,
        storage_class=settings.storage_class,
        retain_until=until,
        retention=retention,
    )
