"""Steps of the first test load: package, deliver, load through the API, reconcile.

The Ex Libris load itself happens outside: the operator answers the gate "test
environment loaded" (with the statistics workbook, when Ex Libris sent one) once Alma's
test environment holds the delivery.
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

from aleph2alma.rejects import RejectLog
from aleph2alma.storage import ArtifactStore, Manifest, RunScope, parse_s3_uri

TRANSFORM_DAG = "migration_transform"
EXTRACT_DAG = "migration_extract"
PACKAGED = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines", "p2e")
OPTIONAL_PACKAGED = "bibs_with_items"  # written when migration.toml sets items_in_bib_field
RECONCILED = ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines")
API_KINDS = {"loans": "loans", "requests": "requests", "fines": "fees"}


def stage_manifest(store: ArtifactStore, migration_id: str, dag_id: str, run_id: str, stage: str,
                   entity: str) -> Manifest:
    return store.manifest(RunScope(migration_id, dag_id, run_id).prefix(stage, entity) + "_MANIFEST.json")


def transform_manifests(store: ArtifactStore, migration_id: str, transform_run_id: str) -> dict[str, str]:
    """The transform's ``alma/`` manifests to package; bibs with items only when the transform wrote them."""
    scope = RunScope(migration_id, TRANSFORM_DAG, transform_run_id)
    manifests = {e: scope.prefix("alma", e) + "_MANIFEST.json" for e in (*PACKAGED, OPTIONAL_PACKAGED)}
    return {e: store.uri(key) for e, key in manifests.items() if e in PACKAGED or store.exists(key)}


def package_step(store: ArtifactStore, scope: RunScope, migration_id: str, transform_run_id: str) -> dict[str, Any]:
    from aleph2alma.alma.form import form_dir
    from aleph2alma.delivery.package import build_package

    result = build_package(store, scope, transform_manifests(store, migration_id, transform_run_id),
                           form_dir(migration_id), migration_id)
    return result.to_dict()


def deliver_step(store: ArtifactStore, package: dict[str, Any], targets: list[str], *,
                 sftp_client: Callable[[str], Any], s3_client: Callable[[], Any]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    from aleph2alma.delivery.package import PackageResult
    from aleph2alma.delivery.transfer import deliver

    delivered = deliver(store, PackageResult.from_dict(package), targets, sftp_client=sftp_client,
                        s3_client=s3_client)
    return [asdict(d) for d in delivered]


def _jsonl(store: ArtifactStore, manifest: Manifest) -> Iterator[dict[str, Any]]:
    for part in manifest.parts():
        for line in store.iter_lines(part.key):
            if line.strip():
                yield json.loads(line)


def api_load_step(store: ArtifactStore, scope: RunScope, migration_id: str, transform_run_id: str,
                  client: Any) -> dict[str, Any]:
    """Loans, requests and fees through the Alma API; Alma's refusals become rejects with its code."""
    from aleph2alma.alma.client_load import load

    results: dict[str, Any] = {}
    for entity, kind in API_KINDS.items():
        manifest = stage_manifest(store, migration_id, TRANSFORM_DAG, transform_run_id, "alma", entity)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rejects.jsonl"
            with open(path, "w", encoding="utf-8") as sink:
                stats = load(client, kind, _jsonl(store, manifest), RejectLog(sink))  # type: ignore[arg-type]
            store.put_file(scope.prefix("load", entity) + "rejects.jsonl", path, kind="rejects")
        results[entity] = stats.to_dict()
    return results


# --- reconciliation -----------------------------------------------------------------------

def _users(store: ArtifactStore, manifest: Manifest) -> dict[str, dict[str, str]]:
    users: dict[str, dict[str, str]] = {}
    for part in manifest.parts():
        with tempfile.TemporaryDirectory() as tmp:
            path = store.download(part.key, Path(tmp) / "users.xml", part.sha256)
            for _, elem in ET.iterparse(path):
                if elem.tag == "user":
                    pid = elem.findtext("primary_id", "")
                    users[pid] = {"primary_id": pid, "user_group": elem.findtext("user_group", ""),
                                  "expiry_date": elem.findtext("expiry_date", "")}
                    elem.clear()
    return users


def _items(store: ArtifactStore, manifest: Manifest, barcodes: list[str] | None) -> pa.Table:
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, part in enumerate(manifest.parts()):
            path = store.download(part.key, Path(tmp) / f"items-{i}.csv", part.sha256)
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                include_columns=["barcode", "library", "location", "item_policy"],
                column_types={c: pa.string() for c in ("barcode", "library", "location", "item_policy")}))
            if barcodes is not None:
                table = table.filter(pc.is_in(table["barcode"], pa.array(barcodes)))
            tables.append(table)
    return pa.concat_tables(tables)


class _Holdings:
    """The delivered holdings (the transform's index: one row per record), looked up by HOL sysno."""

    def __init__(self, store: ArtifactStore, manifest_uri: str, form: Any) -> None:
        from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
        from aleph2alma.phases.transform import index_table

        columns = ["sysno", "bib_library", "bib_sysno", "sub_library", "collection", "call_number"]
        with tempfile.TemporaryDirectory() as tmp:
            self.table = index_table(store, manifest_uri, Path(tmp), HOLDINGS_INDEX_SCHEMA, columns=columns)
        self.form = form

    def ids(self) -> list[str]:
        return sorted(self.table["sysno"].to_pylist())

    def expected(self, sysno: str) -> dict[str, Any]:
        from aleph2alma.alma.holdings import alma_location

        at = pc.index(self.table["sysno"], sysno).as_py()
        row = {k: v[0] for k, v in self.table.slice(at, 1).to_pydict().items()}
        library, location = alma_location(self.form, row["sub_library"] or "", row["collection"] or "")
        return {"bib": f"(ALEPH){row['bib_library']}{row['bib_sysno']}", "library": library, "location": location,
                "call_number": row["call_number"]}


def fetch_holding(client: Any, bib_035: str, sysno: str) -> Mapping[str, Any] | None:
    """A delivered holding as Alma holds it: under the bib with ``bib_035``, the holding whose
    originating system id is the HOL sysno; ``bib`` is the 035 of the bib its 004 names."""
    from aleph2alma.alma.holdings import holding_fields

    bib = client.find_bib_by_other_system_number(bib_035)
    if bib is None:
        return None
    short = next((h for h in client.bib_holdings(bib["mms_id"]) if h.get("originating_system_id") == sysno), None)
    holding = client.get_holding(bib["mms_id"], short["holding_id"]) if short else None
    if holding is None:
        return None
    fields = holding_fields(holding)
    linked = bib if fields["bib"] == bib["mms_id"] else (client.get_bib(fields["bib"]) if fields["bib"] else None)
    numbers = [str(n) for n in (linked or {}).get("network_number") or []]
    fields["bib"] = bib_035 if bib_035 in numbers else next((n for n in numbers if n.startswith("(ALEPH)")),
                                                             fields["bib"])
    return fields


def _fetcher(client: Any, holdings: _Holdings | None = None) -> Callable[[str, str], Mapping[str, Any] | None]:
    def fetch(entity: str, record_id: str) -> Mapping[str, Any] | None:
        if entity == "holdings" and holdings is not None:
            return fetch_holding(client, holdings.expected(record_id)["bib"], record_id)
        if entity == "patrons":
            user = client.get_user(record_id)
            if user is None:
                return None
            return {"primary_id": user.get("primary_id"), "user_group": user.get("user_group"),
                    "expiry_date": user.get("expiry_date")}
        item = client.find_item_by_barcode(record_id)
        if item is None:
            return None
        data = item.get("item_data", {})
        return {"barcode": data.get("barcode"), "library": data.get("library"),
                "location": data.get("location"), "item_policy": data.get("policy")}

    return fetch


def reconcile_step(store: ArtifactStore, scope: RunScope, migration_id: str, extract_run_id: str,
                   transform_run_id: str, workbook_uri: str, client: Any, api_loaded: Mapping[str, Any],
                   sample_size: int = 10, seed: int = 0) -> dict[str, Any]:
    """Every source record accounted for: Aleph → delivered → rejected → in Alma; a sample checked field by field."""
    from aleph2alma.alma.statistics import read_statistics_workbook
    from aleph2alma.reconcile.reconcile import SAMPLE_FIELDS, draw_sample, reconcile

    alma = {e: stage_manifest(store, migration_id, TRANSFORM_DAG, transform_run_id, "alma", e) for e in RECONCILED}
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
    alma_counts = {e: int(s["records_out"]) for e, s in api_loaded.items()}
    # Records Alma's API refused are named, with Alma's error code, in the load's rejects.
    refused = {e: [r["record_id"] for r in _jsonl_key(store, scope.prefix("load", e) + "rejects.jsonl")]
               for e in api_loaded}
    users = _users(store, alma["patrons"])
    all_barcodes = [b for b in _items(store, alma["items"], None)["barcode"].to_pylist() if b]
    sample_ids = {"patrons": draw_sample("patrons", sorted(users), sample_size, seed),
                  "items": draw_sample("items", sorted(all_barcodes), sample_size, seed)}
    item_rows = {r["barcode"]: r for r in _items(store, alma["items"], sample_ids["items"]).to_pylist()}
    holdings = _Holdings(store, transform_manifests(store, migration_id, transform_run_id)["holdings"],
                         _form(migration_id))
    sample_ids["holdings"] = holdings.ids()  # reconcile draws indices only, skipping Alma's rejects

    def expected(entity: str, record_id: str) -> Mapping[str, Any]:
        if entity == "holdings":
            return holdings.expected(record_id)
        return users[record_id] if entity == "patrons" else item_rows[record_id]

    fields = {"patrons": ("primary_id", "user_group", "expiry_date"),
              "items": ("barcode", "library", "location", "item_policy"), "holdings": SAMPLE_FIELDS["holdings"]}
    run = {"migration_id": migration_id, "dag_id": scope.dag_id, "run_id": scope.run_id,
           "extract_run_id": extract_run_id, "transform_run_id": transform_run_id}
    result = reconcile(sources, delivered, rejected, alma_counts, workbook, sample_ids, _fetcher(client, holdings),
                       expected, sample_size=sample_size, seed=seed, fields=fields, missing_ids=refused, run=run)
    prefix = scope.report_prefix() + "reconciliation/"
    html = store.put_bytes(prefix + "reconciliation.html", result.to_html().encode("utf-8"), content_type="text/html")
    store.put_bytes(prefix + "reconciliation.json", result.to_json().encode("utf-8"), content_type="application/json")
    return {"report_html": store.uri(html.key), "all_accounted": result.all_accounted, "totals": result.totals,
            "entities": {e.entity: {"accounted": e.accounted, "in_alma": e.in_alma, "in_alma_from": e.in_alma_from,
                                    "source_balanced": e.source_balanced} for e in result.entities}}


def _form(migration_id: str) -> Any:
    """The migration's form (Ex Libris maps the holdings' 852 through it); None when there is none."""
    from aleph2alma.alma.form import form_dir, load_form

    path = form_dir(migration_id)
    return load_form(path) if path.exists() else None


def _jsonl_key(store: ArtifactStore, key: str) -> Iterator[dict[str, Any]]:
    if store.exists(key):
        for line in store.iter_lines(key):
            if line.strip():
                yield json.loads(line)
