"""S3 faults and commits: encryption on every write, no manifest over a missing or partial part,
re-runs that commit the same manifest, commits that refuse a missing part or an unbalanced count.

Faults are injected with botocore's ``before-send`` event (the request never reaches the
endpoint: a 500, a connection that fails, a read that times out) on a client whose own retries
are off, so a fault reaches the step the way it reaches an Airflow task once botocore gave up;
the task's retry is the step run again. Nothing waits on a clock: attempts are counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from aleph2alma import settings as settings_mod
from aleph2alma.accounting import UnbalancedError
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.alma.client import AlmaClient
from aleph2alma.errors import PermanentError
from aleph2alma.phases.context import PhaseContext
from aleph2alma.phases.extraction import commit_entity, extract_part, plan_extraction
from aleph2alma.phases.test_load import api_load_step
from aleph2alma.refs import PartRef, PartResult
from aleph2alma.runs import RunRef
from aleph2alma.settings import SettingsError
from aleph2alma.stages import MissingPartError, commit_alma
from aleph2alma.storage import (
    MANIFEST_NAME,
    STAGE_TAG,
    ArtifactStore,
    Encryption,
    IntegrityError,
    RunScope,
    part_name,
)

EXTRACT = RunScope("demo", "migration_extract", "faults_1")
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def client(s3_stack: Any, store: ArtifactStore) -> Any:
    """A client of the same endpoint that never retries by itself: each fault reaches the step."""
    return boto3.client(
        "s3",
        endpoint_url=s3_stack.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=getattr(s3_stack, "s3_secret_key", "testing"),
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture
def settings() -> settings_mod.MigrationSettings:
    return replace(settings_mod.load("demo"), part_rows=300, part_bytes=16_384, db_chunk_rows=100)


class Faults:
    """Fails chosen S3 calls before they are sent; counts every attempt by operation."""

    def __init__(self, client: Any) -> None:
        self.attempts: dict[str, int] = {}
        self.plan: dict[tuple[str, int], Callable[[], Any]] = {}
        client.meta.events.register("before-send.s3", self._before_send)

    def fail(self, operation: str, nth: int, fault: Callable[[], Any]) -> None:
        """Fail the ``nth`` (from 1) ``operation`` call with ``fault`` (raised, or the response)."""
        self.plan[(operation, nth)] = fault

    def _before_send(self, request: Any, event_name: str, **_: Any) -> Any:
        operation = event_name.rsplit(".", 1)[1]
        if request.url.split("?")[0].endswith(MANIFEST_NAME):
            operation += ":manifest"
        self.attempts[operation] = self.attempts.get(operation, 0) + 1
        fault = self.plan.pop((operation, self.attempts[operation]), None)
        return fault() if fault is not None else None


def http_500() -> AWSResponse:
    body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
    return AWSResponse("https://s3.example/", 500, {"Content-Type": "application/xml"}, _Raw(body))


def s3_down() -> None:
    raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")


def s3_slow() -> None:
    raise ReadTimeoutError(endpoint_url="http://127.0.0.1:9/")


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body

    def read(self, *_: Any) -> bytes:
        body, self.body = self.body, b""
        return body


def _extract(store: ArtifactStore, settings: Any, library: Path, entity: str = "bibs") -> tuple[Any, Any]:
    """The extraction steps of ``entity`` as the DAG runs them: plan, every part, commit."""
    ctx = PhaseContext(store, EXTRACT, settings)
    landing, engine = (
        LocalLanding(library / "alephseq"),
        create_engine(f"sqlite:///{library / 'replica.sqlite'}"),
    )
    plan = plan_extraction(ctx, [entity], engine=engine, landing=landing)
    results = [extract_part(ctx, p, engine=engine, landing=landing) for p in plan]
    return ctx, commit_entity(ctx, entity, results, plan)


def _assert_whole(store: ArtifactStore, scope: RunScope, entity: str) -> None:
    """No manifest, or every file it lists is in the bucket with its size and sha256."""
    key = scope.prefix("raw", entity) + MANIFEST_NAME
    if not store.exists(key):
        return
    manifest = store.manifest(key)
    assert manifest.files
    for f in manifest.files:
        data = store.get_bytes(f.key)
        assert len(data) == f.bytes
        assert hashlib.sha256(data).hexdigest() == f.sha256


# --- B5: encryption at rest ----------------------------------------------------------------------


def _write_everything(store: ArtifactStore, tmp_path: Path) -> list[str]:
    small, large = tmp_path / "small.seq", tmp_path / "large.seq"
    small.write_bytes(b"000000001 FMT   L BK\n")
    # Over boto3's 8 MiB multipart threshold: encryption must reach CreateMultipartUpload too.
    large.write_bytes(b"x" * (9 * 1024 * 1024))
    prefix = EXTRACT.prefix("raw", "bibs")
    files = [
        store.put_file(prefix + part_name("BNU01", 0, "seq"), small, records=1, source="BNU01"),
        store.put_file(prefix + part_name("BNU01", 1, "seq"), large, records=1, source="BNU01"),
        store.put_bytes(f"{EXTRACT.report_prefix()}report.json", b"{}", kind="report"),
    ]
    uri = store.commit(EXTRACT, "raw", "bibs", files[:2])
    return [f.key for f in files] + [uri.split("/", 3)[3]]


@pytest.mark.parametrize(
    ("encryption", "expected"),
    [
        (Encryption(), {"ServerSideEncryption": "AES256"}),
        (Encryption(KMS_KEY), {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY}),
    ],
    ids=["sse-s3", "sse-kms"],
)
def test_every_object_the_store_writes_is_encrypted(
    store: ArtifactStore, tmp_path: Path, encryption: Encryption, expected: dict[str, str]
) -> None:
    store.encryption = encryption
    keys = _write_everything(store, tmp_path)
    assert len(store.list_keys("")) == len(keys) == 4
    for key in keys:
        head = store.client.head_object(Bucket=store.bucket, Key=key)
        assert {k: head.get(k) for k in expected} == expected, key
    # Run objects carry their stage for the lifecycle rule; a report (outside runs/) does not.
    tags = {k: store.client.get_object_tagging(Bucket=store.bucket, Key=k)["TagSet"] for k in keys}
    assert tags[keys[0]] == tags[keys[1]] == tags[keys[3]] == [{"Key": STAGE_TAG, "Value": "raw"}]
    assert tags[keys[2]] == []


def test_the_migration_settings_choose_the_kms_key(store: ArtifactStore, tmp_path: Path) -> None:
    base = settings_mod.load("demo")
    ctx = PhaseContext(store, EXTRACT, replace(base, storage=settings_mod.StorageSettings(KMS_KEY)))
    ctx.store.put_bytes(EXTRACT.prefix("raw", "x") + "a", b"a")
    head = store.client.head_object(Bucket=store.bucket, Key=EXTRACT.prefix("raw", "x") + "a")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY)
    PhaseContext(store, EXTRACT, base)
    assert store.encryption == Encryption()


def test_a_kms_key_that_is_not_one_is_a_settings_error() -> None:
    data = {"migration_id": "demo", "storage": {"kms_key_id": "my key"}}
    with pytest.raises(SettingsError, match=r'storage\.kms_key_id: "my key" is not a KMS key'):
        settings_mod.from_mapping(data)
    for good in (KMS_KEY, "alias/aleph2alma", "1234abcd-12ab-34cd-56ef-1234567890ab", ""):
        assert settings_mod.from_mapping({"migration_id": "demo", "storage": {"kms_key_id": good}})


# --- C9: S3 faults mid-write --------------------------------------------------------------------


@pytest.mark.parametrize("fault", [http_500, s3_down, s3_slow], ids=["500", "down", "slow"])
@pytest.mark.parametrize("operation", ["PutObject", "PutObject:manifest"], ids=["2nd-part", "manifest"])
def test_s3_fault_mid_write_is_retried_and_no_manifest_points_at_a_missing_part(
    client: Any, store: ArtifactStore, settings: Any, tiny_library: Path, fault: Any, operation: str
) -> None:
    store = ArtifactStore(client, store.bucket)
    faults = Faults(client)
    nth = 2 if operation == "PutObject" else 1
    faults.fail(operation, nth, fault)
    with pytest.raises(Exception) as failed:
        _extract(store, settings, tiny_library)
    # Worth a retry: not a PermanentError, so Airflow's retries apply.
    assert not isinstance(failed.value, PermanentError)
    assert faults.attempts[operation] == nth
    assert not store.exists(EXTRACT.prefix("raw", "bibs") + MANIFEST_NAME)
    _assert_whole(store, EXTRACT, "bibs")

    _, committed = _extract(store, settings, tiny_library)  # the task's retry
    assert committed is not None and committed.records > 0
    _assert_whole(store, EXTRACT, "bibs")
    assert store.manifest(committed.manifest).files


def test_commit_refuses_a_part_that_is_partial_or_missing(store: ArtifactStore, tmp_path: Path) -> None:
    local = tmp_path / "p.seq"
    local.write_bytes(b"000000001 FMT   L BK\n000000002 FMT   L BK\n")
    prefix = EXTRACT.prefix("raw", "bibs")
    whole = store.put_file(prefix + part_name("BNU01", 0, "seq"), local, records=2, source="BNU01")
    cut = store.put_file(prefix + part_name("BNU01", 1, "seq"), local, records=2, source="BNU01")
    gone = store.put_file(prefix + part_name("BNU01", 2, "seq"), local, records=2, source="BNU01")
    # A short object under the same metadata (a body cut off on the way), and a vanished one.
    store.client.put_object(
        Bucket=store.bucket, Key=cut.key, Body=local.read_bytes()[:10], Metadata={"sha256": cut.sha256}
    )
    store.client.delete_object(Bucket=store.bucket, Key=gone.key)
    with pytest.raises(IntegrityError) as refused:
        store.commit(EXTRACT, "raw", "bibs", [whole, cut, gone])
    assert isinstance(refused.value, PermanentError)
    assert f"{cut.key} has 10 bytes, expected {cut.bytes}" in str(refused.value)
    assert f"{gone.key} is missing" in str(refused.value)
    assert not store.exists(prefix + MANIFEST_NAME)


def test_commit_refuses_an_object_whose_sha256_differs(store: ArtifactStore, tmp_path: Path) -> None:
    local = tmp_path / "p.seq"
    local.write_bytes(b"abc\n")
    stored = store.put_file(EXTRACT.prefix("raw", "bibs") + "a.seq", local, records=1)
    store.put_bytes(stored.key, b"abd\n")  # same size, other bytes
    with pytest.raises(IntegrityError, match="carries sha256"):
        store.commit(EXTRACT, "raw", "bibs", [stored])


# --- C9: a task killed mid-stage, re-run ----------------------------------------------------------


def test_rerun_after_a_kill_commits_an_identical_manifest_and_counts_no_orphan(
    s3_stack: Any, store: ArtifactStore, settings: Any, tiny_library: Path
) -> None:
    clean = ArtifactStore(s3_stack.s3_client(), store.bucket + "-clean")
    clean.ensure_bucket()
    _, reference = _extract(clean, settings, tiny_library)
    assert reference is not None
    expected = clean.get_bytes(EXTRACT.prefix("raw", "bibs") + MANIFEST_NAME)

    # The killed try: every part written, one more part outside the plan (a plan that has since
    # changed, or a part size edited between tries), no manifest.
    ctx = PhaseContext(store, EXTRACT, settings)
    landing = LocalLanding(tiny_library / "alephseq")
    plan = plan_extraction(ctx, ["bibs"], engine=None, landing=landing)
    for part in plan:
        extract_part(ctx, part, engine=None, landing=landing)
    orphan = EXTRACT.prefix("raw", "bibs") + part_name("BNU01", 999, "seq")
    store.put_bytes(orphan, b"000000001 FMT   L BK\n" * 50)

    _, again = _extract(store, settings, tiny_library)
    assert again is not None
    assert again.model_copy(update={"manifest": ""}) == reference.model_copy(update={"manifest": ""})
    manifest = store.get_bytes(EXTRACT.prefix("raw", "bibs") + MANIFEST_NAME)
    assert manifest == expected  # byte for byte: the manifest carries no timestamp
    assert orphan not in {f["key"] for f in json.loads(manifest)["files"]}
    assert store.exists(orphan)  # left alone, never read: readers go through the manifest


# --- C9: commit refuses a missing planned part and checks the balance first -------------------------


def _bnu01_parts(
    store: ArtifactStore, settings: Any, library: Path
) -> tuple[PhaseContext, list[Any], list[PartResult]]:
    """The BNU01 bib parts planned and extracted, not committed."""
    ctx = PhaseContext(store, EXTRACT, settings)
    landing = LocalLanding(library / "alephseq")
    plan = [p for p in plan_extraction(ctx, ["bibs"], engine=None, landing=landing) if p.source == "BNU01"]
    return ctx, plan, [extract_part(ctx, p, engine=None, landing=landing) for p in plan]


def test_raw_commit_refuses_a_planned_part_without_a_result(
    store: ArtifactStore, settings: Any, tiny_library: Path
) -> None:
    ctx, plan, parts = _bnu01_parts(store, settings, tiny_library)
    assert len(plan) >= 2
    results: list[PartResult | None] = list(parts)
    results[1] = None  # a mapped task that returned nothing
    with pytest.raises(MissingPartError, match=r"bibs: refusing to commit: planned part\(s\) BNU01 #1 have"):
        commit_entity(ctx, "bibs", results, plan)
    with pytest.raises(MissingPartError, match=r"BNU01 #1 have no result"):
        commit_entity(ctx, "bibs", [results[0], *results[2:]], plan)
    assert not store.exists(EXTRACT.prefix("raw", "bibs") + MANIFEST_NAME)


def test_raw_commit_checks_in_equals_out_before_writing(
    store: ArtifactStore, settings: Any, tiny_library: Path
) -> None:
    ctx, plan, results = _bnu01_parts(store, settings, tiny_library)
    results[0] = results[0].model_copy(update={"records_in": results[0].records_in + 1})
    with pytest.raises(UnbalancedError, match="raw bibs: "):
        commit_entity(ctx, "bibs", results, plan)
    assert not store.exists(EXTRACT.prefix("raw", "bibs") + MANIFEST_NAME)


TRANSFORM = RunScope("demo", "migration_transform", "faults_t")


def _alma_part(store: ArtifactStore, index: int, rows: list[dict[str, Any]], records_in: int) -> PartResult:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    stored = store.put_bytes(
        TRANSFORM.prefix("alma", "loans") + part_name("Z36", index, "jsonl"),
        body,
        records=len(rows),
        source="Z36",
        kind="part",
    )
    return PartResult(entity="loans", source="Z36", index=index, files=[stored], records_in=records_in)


def test_alma_commit_refuses_a_missing_planned_part_and_an_unbalanced_count(store: ArtifactStore) -> None:
    ctx = PhaseContext(store, TRANSFORM, settings_mod.load("demo"))
    plan = [PartRef(entity="loans", source="Z36", index=i, key=f"k{i}", sha256="0") for i in range(3)]
    done = [_alma_part(store, i, [{"loan": i}], 1) for i in range(3)]
    with pytest.raises(MissingPartError, match=r"loans: refusing to commit: planned part\(s\) Z36 #2"):
        commit_alma(ctx, "loans", done[:2], planned=plan)
    with pytest.raises(MissingPartError, match="Z36 #1 have no result"):
        commit_alma(ctx, "loans", [done[0], None, done[2]], planned=plan)
    unbalanced = [*done[:2], done[2].model_copy(update={"records_in": 5})]
    with pytest.raises(UnbalancedError, match=r"loans: 7 in ≠ 3 out \+ 0 rejected"):
        commit_alma(ctx, "loans", unbalanced, planned=plan)
    assert not store.exists(TRANSFORM.prefix("alma", "loans") + MANIFEST_NAME)
    committed = commit_alma(ctx, "loans", done, planned=plan)
    assert (committed.records, committed.records_in) == (3, 3)


# --- C9: api_load reads through the checksum check ------------------------------------------------


def test_api_load_refuses_a_tampered_part_before_calling_alma(store: ArtifactStore) -> None:
    calls: list[str] = []

    def alma(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(400, json={"errorList": {"error": [{"errorCode": "x", "errorMessage": "x"}]}})

    client = AlmaClient(
        "https://api-eu.hosted.exlibrisgroup.com/almaws/v1",
        "k",
        per_second=0,
        session=httpx.Client(transport=httpx.MockTransport(alma)),
    )
    ctx = PhaseContext(store, RunScope("demo", "migration_test_load", "faults_l"), settings_mod.load("demo"))
    transform_ctx = PhaseContext(store, TRANSFORM, ctx.settings)
    loan = {
        "aleph_key": "L1",
        "user_primary_id": "u1",
        "item_barcode": "b1",
        "library": "MAIN",
        "circ_desk": "D",
    }
    part = _alma_part(store, 0, [loan], 1)
    commit_alma(transform_ctx, "loans", [part])
    store.put_bytes(part.files[0].key, (json.dumps({**loan, "user_primary_id": "u2"}) + "\n").encode())
    with pytest.raises(IntegrityError, match="does not match the sha256 in its manifest"):
        api_load_step(ctx, RunRef(TRANSFORM.dag_id, TRANSFORM.run_id), client)
    assert calls == []  # refused before the first record reached Alma


def test_checked_jsonl_reader_yields_nothing_from_a_tampered_file(store: ArtifactStore) -> None:
    part = _alma_part(store, 0, [{"a": 1}, {"a": 2}], 2)
    store.put_bytes(part.files[0].key, b'{"a": 1}\n{"a": 3}\n')
    seen = []
    with pytest.raises(IntegrityError):
        for row in store.iter_jsonl(part.files):
            seen.append(row)
    assert seen == []


def test_a_fault_while_heading_a_part_is_retried_not_refused(client: Any, store: ArtifactStore) -> None:
    store = ArtifactStore(client, store.bucket)
    stored = store.put_bytes(EXTRACT.prefix("raw", "bibs") + "a.seq", b"a\n", kind="part")
    Faults(client).fail("HeadObject", 1, http_500)
    with pytest.raises(ClientError) as failed:
        store.commit(EXTRACT, "raw", "bibs", [stored])
    assert not isinstance(failed.value, PermanentError)
    assert not store.exists(EXTRACT.prefix("raw", "bibs") + MANIFEST_NAME)
    store.commit(EXTRACT, "raw", "bibs", [stored])
    assert store.exists(EXTRACT.prefix("raw", "bibs") + MANIFEST_NAME)


def test_fix_cycle_commit_checks_each_source_before_writing(
    store: ArtifactStore, settings: Any, tiny_library: Path
) -> None:
    from aleph2alma import pipeline
    from aleph2alma.fixes.extract import _fixed_balance
    from aleph2alma.phases.fix_cycle import apply_fixes_step

    landing, engine = (
        LocalLanding(tiny_library / "alephseq"),
        create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}"),
    )
    pipeline.extract(PhaseContext(store, EXTRACT, settings), engine, landing)
    fix = RunScope("demo", "migration_fix_cycle", "faults_f")
    fixed = apply_fixes_step(PhaseContext(store, fix, settings), "")  # the demo's rules balance
    assert fixed.fixes and store.exists(fix.prefix("raw", "patrons") + MANIFEST_NAME)

    before = store.stage_manifest(EXTRACT, "raw", "patrons").parts()
    after = [replace(f, records=f.records - 1) if f.source == "Z303" else f for f in before]
    with pytest.raises(UnbalancedError, match="fixed raw patrons Z303: "):
        _fixed_balance("patrons", before, after)
    before = store.stage_manifest(EXTRACT, "raw", "items").parts()
    after = [replace(f, records=f.records + 1) if f.source == "Z30" else f for f in before]
    with pytest.raises(UnbalancedError, match="fixed raw items Z30: "):
        _fixed_balance("items", before, after)
