"""What changed in Aleph between the signed-off baseline's extract and the cutover extract.

The library signed off a fix-cycle iteration built from one extract; the cutover delivers a
later one. Before go/no-go the team wants to know what it has not seen: per entity, the records
new, changed and deleted since, and the codes that came into use since (with whether the
form maps them: a code added after the test load must be in the cutover form).

Records are compared exactly as the nightly delta compares a night with a full extract: each
source's raw parts become a baseline (``aleph.snapshot.previous_baseline``: an ALEPHSEQ record's
hash over its exported lines, a Z-table row's over its extracted values) and
``aleph.delta.compare`` gives the new, changed and deleted keys. An entity is compared when both
extracts committed its raw stage; one committed by only one of them is listed as not compared.
Per entity the keys go to ``changes/<entity>/`` (one Parquet file per source, the nightly delta's
``CHANGES_SCHEMA``) under a manifest with the counts; ``previous - deleted + new == records`` is
checked per source before anything is committed.

One source's two baselines (key, hash, stamp per record) are held in memory at a time, as the
nightly delta does; the records themselves are streamed.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from aleph2alma.aleph import snapshot
from aleph2alma.aleph.delta import ChangeCounts, compare, layout_of
from aleph2alma.aleph.extract import SEQ_ENTITIES, all_entities
from aleph2alma.alma.form_spec import MAPPING_TABS
from aleph2alma.cutover import Page, Section, code_inventory, code_text, write_report
from aleph2alma.phases.context import PhaseContext
from aleph2alma.profile import CodeInventory
from aleph2alma.refs import Ref
from aleph2alma.runs import RunRef
from aleph2alma.stages import RAW
from aleph2alma.storage import StoredFile, part_name

CHANGES = "changes"
COUNTED = ("previous", "records", "new", "changed", "deleted")
_TAB_OF = {spec.code_type: spec.name for spec in MAPPING_TABS}


class EntityChanges(Ref):
    entity: str
    previous: int
    """Records in the baseline extract."""
    records: int
    """Records in the cutover extract."""
    new: int
    changed: int
    deleted: int
    by_source: dict[str, dict[str, int]]
    """Source (BIB/HOL library, Z-table) → the same counts."""
    manifest: str
    """``changes/<entity>/_MANIFEST.json``: one Parquet file of keys per source."""


class NewCode(Ref):
    code_type: str
    code: list[str]
    records: int
    """Records carrying it in the cutover extract."""
    tab: str
    """The form tab that maps this code type."""
    mapped: bool


class ChangesSinceBaseline(Ref):
    baseline_extract: RunRef
    cutover_extract: RunRef
    entities: dict[str, EntityChanges]
    not_compared: dict[str, str]
    """Entity → why it was not compared (committed by only one of the extracts)."""
    totals: dict[str, int]
    new_codes: list[NewCode]
    report_html: str
    report_json: str

    @property
    def unmapped_new_codes(self) -> list[NewCode]:
        return [c for c in self.new_codes if not c.mapped]


def _source_changes(
    ctx: PhaseContext, entity: str, source: str, before: list[StoredFile], after: list[StoredFile], tmp: Path
) -> tuple[ChangeCounts, StoredFile]:
    kind = "alephseq" if entity in SEQ_ENTITIES else "table"
    layout = layout_of(entity, source, kind)
    store = ctx.store
    previous = snapshot.previous_baseline(layout, store.local_copies(before, tmp / "baseline" / source))
    current = snapshot.previous_baseline(layout, store.local_copies(after, tmp / "cutover" / source))
    changes = compare(previous, current, layout.key)
    counts = ChangeCounts.of(changes, previous.num_rows, current.num_rows, layout.stamped)
    counts.check(f"changes since the baseline, {entity} {source}")
    path = tmp / f"{source}-changes.parquet"
    pq.write_table(changes, path, compression="zstd")
    stored = store.put_file(
        ctx.scope.prefix(CHANGES, entity) + part_name(source, 0, "parquet"),
        path,
        records=changes.num_rows,
        source=source,
    )
    return counts, stored


def _entity_changes(ctx: PhaseContext, entity: str, baseline: RunRef, cutover: RunRef) -> EntityChanges:
    store = ctx.store
    before = store.stage_manifest(ctx.scope_of(baseline), RAW, entity)
    after = store.stage_manifest(ctx.scope_of(cutover), RAW, entity)
    sources = sorted({f.source for f in before.parts()} | {f.source for f in after.parts()})
    by_source: dict[str, dict[str, int]] = {}
    files: list[StoredFile] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        for source in sources:
            counts, stored = _source_changes(
                ctx, entity, source, before.parts(source), after.parts(source), Path(tmp_dir)
            )
            by_source[source] = {k: getattr(counts, k) for k in COUNTED}
            files.append(stored)
    totals = {k: sum(c[k] for c in by_source.values()) for k in COUNTED}
    uri = store.commit(
        ctx.scope,
        CHANGES,
        entity,
        files,
        extra={
            **totals,
            "by_source": by_source,
            "baseline_extract": str(baseline),
            "cutover_extract": str(cutover),
        },
    )
    return EntityChanges(entity=entity, by_source=by_source, manifest=uri, **totals)


def new_codes(ctx: PhaseContext, before: CodeInventory, after: CodeInventory) -> list[NewCode]:
    """Codes in use in ``after`` that ``before`` did not have, and whether the form maps each
    (``MigrationForm.unmapped_counts`` over just those codes)."""
    appeared = CodeInventory(
        {
            code_type: Counter(
                {code: n for code, n in counter.items() if code not in before.counts[code_type]}
            )
            for code_type, counter in after.counts.items()
        }
    )
    unmapped = {(tab, code) for tab, codes in ctx.form.unmapped_counts(appeared).items() for code, _ in codes}
    found = []
    for code_type in sorted(appeared.counts):
        tab = _TAB_OF.get(code_type, "")
        for code, n in sorted(appeared.counts[code_type].items(), key=lambda kv: (-kv[1], kv[0])):
            mapped = bool(tab) and (tab, code) not in unmapped
            found.append(NewCode(code_type=code_type, code=list(code), records=n, tab=tab, mapped=mapped))
    return found


def changes_since_baseline(
    ctx: PhaseContext, baseline_extract: RunRef, cutover_extract: RunRef
) -> ChangesSinceBaseline:
    """Per entity both extracts committed, the records new, changed and deleted since the baseline
    extract (keys under ``changes/<entity>/``); the codes that came into use since; the report."""
    before_codes = code_inventory(ctx, baseline_extract)
    after_codes = code_inventory(ctx, cutover_extract)
    store = ctx.store
    entities: dict[str, EntityChanges] = {}
    not_compared: dict[str, str] = {}
    for entity in all_entities():
        has = {
            run: store.stage_committed(ctx.scope_of(run), RAW, entity)
            for run in (baseline_extract, cutover_extract)
        }
        if all(has.values()):
            entities[entity] = _entity_changes(ctx, entity, baseline_extract, cutover_extract)
        elif any(has.values()):
            missing = baseline_extract if not has[baseline_extract] else cutover_extract
            not_compared[entity] = f"extract {missing} did not commit raw/{entity}"
    appeared = new_codes(ctx, before_codes, after_codes)
    totals = {k: sum(getattr(e, k) for e in entities.values()) for k in COUNTED}
    unmapped = [c for c in appeared if not c.mapped]
    page = Page(
        title="Changes since the signed-off baseline",
        state="attention" if unmapped or not_compared else "ok",
        status="UNMAPPED NEW CODES" if unmapped else "CHANGES LISTED",
        summary=f"{totals['new']:,} new · {totals['changed']:,} changed · {totals['deleted']:,} deleted "
        f"records; {len(appeared)} new code(s), {len(unmapped)} not mapped by the form.",
        points=[
            *(
                f"{c.code_type} {code_text(c.code)} ({c.records} records): add it to the form's {c.tab} tab"
                for c in unmapped
            ),
            *(f"{entity} not compared: {why}" for entity, why in not_compared.items()),
        ],
        meta={"baseline extract": str(baseline_extract), "cutover extract": str(cutover_extract)},
        sections=[
            Section(
                "entities",
                "Records",
                ["entity", *COUNTED],
                [{"entity": e.entity, **{k: getattr(e, k) for k in COUNTED}} for e in entities.values()],
                numeric=COUNTED,
                note="previous: records in the baseline extract; records: in the cutover extract. "
                "Each changes/<entity>/ manifest lists the keys, per source.",
            ),
            Section(
                "new-codes",
                "Codes in use since the baseline",
                ["code type", "code", "records", "form tab", "mapped"],
                [
                    {
                        "code type": c.code_type,
                        "code": code_text(c.code),
                        "records": c.records,
                        "form tab": c.tab,
                        "mapped": "yes" if c.mapped else "NO",
                    }
                    for c in appeared
                ],
                numeric=("records",),
                empty="No code came into use since the baseline extract.",
            ),
        ],
    )
    data = {
        "baseline_extract": str(baseline_extract),
        "cutover_extract": str(cutover_extract),
        "entities": {name: e.model_dump() for name, e in entities.items()},
        "not_compared": not_compared,
        "totals": totals,
        "new_codes": [c.model_dump() for c in appeared],
    }
    html, report = write_report(ctx, CHANGES, page, data)
    return ChangesSinceBaseline(
        baseline_extract=baseline_extract,
        cutover_extract=cutover_extract,
        entities=entities,
        not_compared=not_compared,
        totals=totals,
        new_codes=appeared,
        report_html=html,
        report_json=report,
    )
