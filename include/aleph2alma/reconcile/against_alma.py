"""A run's transform reconciled against Alma: every source record accounted for (Aleph → delivered
→ rejected → in Alma, from Ex Libris' statistics workbook and the API load), and a sample of
patrons, items and holdings read back from Alma field by field.

Used by the test load (its own transform) and after go-live (the final run's).
"""

from __future__ import annotations

import json
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Reconciliation
from aleph2alma.runs import CUTOVER_DAG, ChildStep, RunRef
from aleph2alma.storage import ArtifactStore, Manifest, parse_s3_uri

RECONCILED = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines")
INVENTORY = ("bibs", "holdings", "items")
"""What a cutover delivers at the technical-services freeze; the rest at the fulfillment freeze."""


def transforms_of(run: RunRef) -> dict[str, RunRef]:
    """Per entity, the transform whose output ``run`` delivered: its transform child, except that a
    cutover delivered the inventory from the transform of its technical-services freeze."""
    transforms = dict.fromkeys(RECONCILED, run.child(ChildStep.TRANSFORM))
    if run.dag_id == CUTOVER_DAG:
        transforms.update(dict.fromkeys(INVENTORY, run.child(ChildStep.INVENTORY_TRANSFORM)))
    return transforms


def _users(store: ArtifactStore, manifest: Manifest) -> dict[str, dict[str, str]]:
    users: dict[str, dict[str, str]] = {}
    for part in manifest.parts():
        with tempfile.TemporaryDirectory() as tmp:
            [path] = store.local_copies([part], Path(tmp))
            for _, elem in ET.iterparse(path):
                if elem.tag == "user":
                    pid = elem.findtext("primary_id", "")
                    users[pid] = {
                        "primary_id": pid,
                        "user_group": elem.findtext("user_group", ""),
                        "expiry_date": elem.findtext("expiry_date", ""),
                    }
                    elem.clear()
    return users


def _items(store: ArtifactStore, manifest: Manifest, barcodes: list[str] | None) -> pa.Table:
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in store.local_copies(manifest.parts(), Path(tmp)):
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    include_columns=["barcode", "library", "location", "item_policy"],
                    column_types={c: pa.string() for c in ("barcode", "library", "location", "item_policy")},
                ),
            )
            if barcodes is not None:
                table = table.filter(pc.is_in(table["barcode"], pa.array(barcodes)))
            tables.append(table)
    return pa.concat_tables(tables)


class _Holdings:
    """The delivered holdings (the transform's index: one row per record), looked up by HOL sysno."""

    def __init__(self, store: ArtifactStore, holdings: Manifest, form: Any) -> None:
        from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
        from aleph2alma.stages import index_schema

        columns = ["sysno", "bib_library", "bib_sysno", "sub_library", "collection", "call_number"]
        with tempfile.TemporaryDirectory() as tmp:
            self.table = store.read_table(
                [f for f in holdings.files if f.kind == "index"],
                Path(tmp),
                schema=index_schema(HOLDINGS_INDEX_SCHEMA, columns),
                columns=columns,
            )
        self.form = form

    def ids(self) -> list[str]:
        return sorted(self.table["sysno"].to_pylist())

    def expected(self, sysno: str) -> dict[str, Any]:
        from aleph2alma.alma.holdings import alma_location

        at = pc.index(self.table["sysno"], sysno).as_py()
        row = {k: v[0] for k, v in self.table.slice(at, 1).to_pydict().items()}
        library, location = alma_location(self.form, row["sub_library"] or "", row["collection"] or "")
        return {
            "bib": f"(ALEPH){row['bib_library']}{row['bib_sysno']}",
            "library": library,
            "location": location,
            "call_number": row["call_number"],
        }


def fetch_holding(
    client: Any, bib_035: str, sysno: str, expected: Mapping[str, Any] | None = None
) -> Mapping[str, Any] | None:
    """A delivered holding as Alma holds it: under the bib with ``bib_035``, the holding
    :func:`~aleph2alma.alma.holdings.find_holding` finds for the HOL sysno (by its originating
    system id, else by ``expected``'s library, location and call number); ``bib`` is the 035 of
    the bib its 004 names, ``matched_by`` how it was found."""
    from aleph2alma.alma.holdings import find_holding, holding_fields

    bib = client.find_bib_by_other_system_number(bib_035)
    if bib is None:
        return None
    holding, matched_by = find_holding(client, bib["mms_id"], sysno, expected)
    if holding is None:
        return None
    fields = holding_fields(holding) | {"matched_by": matched_by}
    linked = (
        bib if fields["bib"] == bib["mms_id"] else (client.get_bib(fields["bib"]) if fields["bib"] else None)
    )
    numbers = [str(n) for n in (linked or {}).get("network_number") or []]
    fields["bib"] = (
        bib_035
        if bib_035 in numbers
        else next((n for n in numbers if n.startswith("(ALEPH)")), fields["bib"])
    )
    return fields


def _fetcher(
    client: Any, holdings: _Holdings | None = None
) -> Callable[[str, str], Mapping[str, Any] | None]:
    def fetch(entity: str, record_id: str) -> Mapping[str, Any] | None:
        if entity == "holdings" and holdings is not None:
            wanted = holdings.expected(record_id)
            return fetch_holding(client, wanted["bib"], record_id, wanted)
        if entity == "patrons":
            user = client.get_user(record_id)
            if user is None:
                return None
            return {
                "primary_id": user.get("primary_id"),
                "user_group": user.get("user_group"),
                "expiry_date": user.get("expiry_date"),
            }
        item = client.find_item_by_barcode(record_id)
        if item is None:
            return None
        data = item.get("item_data", {})
        return {
            "barcode": data.get("barcode"),
            "library": data.get("library"),
            "location": data.get("location"),
            "item_policy": data.get("policy"),
        }

    return fetch


def reconcile_step(
    ctx: PhaseContext,
    workbook_uri: str,
    client: Any,
    api_loaded: Mapping[str, Any] | None,
    sample_size: int = 10,
    seed: int = 0,
    *,
    final: RunRef | None = None,
) -> Reconciliation:
    """Every source record of a transform accounted for: Aleph → delivered → rejected → in Alma; a
    sample checked field by field. The transform is this run's child, or ``final``'s (the run whose
    extract and transform are the final snapshot, reconciled after go-live); a cutover's inventory
    is its technical-services freeze's transform (``transforms_of``)."""
    from aleph2alma.alma.statistics import read_statistics_workbook
    from aleph2alma.reconcile.reconcile import API_LOAN_DATE_NOTE, SAMPLE_FIELDS, draw_sample, reconcile

    store, scope = ctx.store, ctx.scope
    transforms = transforms_of(final or ctx.run)
    transform = transforms["patrons"]
    load_scope = ctx.scope_of(final) if final else scope  # where the API load wrote its refusals
    loaded = dict(api_loaded or {})
    alma = {e: store.stage_manifest(ctx.scope_of(t), "alma", e) for e, t in transforms.items()}
    sources = {e: int(m.extra["records_in"]) for e, m in alma.items()}
    delivered = {e: m.records for e, m in alma.items()}
    rejected = {e: dict(m.extra.get("rejected_by_reason", {})) for e, m in alma.items()}
    workbook = None
    if workbook_uri:
        with tempfile.TemporaryDirectory() as tmp:
            bucket, key = parse_s3_uri(workbook_uri)
            local = Path(tmp) / "statistics.xlsx"
            store.client.download_file(bucket, key, str(local))
            workbook = read_statistics_workbook(local)
    alma_counts = {e: int(s["records_out"]) for e, s in loaded.items()}
    # Records Alma's API refused are named, with Alma's error code, in the load's rejects: they
    # are Alma's rejects (as the workbook's are for what Ex Libris loads), not records gone missing.
    refused = {
        e: [
            (r["record_id"], r["reason"])
            for r in _jsonl_key(store, load_scope.prefix("load", e) + "rejects.jsonl")
        ]
        for e in loaded
    }
    users = _users(store, alma["patrons"])
    all_barcodes = [b for b in _items(store, alma["items"], None)["barcode"].to_pylist() if b]
    sample_ids = {
        "patrons": draw_sample("patrons", sorted(users), sample_size, seed),
        "items": draw_sample("items", sorted(all_barcodes), sample_size, seed),
    }
    item_rows = {r["barcode"]: r for r in _items(store, alma["items"], sample_ids["items"]).to_pylist()}
    holdings = _Holdings(store, alma["holdings"], ctx.form if ctx.form_dir.exists() else None)
    sample_ids["holdings"] = holdings.ids()  # reconcile draws indices only, skipping Alma's rejects

    def expected(entity: str, record_id: str) -> Mapping[str, Any]:
        if entity == "holdings":
            return holdings.expected(record_id)
        return users[record_id] if entity == "patrons" else item_rows[record_id]

    fields = {
        "patrons": ("primary_id", "user_group", "expiry_date"),
        "items": ("barcode", "library", "location", "item_policy"),
        "holdings": SAMPLE_FIELDS["holdings"],
    }
    run = {
        "migration_id": ctx.migration_id,
        "dag_id": scope.dag_id,
        "run_id": scope.run_id,
        "extract_run_id": (final or ctx.run).child(ChildStep.EXTRACT).run_id,
        "transform_run_id": transform.run_id,
        **(
            {"inventory_transform_run_id": transforms["bibs"].run_id}
            if transforms["bibs"] != transform
            else {}
        ),
    }
    result = reconcile(
        sources,
        delivered,
        rejected,
        alma_counts,
        workbook,
        sample_ids,
        _fetcher(client, holdings),
        expected,
        sample_size=sample_size,
        seed=seed,
        fields=fields,
        alma_refused=refused,
        run=run,
        notes={"loans": [API_LOAN_DATE_NOTE]} if "loans" in loaded else None,
    )
    prefix = scope.report_prefix() + "reconciliation/"
    html = store.put_bytes(
        prefix + "reconciliation.html", result.to_html().encode("utf-8"), content_type="text/html"
    )
    store.put_bytes(
        prefix + "reconciliation.json", result.to_json().encode("utf-8"), content_type="application/json"
    )
    return Reconciliation(
        report_html=store.uri(html.key),
        all_accounted=result.all_accounted,
        totals=result.totals,
        entities={
            e.entity: {
                "source": e.source,
                "delivered": e.delivered,
                "rejected": e.rejected,
                "alma_rejected": e.alma_rejected,
                "accounted": e.accounted,
                "in_alma": e.in_alma,
                "in_alma_from": e.in_alma_from,
                "source_balanced": e.source_balanced,
            }
            for e in result.entities
        },
    )


def _jsonl_key(store: ArtifactStore, key: str) -> Iterator[dict[str, Any]]:
    if store.exists(key):
        for line in store.iter_lines(key):
            if line.strip():
                yield json.loads(line)
