"""Steps of the transform phase: raw Aleph extracts → Alma-ready files, part by part.

Reads the committed ``raw/`` manifests of an extract run and writes, under its own run
scope, ``alma/<entity>/`` (what Alma loads), ``index/<entity>/`` (small link tables the
cross-record rules need), ``issues/<entity>/`` (validation issues found on the way) and the
rejects of every record that could not go on, with id and reason.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aleph2alma.accounting import Tally
from aleph2alma.errors import PermanentError
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Committed, PartRef, PartResult
from aleph2alma.rejects import RejectLog
from aleph2alma.runs import RunRef
from aleph2alma.stages import PartOutput, commit_alma, index_table, planned_results, raw_table
from aleph2alma.state import extract_to_read
from aleph2alma.storage import ArtifactStore
from aleph2alma.validate.issues import IssueLog

BIBS_WITH_ITEMS = "bibs_with_items"


class TransformInputError(PermanentError):
    """The extract to transform, or a setting it needs, is missing."""


# --- inputs -------------------------------------------------------------------------------


def extract_of(ctx: PhaseContext, extract_run: str) -> RunRef:
    """The extract the operator named, else the latest full one; its stages must be committed."""
    extract = extract_to_read(ctx.store, ctx.migration_id, extract_run)
    for entity in ("bibs", "holdings", "items"):
        if not ctx.store.stage_committed(ctx.scope_of(extract), "raw", entity):
            raise TransformInputError(
                f"{extract} has no committed raw/{entity}: it did not finish, or did not "
                "extract everything; give a complete extract run"
            )
    return extract


def parts_of(ctx: PhaseContext, extract: RunRef, entity: str, source: str | None = None) -> list[PartRef]:
    """The raw parts of ``entity`` in the extract, one per mapped task."""
    manifest = ctx.store.stage_manifest(ctx.scope_of(extract), "raw", entity)
    return [
        PartRef(entity=entity, source=p.source, index=i, key=p.key, sha256=p.sha256, records=p.records)
        for i, p in enumerate(manifest.parts(source))
    ]


# --- MARC parts ---------------------------------------------------------------------------


def _library_flavour(ctx: PhaseContext, library: str) -> str:
    for lib in ctx.settings.bib_libraries:
        if lib.code == library:
            return lib.flavour
    raise TransformInputError(
        f"BIB library {library} is not in migration.toml; known: "
        f"{', '.join(lib.code for lib in ctx.settings.bib_libraries)}"
    )


def existing_bibs(store: ArtifactStore, bibs: Committed, tmp: Path) -> dict[tuple[str, str], bool]:
    """(library, sysno) of every bib in the extract → whether the transform rejected it."""
    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA

    index = index_table(store, bibs, tmp, BIB_INDEX_SCHEMA)
    return dict(
        zip(
            zip(index["library"].to_pylist(), index["sysno"].to_pylist(), strict=True),
            index["rejected"].to_pylist(),
            strict=True,
        )
    )


def transform_marc_part(ctx: PhaseContext, part: PartRef, bibs_stage: Committed | None = None) -> PartResult:
    """One raw ALEPHSEQ part → ISO 2709 (bibs or holdings), index, issues, rejects.

    Holdings need the committed bibs: what hangs off a missing or rejected bib is withheld.
    """
    from aleph2alma.aleph.alephseq import TRUNCATED, read_alephseq
    from aleph2alma.marc import bibs, holdings
    from aleph2alma.validate.attachment import Withheld, attachable_holdings
    from aleph2alma.validate.exports import empty_export_issue, malformed_line_issues

    settings, entity, source = ctx.settings, part.entity, part.source
    with tempfile.TemporaryDirectory() as tmp_dir:
        out = PartOutput(Path(tmp_dir), entity, source, part.index)
        raw = ctx.store.download(part.key, out.tmp / "raw.seq", part.sha256)
        rows: list[dict[str, Any]] = []
        withheld = Withheld()
        with (
            open(out.path("out", "mrc"), "wb") as mrc,
            open(out.path("rejects", "jsonl"), "w") as rej,
            open(out.path("issues", "jsonl"), "w") as iss,
        ):
            rejects, issues = RejectLog(rej), IssueLog(iss)
            # Malformed lines become issues (they reach the validation report and its thresholds);
            # a record cut at the end of the export is rejected (truncated_record) and counted in.
            records = read_alephseq(
                raw,
                source_name=Path(part.key).name,
                entity=entity,
                rejects=rejects,
                malformed=malformed_line_issues(issues, source),
            )
            if entity == "bibs":
                options = bibs.BibOptions(
                    library=source,
                    flavour=_library_flavour(ctx, source),  # type: ignore[arg-type]
                    qualified_ids=settings.qualified_bib_ids,
                )
                stats: Any = bibs.transform_bibs(records, options, mrc, rejects, issues, index=rows)
                schema = bibs.BIB_INDEX_SCHEMA
            else:
                if bibs_stage is None:
                    raise TransformInputError("holdings are transformed after bibs: give the committed bibs")
                known = existing_bibs(ctx.store, bibs_stage, out.tmp / "bibs")
                attachable = attachable_holdings(records, source, known, rejects, issues, withheld)
                stats = holdings.transform_holdings(
                    attachable,
                    holdings.HoldingsOptions(library=source, qualified_bib_ids=settings.qualified_bib_ids),
                    mrc,
                    rejects,
                    index=rows,
                    issues=issues,
                )
                schema = holdings.HOLDINGS_INDEX_SCHEMA
            truncated = rejects.counts[TRUNCATED]
            if part.index == 0 and stats.records_in + withheld.count + truncated == 0:
                # The first part of an export always holds its first record: none means none at all.
                issues.add(empty_export_issue(entity, source, Path(part.key).name, raw.stat().st_size))
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out.path("index", "parquet"))
        tally = Tally.of(stats.records_in + withheld.count + truncated, stats.records_out, rejects.counts)
        return out.upload(ctx, "mrc", tally)


# --- items embedded in the bibs (import-profile loads) -----------------------------------


def bib_parts(ctx: PhaseContext, bibs: Committed) -> list[PartRef]:
    """The delivered bib parts of a committed ``alma/bibs`` stage, numbered per library."""
    parts: list[PartRef] = []
    seen: Counter[str] = Counter()
    for f in sorted(ctx.store.manifest(bibs.manifest).files, key=lambda f: f.key):
        if f.kind == "part":
            parts.append(
                PartRef(
                    entity="bibs",
                    source=f.source,
                    index=seen[f.source],
                    key=f.key,
                    sha256=f.sha256,
                    records=f.records,
                )
            )
            seen[f.source] += 1
    return parts


def embed_items_part(ctx: PhaseContext, part: PartRef, items: Committed) -> PartResult:
    """One delivered bib part → the same bibs with one ``items_in_bib_field`` field per item."""
    import pymarc

    from aleph2alma.alma.items import ITEM_SCHEMA, ITEMS_BY_BIB_KEYS, items_by_bib
    from aleph2alma.marc.bibs import embed_items

    library, settings = part.source, ctx.settings
    columns = [
        "bib_library",
        "bib_sysno",
        *("internal_note_1" if k == "internal_note" else k for k in ITEMS_BY_BIB_KEYS),
    ]
    with tempfile.TemporaryDirectory() as tmp_dir:
        out = PartOutput(Path(tmp_dir), BIBS_WITH_ITEMS, library, part.index)
        bibs_file = ctx.store.download(part.key, out.tmp / "bibs.mrc", part.sha256)
        # Only the items of this part's bibs: the library's millions at once took 4.3 GB per task.
        sysnos = _bib_sysnos(ctx, part, out.tmp)
        table = index_table(
            ctx.store,
            items,
            out.tmp,
            ITEM_SCHEMA,
            columns=columns,
            filters=(pc.field("bib_library") == library) & pc.field("bib_sysno").isin(sysnos),
        )
        by_bib = items_by_bib(table)
        with open(bibs_file, "rb") as src, open(out.path("out", "mrc"), "wb") as mrc:
            reader = pymarc.MARCReader(src, to_unicode=True, force_utf8=True)
            stats = embed_items(
                (r for r in reader if r is not None),
                library,
                settings.items_in_bib_field,
                lambda sysno: by_bib.get((library, sysno), []),
                mrc,
                settings.qualified_bib_ids,
            )
        return out.upload(
            ctx,
            "mrc",
            Tally(stats.records, stats.records),
            extra={"items_embedded": stats.items_embedded, "not_embedded": list(stats.not_embedded)},
        )


def _bib_sysnos(ctx: PhaseContext, part: PartRef, tmp: Path) -> pa.Array:
    """The system numbers of a delivered bib part's records, from the index written beside it."""
    from aleph2alma.stages import INDEX

    key = ctx.scope.prefix(INDEX, "bibs") + Path(part.key).stem + ".parquet"
    index = pq.read_table(ctx.store.download(key, tmp / "bib_index.parquet"), columns=["sysno"])
    return index.column("sysno").combine_chunks().cast(pa.string())


def commit_bibs_with_items(
    ctx: PhaseContext, results: Iterable[PartResult | None], planned: Iterable[PartRef] | None = None
) -> Committed:
    """The ``alma/bibs_with_items`` stage, with how many items were embedded and which bibs could
    not take theirs (every ``planned`` part must have its result)."""
    planned = None if planned is None else list(planned)
    parts = planned_results(
        BIBS_WITH_ITEMS, results, None if planned is None else [(p.source, p.index) for p in planned]
    )
    extra = {
        "items_embedded": sum(r.extra["items_embedded"] for r in parts),
        "not_embedded": sorted(i for r in parts for i in r.extra["not_embedded"]),
    }
    return commit_alma(ctx, BIBS_WITH_ITEMS, parts, extra=extra, planned=planned)


# --- Z-table transforms -------------------------------------------------------------------


def excluded_records(store: ArtifactStore, key: str) -> dict[str, dict[str, str]]:
    """Per entity, the record ids the cross-record rules keep out of the delivery, with the rule."""
    return dict(json.loads(store.get_bytes(key)))


def transform_items_part(ctx: PhaseContext, part: PartRef, excluded_key: str) -> PartResult:
    """One Z30 part → Alma item rows (CSV and index), linked to their bibs through the holdings
    links validation cut for this part (``aleph.links.hol_links_key``) or, failing those, Z103."""
    from aleph2alma.aleph.links import hol_links_key
    from aleph2alma.alma.items import (
        HOL_LINK_DICTIONARY,
        read_z30,
        transform_items,
        write_items_csv,
        write_items_parquet,
    )

    with tempfile.TemporaryDirectory() as tmp_dir:
        out = PartOutput(Path(tmp_dir), "items", "Z30", part.index)
        z30 = read_z30(ctx.store.download(part.key, out.tmp / "z30.parquet", part.sha256))
        links_file = ctx.store.download(hol_links_key(ctx.scope, part.index), out.tmp / "hol_links.parquet")
        links = pq.read_table(links_file, read_dictionary=HOL_LINK_DICTIONARY)
        excluded = excluded_records(ctx.store, excluded_key).get("items", {})
        adm_links = _adm_links(ctx, out.tmp)
        with open(out.path("rejects", "jsonl"), "w") as rej:
            rejects = RejectLog(rej)
            items, stats = transform_items(
                z30, ctx.form, excluded, rejects, hol_links=links, adm_links=adm_links
            )
        write_items_csv(items, out.path("out", "csv"))
        write_items_parquet(items, out.path("index", "parquet"))
        return out.upload(ctx, "csv", Tally.of(stats.records_in, stats.records_out, rejects.counts))


def _adm_links(ctx: PhaseContext, tmp: Path) -> pa.Table | None:
    """The ADM → BIB links validation found for items with no HOL link (None: there are none)."""
    from aleph2alma.aleph.links import adm_links_key

    key = adm_links_key(ctx.scope)
    if not ctx.store.exists(key):
        return None
    return pq.read_table(ctx.store.download(key, tmp / "adm_links.parquet"))


def transform_patrons(ctx: PhaseContext, extract: RunRef, excluded_key: str, scrub_emails: bool) -> Committed:
    from aleph2alma.alma.users import USER_COLUMNS, UserOptions, write_users_xml

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        out = PartOutput(tmp, "patrons", "users", 0)
        tables = {
            t: raw_table(ctx, extract, "patrons", t, tmp, columns) for t, columns in USER_COLUMNS.items()
        }
        excluded = excluded_records(ctx.store, excluded_key).get("patrons", {})
        with open(out.path("out", "xml"), "wb") as xml, open(out.path("rejects", "jsonl"), "w") as rej:
            rejects = RejectLog(rej)
            stats = write_users_xml(
                tables["Z303"],
                tables["Z304"],
                tables["Z305"],
                tables["Z308"],
                ctx.form,
                xml,
                excluded,
                rejects,
                UserOptions(scrub_emails=scrub_emails, as_of=ctx.as_of),
            )
        result = out.upload(ctx, "xml", Tally.of(stats.records_in, stats.records_out, rejects.counts))
    return commit_alma(ctx, "patrons", [result], extra={"emails_scrubbed": stats.emails_scrubbed})


def transform_fulfillment(
    ctx: PhaseContext, extract: RunRef, excluded_key: str, items: Committed
) -> list[Committed]:
    """Active loans, requests and open fines → JSON lines for the Alma API loader."""
    from aleph2alma.alma import fulfillment
    from aleph2alma.alma.items import ITEM_SCHEMA
    from aleph2alma.alma.users import patron_primary_ids

    excluded = excluded_records(ctx.store, excluded_key)
    committed = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        z303 = raw_table(ctx, extract, "patrons", "Z303", tmp, ["Z303_REC_KEY", "Z303_PRIMARY_ID"])
        patron_ids = patron_primary_ids(z303, excluded.get("patrons", {}))
        raw = {
            entity: raw_table(ctx, extract, entity, table, tmp)
            for entity, table in (("loans", "Z36"), ("requests", "Z37"), ("fines", "Z31"))
        }
        delivered = index_table(ctx.store, items, tmp, ITEM_SCHEMA, columns=["aleph_item_key", "barcode"])
        barcodes = fulfillment.item_barcodes(delivered, raw["loans"], raw["requests"], raw["fines"])
        del delivered
        for entity, data in raw.items():
            out = PartOutput(tmp / f"out-{entity}", entity, entity, 0)
            out.tmp.mkdir()
            with open(out.path("out", "jsonl"), "w") as dst, open(out.path("rejects", "jsonl"), "w") as rej:
                rejects = RejectLog(rej)
                mine = excluded.get(entity, {})
                if entity == "loans":
                    stats = fulfillment.transform_loans(
                        data, patron_ids, barcodes, ctx.form, mine, rejects, dst
                    )
                elif entity == "requests":
                    stats = fulfillment.transform_requests(
                        data, patron_ids, barcodes, ctx.form, mine, rejects, dst
                    )
                else:
                    stats = fulfillment.transform_fines(
                        data, patron_ids, ctx.form, mine, rejects, dst, barcodes=barcodes
                    )
            result = out.upload(ctx, "jsonl", Tally.of(stats.records_in, stats.records_out, rejects.counts))
            committed.append(commit_alma(ctx, entity, [result]))
    return committed
