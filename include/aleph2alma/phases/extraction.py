"""Steps of the extraction phase, one function per DAG task.

Each step takes its context and clients (database engine, landing location) as arguments
and returns only references and counts, so the DAG stays wiring and the steps run the same
in tests, in the demo and in production.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from aleph2alma.aleph import extract
from aleph2alma.aleph.extract import PartSpec
from aleph2alma.aleph.landing import Landing
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Committed, PartResult
from aleph2alma.stages import part_tally, planned_results
from aleph2alma.storage import StoredFile, part_name

RAW = "raw"
PROFILE = "profile"


def plan_extraction(
    ctx: PhaseContext, entities: list[str], *, engine: sa.Engine | None, landing: Landing | None
) -> list[PartSpec]:
    return extract.plan(ctx.settings, entities, engine=engine, landing=landing)


def extract_part(
    ctx: PhaseContext, spec: PartSpec, *, engine: sa.Engine | None, landing: Landing | None
) -> PartResult:
    """Extract one part to the run's raw stage; returns the stored files for the manifest."""
    prefix = ctx.scope.prefix(RAW, spec.entity)
    name = part_name(spec.source, spec.index, spec.ext)
    files: list[StoredFile] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / name
        if spec.kind == "table":
            if engine is None:
                raise extract.ExtractError(f"{spec.source}: table parts need the aleph_db connection")
            result = extract.extract_table_part(engine, ctx.settings, spec, out)
        else:
            if landing is None:
                raise extract.ExtractError(f"{spec.file}: ALEPHSEQ parts need the landing location")
            rejects = Path(tmp) / "rejects.jsonl"
            result = extract.extract_alephseq_part(landing, spec, out, rejects)
            if result.malformed_lines:
                files.append(
                    ctx.store.put_file(
                        prefix + "rejects/" + part_name(spec.source, spec.index, "jsonl"),
                        rejects,
                        records=result.malformed_lines,
                        source=spec.source,
                        kind="rejects",
                    )
                )
        files.insert(0, ctx.store.put_file(prefix + name, out, records=result.records, source=spec.source))
    # Raw keeps every record it read (malformed lines stay in the copy and are reported as
    # rejects of the line, not of a record): in = out, checked again at the commit.
    return PartResult(
        entity=spec.entity, source=spec.source, index=spec.index, files=files, records_in=result.records
    )


def commit_entity(
    ctx: PhaseContext, entity: str, results: Iterable[PartResult | None], planned: Iterable[PartSpec]
) -> Committed | None:
    """Write the entity's raw manifest once every planned part is in; None if not requested.

    A planned part without a result is a ``MissingPartError``; in = out + rejected is checked
    before the manifest is written."""
    expected = [(p.source, p.index) for p in planned if p.entity == entity]
    if not expected:
        return None
    mine = planned_results(entity, results, expected)
    part_tally(mine, f"raw {entity}")
    files = [f for r in mine for f in r.files]
    by_source: dict[str, int] = {}
    for f in files:
        if f.kind == "part":
            by_source[f.source] = by_source.get(f.source, 0) + f.records
    malformed = sum(f.records for f in files if f.kind == "rejects")
    uri = ctx.store.commit(
        ctx.scope, RAW, entity, files, extra={"records_by_source": by_source, "malformed_lines": malformed}
    )
    return Committed(
        entity=entity,
        stage=RAW,
        manifest=uri,
        records=primary_count(entity, by_source),
        extra={"records_by_source": by_source, "malformed_lines": malformed, "files": len(files)},
    )


def primary_count(entity: str, by_source: dict[str, int]) -> int:
    """The count a librarian means by 'how many patrons': Z303 rows, not Z303+Z304+…"""
    if entity == "patrons":
        return by_source.get("Z303", 0)
    return sum(by_source.values())


def profile_codes(
    ctx: PhaseContext, items: Committed | None, patrons: Committed | None, fines: Committed | None = None
) -> Committed:
    """Count every code in use: the draft of the migration form, as CSV and JSON."""
    from aleph2alma.profile import profile_parquet

    store = ctx.store
    with tempfile.TemporaryDirectory() as tmp:

        def local_parts(stage: Committed | None, source: str) -> list[str]:
            if stage is None:
                return []
            return [
                str(p)
                for p in store.local_copies(store.manifest(stage.manifest).parts(source), Path(tmp) / source)
            ]

        inventory = profile_parquet(
            local_parts(items, "Z30"), local_parts(patrons, "Z305"), local_parts(fines, "Z31")
        )
        rows = inventory.rows()
        csv_path = Path(tmp) / "code_inventory.csv"
        with open(csv_path, "w", encoding="utf-8", newline="") as fh:
            inventory.to_csv(fh)
        prefix = ctx.scope.prefix(PROFILE, "codes")
        files = [
            store.put_file(prefix + "code_inventory.csv", csv_path, records=len(rows), source="codes"),
            store.put_bytes(
                prefix + "code_inventory.json",
                inventory.to_json().encode("utf-8"),
                content_type="application/json",
                records=len(rows),
                source="codes",
                kind="part",
            ),
        ]
    by_type: dict[str, int] = {}
    for row in rows:
        by_type[row["code_type"]] = by_type.get(row["code_type"], 0) + 1
    uri = store.commit(ctx.scope, PROFILE, "codes", files, extra={"distinct_codes_by_type": by_type})
    return Committed(
        entity="codes",
        stage=PROFILE,
        manifest=uri,
        records=len(rows),
        extra={"inventory_csv": store.uri(files[0].key), "inventory_json": store.uri(files[1].key)},
    )
