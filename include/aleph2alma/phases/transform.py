"""Steps of the transform phase: raw Aleph extracts → Alma-ready files, part by part.

Reads the committed ``raw/`` manifests of a ``migration_extract`` run and writes, under its
own run scope, ``alma/<entity>/`` (what Alma loads), ``index/<entity>/`` (small link tables
the cross-record rules need), ``issues/<entity>/`` (validation issues found on the way) and
the rejects of every record that could not go on, with id and reason. Every step returns
references and counts only.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aleph2alma.rejects import Reject, RejectLog
from aleph2alma.settings import MigrationSettings
from aleph2alma.storage import ArtifactStore, Manifest, RunScope, StoredFile, part_name
from aleph2alma.validate.issues import Issue, IssueLog

EXTRACT_DAG = "migration_extract"
ALMA = "alma"
INDEX = "index"
ISSUES = "issues"
LATEST_EXTRACT_KEY = "{migration_id}/state/latest/migration_extract.json"


class TransformInputError(RuntimeError):
    """The extract run to transform is missing or not committed."""


# --- inputs -------------------------------------------------------------------------------

def latest_extract_run(store: ArtifactStore, migration_id: str) -> str:
    key = LATEST_EXTRACT_KEY.format(migration_id=migration_id)
    if not store.exists(key):
        raise TransformInputError(f"no successful migration_extract run recorded for {migration_id!r}; "
                                  "run migration_extract first or give extract_run_id")
    return str(json.loads(store.get_bytes(key))["run_id"])


def raw_manifest(store: ArtifactStore, migration_id: str, extract_run_id: str, entity: str) -> Manifest:
    """The committed raw manifest of an extract: ``<run id>`` of migration_extract, or
    ``<dag id>/<run id>`` of another DAG that commits a raw stage (a fix-cycle iteration)."""
    dag_id, _, run_id = extract_run_id.rpartition("/")
    scope = RunScope(migration_id, dag_id or EXTRACT_DAG, run_id)
    return store.manifest(scope.prefix("raw", entity) + "_MANIFEST.json")


def plan_transform(store: ArtifactStore, migration_id: str, extract_run_id: str) -> dict[str, Any]:
    """The extract run to read and its parts, one list per mapped task."""
    run_id = extract_run_id or latest_extract_run(store, migration_id)

    def parts(entity: str, source: str | None = None) -> list[dict[str, Any]]:
        manifest = raw_manifest(store, migration_id, run_id, entity)
        return [{"entity": entity, "source": p.source, "key": p.key, "sha256": p.sha256,
                 "index": i, "extract_run_id": run_id} for i, p in enumerate(manifest.parts(source))]

    return {"extract_run_id": run_id, "bibs": parts("bibs"), "holdings": parts("holdings"),
            "items": parts("items", "Z30")}


def download_parts(store: ArtifactStore, manifest: Manifest, source: str, tmp: Path) -> list[Path]:
    return [store.download(p.key, tmp / Path(p.key).name, p.sha256) for p in manifest.parts(source)]


def read_table(store: ArtifactStore, manifest: Manifest, source: str, tmp: Path,
               columns: list[str] | None = None) -> pa.Table:
    paths = download_parts(store, manifest, source, tmp)
    tables = [pq.read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables) if tables else pa.table({})


# --- outputs ------------------------------------------------------------------------------

@dataclass
class PartOutput:
    """Local files of one transformed part, uploaded together."""

    tmp: Path
    entity: str
    source: str
    index: int

    def path(self, kind: str, ext: str) -> Path:
        return self.tmp / f"{kind}.{ext}"

    def upload(self, store: ArtifactStore, scope: RunScope, ext: str, records_in: int, records_out: int,
               rejected: int, rejected_by_reason: Mapping[str, int]) -> dict[str, Any]:
        name = part_name(self.source, self.index, ext)
        files = [store.put_file(scope.prefix(ALMA, self.entity) + name, self.path("out", ext),
                                records=records_out, rejected=rejected, source=self.source)]
        for kind, stage, ext2 in (("rejects", ALMA, "jsonl"), ("issues", ISSUES, "jsonl"),
                                  ("index", INDEX, "parquet")):
            local = self.path(kind, ext2)
            if local.exists() and local.stat().st_size:
                key = scope.prefix(stage, self.entity) + part_name(self.source, self.index, ext2)
                if kind == "rejects":
                    key = scope.prefix(ALMA, self.entity) + "rejects/" + part_name(self.source, self.index, ext2)
                files.append(store.put_file(key, local, source=self.source, kind=kind,
                                            records=_lines(local) if ext2 == "jsonl" else 0))
        return {"entity": self.entity, "source": self.source, "index": self.index, "records_in": records_in,
                "rejected_by_reason": dict(rejected_by_reason), "files": [f.to_dict() for f in files]}


def _lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def commit_alma(store: ArtifactStore, scope: RunScope, entity: str, results: Iterable[dict[str, Any]],
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The entity's ``alma/`` manifest: files, in/out/rejected and rejects by reason."""
    mine = [r for r in results if r and r["entity"] == entity]
    files = [StoredFile(**f) for r in mine for f in r["files"]]
    by_reason: Counter[str] = Counter()
    for r in mine:
        by_reason.update(r["rejected_by_reason"])
    records_in = sum(r["records_in"] for r in mine)
    uri = store.commit(scope, ALMA, entity, files,
                       extra={"records_in": records_in, "rejected_by_reason": dict(sorted(by_reason.items())),
                              **(extra or {})})
    manifest = store.manifest(uri)
    if records_in != manifest.records + manifest.rejected:
        raise RuntimeError(f"{entity}: {records_in} in ≠ {manifest.records} out + {manifest.rejected} rejected")
    return {"entity": entity, "stage": ALMA, "manifest": uri, "records": manifest.records,
            "records_in": records_in, "rejected": manifest.rejected}


def index_table(store: ArtifactStore, manifest_uri: str, tmp: Path, schema: pa.Schema,
                columns: list[str] | None = None, read_dictionary: list[str] | None = None) -> pa.Table:
    """The concatenated index parts of a manifest as ``schema``: only ``columns`` of it when given,
    the ``read_dictionary`` columns dictionary-encoded (see ``index_schema``)."""
    manifest = store.manifest(manifest_uri)
    paths = [store.download(f.key, tmp / f"index-{i}.parquet", f.sha256)
             for i, f in enumerate(manifest.files) if f.kind == "index"]
    schema = index_schema(schema, columns, read_dictionary)
    tables = [pq.read_table(p, columns=columns, read_dictionary=read_dictionary) for p in paths]
    return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()


def index_schema(schema: pa.Schema, columns: list[str] | None = None,
                 read_dictionary: list[str] | None = None) -> pa.Schema:
    """``schema`` narrowed to ``columns`` (when given), with the ``read_dictionary`` columns as dictionaries."""
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    for name in read_dictionary or []:
        at = schema.get_field_index(name)
        schema = schema.set(at, schema.field(at).with_type(pa.dictionary(pa.int32(), schema.field(at).type)))
    return schema


def rejected_sysnos(store: ArtifactStore, manifest_uri: str, reason: str) -> list[str]:
    """System numbers of the records a committed ``alma/`` stage rejected for ``reason``."""
    rows = (json.loads(line) for f in store.manifest(manifest_uri).files if f.kind == "rejects"
            for line in store.iter_lines(f.key))
    return [row["record_id"].rpartition(":")[2] for row in rows if row["reason"] == reason]


def issue_keys(store: ArtifactStore, manifest_uris: Iterable[str]) -> list[str]:
    return [f.key for uri in manifest_uris for f in store.manifest(uri).files if f.kind == "issues"]


# --- MARC parts ---------------------------------------------------------------------------

def _library_flavour(settings: MigrationSettings, library: str) -> str:
    for lib in settings.bib_libraries:
        if lib.code == library:
            return lib.flavour
    raise TransformInputError(f"BIB library {library} is not in migration.toml; known: "
                              f"{', '.join(lib.code for lib in settings.bib_libraries)}")


def existing_bibs(store: ArtifactStore, bibs_manifest: str, tmp: Path) -> dict[tuple[str, str], bool]:
    """(library, sysno) of every bib in the extract → whether the transform rejected it."""
    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA

    index = index_table(store, bibs_manifest, tmp, BIB_INDEX_SCHEMA)
    return dict(zip(zip(index["library"].to_pylist(), index["sysno"].to_pylist(), strict=True),
                    index["rejected"].to_pylist(), strict=True))


def _without_orphans(records: Iterator[Any], library: str, bibs: Mapping[tuple[str, str], bool],
                     rejects: RejectLog, issues: IssueLog, counted: list[int]) -> Iterator[Any]:
    """Holdings whose LKR names a bib that does not exist (rule orphan_holdings), or one the
    transform rejected (``bib_rejected``: Alma could not attach them), are not delivered."""
    from aleph2alma.marc.holdings import bib_link

    for rec in records:
        link = bib_link(rec.record)
        rejected = None if link is None else bibs.get(link)
        if link is None or rejected is False:
            yield rec
            continue
        counted[0] += 1
        record_id, bib = f"{library}:{rec.sysno}", f"{link[0]}:{link[1]}"
        if rejected is None:
            reason, detail = "orphan_holdings", f"LKR to {bib}, which does not exist"
            issues.add(Issue(reason, "holdings", record_id, detail))
        else:
            reason, detail = "bib_rejected", f"its bib {bib} was rejected (see the bib rejects)"
        rejects.add(Reject("holdings", record_id, reason, detail=detail, source=rec.source, line_no=rec.line_no))


def transform_marc_part(store: ArtifactStore, scope: RunScope, settings: MigrationSettings,
                        part: dict[str, Any], bibs_manifest: str | None = None) -> dict[str, Any]:
    """One raw ALEPHSEQ part → ISO 2709 (bibs or holdings), index, issues, rejects.

    Holdings need ``bibs_manifest``: a holdings record whose bib does not exist is rejected.
    """
    from aleph2alma.aleph.alephseq import read_alephseq
    from aleph2alma.marc import bibs, holdings

    entity, source = part["entity"], part["source"]
    with tempfile.TemporaryDirectory() as tmp_dir:
        out = PartOutput(Path(tmp_dir), entity, source, part["index"])
        orphans = [0]
        raw = store.download(part["key"], out.tmp / "raw.seq", part["sha256"])
        rows: list[dict[str, Any]] = []
        with (open(out.path("out", "mrc"), "wb") as mrc, open(out.path("rejects", "jsonl"), "w") as rej,
              open(out.path("issues", "jsonl"), "w") as iss):
            rejects, issues = RejectLog(rej), IssueLog(iss)
            # Malformed lines were reported at extraction; here only whole records count.
            records = read_alephseq(raw, source_name=Path(part["key"]).name, entity=entity)
            if entity == "bibs":
                options = bibs.BibOptions(library=source, flavour=_library_flavour(settings, source),  # type: ignore[arg-type]
                                          qualified_ids=settings.qualified_bib_ids)
                stats: Any = bibs.transform_bibs(records, options, mrc, rejects, issues, index=rows)
                schema = bibs.BIB_INDEX_SCHEMA
            else:
                if bibs_manifest is None:
                    raise TransformInputError("holdings are transformed after bibs: give the bibs manifest")
                known = existing_bibs(store, bibs_manifest, out.tmp / "bibs")
                stats = holdings.transform_holdings(_without_orphans(records, source, known, rejects, issues, orphans),
                                                    holdings.HoldingsOptions(
                                                        library=source, qualified_bib_ids=settings.qualified_bib_ids), mrc,
                                                    rejects, index=rows, issues=issues)
                stats.records_in += orphans[0]
                stats.rejected += orphans[0]
                schema = holdings.HOLDINGS_INDEX_SCHEMA
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out.path("index", "parquet"))
        return out.upload(store, scope, "mrc", stats.records_in, stats.records_out, stats.rejected, rejects.counts)



# --- items embedded in the bibs (import-profile loads) -----------------------------------

BIBS_WITH_ITEMS = "bibs_with_items"


def bib_parts(store: ArtifactStore, bibs_manifest: str) -> list[dict[str, Any]]:
    """The delivered bib parts of a committed ``alma/bibs`` manifest, numbered per library."""
    parts: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for f in sorted(store.manifest(bibs_manifest).files, key=lambda f: f.key):
        if f.kind == "part":
            parts.append({"key": f.key, "sha256": f.sha256, "source": f.source, "index": seen[f.source],
                          "records": f.records})
            seen[f.source] += 1
    return parts


def _items_of_library(store: ArtifactStore, items_manifest: str, library: str, tmp: Path) -> pa.Table:
    """The library's items (the embedded-item columns) from the committed items index."""
    from aleph2alma.alma.items import ITEM_SCHEMA, ITEMS_BY_BIB_KEYS

    columns = ["bib_library", "bib_sysno", *("internal_note_1" if k == "internal_note" else k
                                             for k in ITEMS_BY_BIB_KEYS)]
    manifest = store.manifest(items_manifest)
    tables = [pq.read_table(store.download(f.key, tmp / f"items-{i}.parquet", f.sha256), columns=columns,
                            filters=[("bib_library", "=", library)])
              for i, f in enumerate(manifest.files) if f.kind == "index"]
    schema = pa.schema([ITEM_SCHEMA.field(c) for c in columns])
    return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()


def embed_items_part(store: ArtifactStore, scope: RunScope, settings: MigrationSettings, part: dict[str, Any],
                     items_manifest: str) -> dict[str, Any]:
    """One delivered bib part → the same bibs with one ``tag`` field per item."""
    import pymarc

    from aleph2alma.alma.items import items_by_bib
    from aleph2alma.marc.bibs import embed_items

    library = part["source"]
    with tempfile.TemporaryDirectory() as tmp_dir:
        out = PartOutput(Path(tmp_dir), BIBS_WITH_ITEMS, library, part["index"])
        bibs_file = store.download(part["key"], out.tmp / "bibs.mrc", part["sha256"])
        by_bib = items_by_bib(_items_of_library(store, items_manifest, library, out.tmp))
        with open(bibs_file, "rb") as src, open(out.path("out", "mrc"), "wb") as mrc:
            reader = pymarc.MARCReader(src, to_unicode=True, force_utf8=True)
            stats = embed_items((r for r in reader if r is not None), library, settings.items_in_bib_field,
                                lambda sysno: by_bib.get((library, sysno), []), mrc, settings.qualified_bib_ids)
        result = out.upload(store, scope, "mrc", stats.records, stats.records, 0, {})
        result |= {"items_embedded": stats.items_embedded, "not_embedded": stats.not_embedded}
        return result


def commit_bibs_with_items(store: ArtifactStore, scope: RunScope, results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The ``alma/bibs_with_items`` manifest, with how many items were embedded and which bibs could not take theirs."""
    parts = [r for r in results if r]
    extra = {"items_embedded": sum(r["items_embedded"] for r in parts),
             "not_embedded": sorted(i for r in parts for i in r["not_embedded"])}
    return commit_alma(store, scope, BIBS_WITH_ITEMS, parts, extra=extra) | extra

# --- Z-table transforms -------------------------------------------------------------------

def load_excluded(store: ArtifactStore, key: str) -> dict[str, dict[str, str]]:
    return dict(json.loads(store.get_bytes(key)))


def transform_items_part(store: ArtifactStore, scope: RunScope, part: dict[str, Any], form: Any,
                         excluded_key: str, holdings_manifest: str) -> dict[str, Any]:
    from aleph2alma.alma.items import (
        HOL_LINK_COLUMNS,
        HOL_LINK_DICTIONARY,
        read_z30,
        transform_items,
        write_items_csv,
        write_items_parquet,
    )
    from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA

    with tempfile.TemporaryDirectory() as tmp_dir:
        out = PartOutput(Path(tmp_dir), "items", "Z30", part["index"])
        z30 = read_z30(store.download(part["key"], out.tmp / "z30.parquet", part["sha256"]))
        links = index_table(store, holdings_manifest, out.tmp, HOLDINGS_INDEX_SCHEMA, columns=HOL_LINK_COLUMNS,
                            read_dictionary=HOL_LINK_DICTIONARY)
        excluded = load_excluded(store, excluded_key).get("items", {})
        with open(out.path("rejects", "jsonl"), "w") as rej:
            rejects = RejectLog(rej)
            items, stats = transform_items(z30, form, excluded, rejects, hol_links=links)
        write_items_csv(items, out.path("out", "csv"))
        write_items_parquet(items, out.path("index", "parquet"))
        return out.upload(store, scope, "csv", stats.records_in, stats.records_out, stats.rejected, rejects.counts)


def transform_patrons(store: ArtifactStore, scope: RunScope, migration_id: str, extract_run_id: str, form: Any,
                      excluded_key: str, scrub_emails: bool, as_of: Any) -> dict[str, Any]:
    from aleph2alma.alma.users import UserOptions, write_users_xml

    manifest = raw_manifest(store, migration_id, extract_run_id, "patrons")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        out = PartOutput(tmp, "patrons", "users", 0)
        tables = {t: read_table(store, manifest, t, tmp / t.lower()) for t in ("Z303", "Z304", "Z305", "Z308")}
        excluded = load_excluded(store, excluded_key).get("patrons", {})
        with open(out.path("out", "xml"), "wb") as xml, open(out.path("rejects", "jsonl"), "w") as rej:
            rejects = RejectLog(rej)
            stats = write_users_xml(tables["Z303"], tables["Z304"], tables["Z305"], tables["Z308"], form, xml,
                                    excluded, rejects, UserOptions(scrub_emails=scrub_emails, as_of=as_of))
        result = out.upload(store, scope, "xml", stats.records_in, stats.records_out, stats.rejected, rejects.counts)
    return commit_alma(store, scope, "patrons", [result], extra={"emails_scrubbed": stats.emails_scrubbed})


def transform_fulfillment(store: ArtifactStore, scope: RunScope, migration_id: str, extract_run_id: str,
                          form: Any, excluded_key: str, items_manifest: str) -> list[dict[str, Any]]:
    """Active loans, requests and open fines → JSON lines for the Alma API loader."""
    from aleph2alma.alma import fulfillment
    from aleph2alma.alma.users import patron_primary_ids

    excluded = load_excluded(store, excluded_key)
    committed = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        patrons = raw_manifest(store, migration_id, extract_run_id, "patrons")
        z303 = read_table(store, patrons, "Z303", tmp, ["Z303_REC_KEY", "Z303_PRIMARY_ID"])
        patron_ids = patron_primary_ids(z303, excluded.get("patrons", {}))
        staged = [store.download(f.key, tmp / f"items-{i}.parquet", f.sha256)
                  for i, f in enumerate(store.manifest(items_manifest).files) if f.kind == "index"]
        items = pa.concat_tables([pq.read_table(p, columns=["aleph_item_key", "barcode"]) for p in staged])
        barcodes = dict(zip(items["aleph_item_key"].to_pylist(), items["barcode"].to_pylist(), strict=True))
        for entity, table in (("loans", "Z36"), ("requests", "Z37"), ("fines", "Z31")):
            data = read_table(store, raw_manifest(store, migration_id, extract_run_id, entity), table, tmp / entity)
            out = PartOutput(tmp / f"out-{entity}", entity, entity, 0)
            out.tmp.mkdir()
            with open(out.path("out", "jsonl"), "w") as dst, open(out.path("rejects", "jsonl"), "w") as rej:
                rejects = RejectLog(rej)
                mine = excluded.get(entity, {})
                if entity == "loans":
                    stats = fulfillment.transform_loans(data, patron_ids, barcodes, form, mine, rejects, dst)
                elif entity == "requests":
                    stats = fulfillment.transform_requests(data, patron_ids, barcodes, form, mine, rejects, dst)
                else:
                    stats = fulfillment.transform_fines(data, patron_ids, form, mine, rejects, dst)
            result = out.upload(store, scope, "jsonl", stats.records_in, stats.records_out, stats.rejected,
                                rejects.counts)
            committed.append(commit_alma(store, scope, entity, [result]))
    return committed
