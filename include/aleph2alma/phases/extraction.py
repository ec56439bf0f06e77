"""Steps of the extraction phase, one function per DAG task.

Each step takes its clients (artifact store, database engine, landing location) as
arguments and returns only references and counts, so the DAG stays wiring and the steps
run the same in tests, in the demo and in production.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aleph2alma.aleph import extract
from aleph2alma.aleph.extract import PartSpec
from aleph2alma.aleph.landing import Landing
from aleph2alma.settings import MigrationSettings
from aleph2alma.storage import ArtifactStore, RunScope, StoredFile, part_name

RAW = "raw"
PROFILE = "profile"


def plan_extraction(settings: MigrationSettings, entities: list[str], *, engine: sa.Engine | None,
                    landing: Landing | None) -> list[dict[str, Any]]:
    return [spec.to_dict() for spec in extract.plan(settings, entities, engine=engine, landing=landing)]


def extract_part(store: ArtifactStore, scope: RunScope, settings: MigrationSettings, spec_dict: dict[str, Any], *,
                 engine: sa.Engine | None, landing: Landing | None) -> dict[str, Any]:
    """Extract one part to the run's raw stage; returns the stored files for the manifest."""
    spec = PartSpec.from_dict(spec_dict)
    prefix = scope.prefix(RAW, spec.entity)
    name = part_name(spec.source, spec.index, spec.ext)
    files: list[StoredFile] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        if spec.kind == "table":
            if engine is None:
                raise extract.ExtractError(f"{spec.source}: table parts need the aleph_db connection")
            result = extract.extract_table_part(engine, settings, spec, out)
        else:
            if landing is None:
                raise extract.ExtractError(f"{spec.file}: ALEPHSEQ parts need the landing location")
            rejects = Path(tmp) / "rejects.jsonl"
            result = extract.extract_alephseq_part(landing, spec, out, rejects)
            if result.malformed_lines:
                files.append(store.put_file(prefix + "rejects/" + part_name(spec.source, spec.index, "jsonl"),
                                            rejects, records=result.malformed_lines, source=spec.source,
                                            kind="rejects"))
        files.insert(0, store.put_file(prefix + name, out, records=result.records, source=spec.source))
    return {"entity": spec.entity, "source": spec.source, "index": spec.index,
            "files": [f.to_dict() for f in files]}


def commit_entity(store: ArtifactStore, scope: RunScope, entity: str, part_results: Iterable[dict[str, Any]],
                  planned: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """Write the entity's raw manifest once every planned part is in; None if not requested."""
    expected = {(p["source"], p["index"]) for p in planned if p["entity"] == entity}
    if not expected:
        return None
    mine = [r for r in part_results if r["entity"] == entity]
    missing = expected - {(r["source"], r["index"]) for r in mine}
    if missing:
        raise RuntimeError(f"{entity}: parts {sorted(missing)} were planned but not extracted")
    files = [StoredFile(**f) for r in mine for f in r["files"]]
    by_source: dict[str, int] = {}
    for f in files:
        if f.kind == "part":
            by_source[f.source] = by_source.get(f.source, 0) + f.records
    malformed = sum(f.records for f in files if f.kind == "rejects")
    uri = store.commit(scope, RAW, entity, files,
                       extra={"records_by_source": by_source, "malformed_lines": malformed})
    manifest = store.manifest(uri)
    return {"entity": entity, "stage": RAW, "manifest": uri, "records": primary_count(entity, by_source),
            "records_by_source": by_source, "malformed_lines": malformed, "files": len(manifest.files)}


def primary_count(entity: str, by_source: dict[str, int]) -> int:
    """The count a librarian means by 'how many patrons': Z303 rows, not Z303+Z304+…"""
    if entity == "patrons":
        return by_source.get("Z303", 0)
    return sum(by_source.values())


def profile_codes(store: ArtifactStore, scope: RunScope, items_manifest: str | None,
                  patrons_manifest: str | None) -> dict[str, Any]:
    """Count every code in use: the draft of the migration form, as CSV and JSON."""
    from aleph2alma.profile import profile_parquet

    with tempfile.TemporaryDirectory() as tmp:
        def local_parts(uri: str | None, source: str) -> list[str]:
            if uri is None:
                return []
            parts = store.manifest(uri).parts(source)
            return [str(store.download(p.key, Path(tmp) / Path(p.key).name, p.sha256)) for p in parts]

        inventory = profile_parquet(local_parts(items_manifest, "Z30"), local_parts(patrons_manifest, "Z305"))
        rows = inventory.rows()
        csv_path = Path(tmp) / "code_inventory.csv"
        with open(csv_path, "w", encoding="utf-8", newline="") as fh:
            inventory.to_csv(fh)
        prefix = scope.prefix(PROFILE, "codes")
        files = [
            store.put_file(prefix + "code_inventory.csv", csv_path, records=len(rows), source="codes"),
            store.put_bytes(prefix + "code_inventory.json", inventory.to_json().encode("utf-8"),
                            content_type="application/json", records=len(rows), source="codes", kind="part"),
        ]
    by_type: dict[str, int] = {}
    for row in rows:
        by_type[row["code_type"]] = by_type.get(row["code_type"], 0) + 1
    uri = store.commit(scope, PROFILE, "codes", files, extra={"distinct_codes_by_type": by_type})
    return {"entity": "codes", "stage": PROFILE, "manifest": uri, "records": len(rows),
            "inventory_csv": store.uri(files[0].key), "inventory_json": store.uri(files[1].key)}


def write_run_summary(store: ArtifactStore, scope: RunScope, stages: Iterable[dict[str, Any] | None],
                      extra: dict[str, Any] | None = None) -> str:
    """Per stage and entity: counts and manifest URIs, for operators and the demo summary."""
    entries = sorted((s for s in stages if s), key=lambda s: (s["stage"], s["entity"]))
    body = {"migration_id": scope.migration_id, "dag_id": scope.dag_id, "run_id": scope.run_id, "stages": entries,
            **(extra or {})}
    key = scope.report_prefix() + "run_summary.json"
    store.put_bytes(key, json.dumps(body, indent=2, sort_keys=True).encode("utf-8"), content_type="application/json")
    return store.uri(key)


def record_latest(store: ArtifactStore, scope: RunScope) -> str:
    """Point ``state/latest/<dag id>.json`` at this run: later phases read the latest good extract."""
    key = f"{scope.migration_id}/state/latest/{scope.dag_id}.json"
    body = {"run_id": scope.run_id, "dag_id": scope.dag_id}
    store.put_bytes(key, json.dumps(body, sort_keys=True).encode("utf-8"), content_type="application/json")
    return store.uri(key)
