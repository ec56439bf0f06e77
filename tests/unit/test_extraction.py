"""Full extraction against the demo Aleph replica: SQLite and PostgreSQL, to a real S3 endpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from aleph2alma import settings as settings_mod
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.extract import ExtractError, all_entities
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.phases.context import PhaseContext
from aleph2alma.phases.extraction import commit_entity, extract_part, plan_extraction, profile_codes
from aleph2alma.storage import ArtifactStore, RunScope

SCOPE = RunScope("demo", "migration_extract", "test_run")


@pytest.fixture(scope="module")
def settings():
    # Small parts so that even the tiny library is split into several of them.
    return replace(settings_mod.load("demo"), part_rows=300, part_bytes=16_384, db_chunk_rows=100)


def _ctx(store: ArtifactStore, settings) -> PhaseContext:
    return PhaseContext(store, SCOPE, settings)


def _extract_all(store: ArtifactStore, settings, engine, landing, entities: list[str]) -> dict:
    ctx = _ctx(store, settings)
    plan = plan_extraction(ctx, entities, engine=engine, landing=landing)
    results = [extract_part(ctx, part, engine=engine, landing=landing) for part in plan]
    return {e: commit_entity(ctx, e, results, plan) for e in entities}


def _summary(library: Path) -> dict:
    return json.loads((library / "summary.json").read_text())


def test_sqlite_replica_extracts_every_entity_with_source_counts(tiny_library: Path, store, settings) -> None:
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    committed = _extract_all(store, settings, engine, LocalLanding(tiny_library / "alephseq"), all_entities())
    counts = _summary(tiny_library)["counts"]

    with engine.connect() as conn:
        for table in ("z30", "z303", "z36", "z37", "z31"):
            n = conn.execute(sa.text(f"select count(*) from {table}")).scalar_one()
            assert n > 0
    assert committed["items"].records == counts["items"]
    assert committed["patrons"].records == counts["patrons"]
    assert committed["loans"].records == counts["loans"]
    assert committed["bibs"].records == counts["bibs"]
    assert committed["holdings"].records == counts["holdings"]
    assert set(committed["patrons"].extra["records_by_source"]) == {"Z303", "Z304", "Z305", "Z308"}


def test_parts_split_large_tables_and_preserve_every_row(
    tiny_library: Path, store, settings, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    committed = _extract_all(store, settings, engine, None, ["items"])
    manifest = store.manifest(committed["items"].manifest)
    parts = manifest.parts("Z30")
    assert len(parts) > 1
    keys = []
    for i, part in enumerate(parts):
        local = store.download(part.key, tmp_path / f"part-{i}.parquet", part.sha256)
        table = pq.read_table(local)
        assert table.num_rows == part.records
        keys += table.column("Z30_REC_KEY").to_pylist()
    assert len(keys) == len(set(keys)) == manifest.records
    assert all(len(k) == 15 for k in keys), "CHAR keys keep their Aleph width"


def test_alephseq_parts_end_on_record_boundaries(tiny_library: Path, store, settings) -> None:
    committed = _extract_all(store, settings, None, LocalLanding(tiny_library / "alephseq"), ["bibs"])
    manifest = store.manifest(committed["bibs"].manifest)
    original = b"".join((tiny_library / "alephseq" / lib.file).read_bytes() for lib in settings.bib_libraries)
    copied = b"".join(store.get_bytes(p.key) for p in sorted(manifest.parts(), key=lambda p: p.key))
    assert len(manifest.parts()) > 2
    assert sorted(copied.splitlines()) == sorted(original.splitlines())
    for part in manifest.parts():
        assert store.get_bytes(part.key).startswith(b"0"), "each part starts with a system number"


def test_profile_counts_every_item_code(tiny_library: Path, store, settings) -> None:
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    committed = _extract_all(store, settings, engine, None, ["items", "patrons", "fines"])
    result = profile_codes(
        _ctx(store, settings), committed["items"], committed["patrons"], committed["fines"]
    )
    inventory = json.loads(store.get_bytes(result.extra["inventory_json"].split("/", 3)[3]))
    assert result.records > 0
    fine_types = sum(entry["count"] for entry in inventory["counts"]["fine_type"])
    assert fine_types == committed["fines"].records > 0  # every Z31 row's cash type is counted


def test_unknown_entity_is_a_clear_error(settings) -> None:
    with pytest.raises(ExtractError, match="unknown entity shelves; known: bibs"):
        plan_extraction(_ctx(None, settings), ["shelves"], engine=None, landing=None)  # type: ignore[arg-type]


def test_retried_part_writes_the_same_keys_and_manifest(tiny_library: Path, store, settings) -> None:
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    first = _extract_all(store, settings, engine, None, ["loans"])
    before = store.get_bytes(first["loans"].manifest.split("/", 3)[3])
    keys_before = store.list_keys(SCOPE.prefix("raw", "loans"))
    second = _extract_all(store, settings, engine, None, ["loans"])
    assert store.get_bytes(second["loans"].manifest.split("/", 3)[3]) == before
    assert store.list_keys(SCOPE.prefix("raw", "loans")) == keys_before


@pytest.mark.postgres
def test_postgresql_replica_with_library_schemas(tmp_path: Path, pg_database: str, store, settings) -> None:
    from aleph2alma_dev.demo.generator import generate

    pg_settings = replace(settings, schemas={"adm": "bnu50", "usr": "bnu00"})
    summary = generate(tmp_path, scale="tiny", seed=3, db_url=pg_database, settings=pg_settings)
    engine = create_engine(pg_database)
    committed = _extract_all(store, pg_settings, engine, None, ["items", "patrons", "loans"])
    assert committed["items"].records == summary["counts"]["items"]
    assert committed["patrons"].records == summary["counts"]["patrons"]
    assert committed["loans"].records == summary["counts"]["loans"]
