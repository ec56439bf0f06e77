"""The transform phase's steps, run in order on the tiny demo library against a real S3 endpoint.

The same functions the migration_transform DAG calls, without Airflow in between: this is
where the ground truth is checked — validation must find exactly the seeded defects.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from aleph2alma import settings as settings_mod
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.extract import all_entities
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.alma.form import form_dir, load_form
from aleph2alma.phases import extraction, transform, validation
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.validate.issues import read_issues
from aleph2alma.validate.rules import rules_for_migration

EXTRACT = RunScope("demo", "migration_extract", "extract_1")
SCOPE = RunScope("demo", "migration_transform", "transform_1")


@pytest.fixture(scope="module")
def phase(tiny_library: Path, s3_stack) -> dict:
    """Extract, then transform and validate the tiny library once for every test here."""
    store = ArtifactStore(s3_stack.s3_client(), "transform-phase")
    store.ensure_bucket()
    settings = replace(settings_mod.load("demo"), part_rows=400, part_bytes=32_768)
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    landing = LocalLanding(tiny_library / "alephseq")
    plan = extraction.plan_extraction(settings, all_entities(), engine=engine, landing=landing)
    results = [extraction.extract_part(store, EXTRACT, settings, p, engine=engine, landing=landing) for p in plan]
    for entity in all_entities():
        extraction.commit_entity(store, EXTRACT, entity, results, plan)
    extraction.record_latest(store, EXTRACT)

    form, rules = load_form(form_dir("demo")), rules_for_migration("demo")
    as_of = date.fromisoformat(json.loads((tiny_library / "summary.json").read_text())["as_of"])
    todo = transform.plan_transform(store, "demo", "")
    marc = {"bibs": transform.commit_alma(store, SCOPE, "bibs", [
        transform.transform_marc_part(store, SCOPE, settings, p) for p in todo["bibs"]])}
    marc["holdings"] = transform.commit_alma(store, SCOPE, "holdings", [
        transform.transform_marc_part(store, SCOPE, settings, p, marc["bibs"]["manifest"]) for p in todo["holdings"]])
    validated = validation.validate_tables(store, SCOPE, "demo", todo["extract_run_id"], form, as_of, rules,
                                           marc["bibs"]["manifest"], marc["holdings"]["manifest"])
    items = transform.commit_alma(store, SCOPE, "items", [
        transform.transform_items_part(store, SCOPE, p, form, validated["excluded_key"], marc["holdings"]["manifest"])
        for p in todo["items"]])
    patrons = transform.transform_patrons(store, SCOPE, "demo", todo["extract_run_id"], form,
                                          validated["excluded_key"], True, as_of)
    fulfillment = transform.transform_fulfillment(store, SCOPE, "demo", todo["extract_run_id"], form,
                                                  validated["excluded_key"], items["manifest"])
    p2e = validation.write_p2e(store, SCOPE, form, marc["bibs"]["manifest"], marc["holdings"]["manifest"])
    stages = [marc["bibs"], marc["holdings"], items, patrons, *fulfillment, p2e]
    report = validation.write_report(store, SCOPE, {"migration_id": "demo", "dag_id": SCOPE.dag_id,
                                                    "run_id": SCOPE.run_id, "as_of": as_of.isoformat()},
                                     stages, [marc["bibs"]["manifest"], marc["holdings"]["manifest"],
                                              validated["manifest"]], rules)
    return {"store": store, "stages": {s["entity"]: s for s in stages}, "report": report, "validated": validated,
            "marc": marc, "library": tiny_library}


def _ground_truth(library: Path) -> dict[str, set[tuple[str, str]]]:
    truth: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for line in (library / "ground_truth.jsonl").read_text().splitlines():
        row = json.loads(line)
        truth[row["defect"]].add((row["entity"], row["record_id"]))
    return truth


def _found(phase: dict) -> dict[str, set[tuple[str, str]]]:
    store: ArtifactStore = phase["store"]
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    manifests = [phase["marc"]["bibs"]["manifest"], phase["marc"]["holdings"]["manifest"],
                 phase["validated"]["manifest"]]
    for key in transform.issue_keys(store, manifests):
        for issue in read_issues(store.iter_lines(key)):
            found[issue.rule].add((issue.entity, issue.record_id))
    return found


def test_validation_finds_exactly_the_seeded_defects(phase: dict) -> None:
    truth, found = _ground_truth(phase["library"]), _found(phase)
    for rule in sorted(set(truth) | set(found)):
        assert found.get(rule, set()) == truth.get(rule, set()), rule


def test_every_record_is_delivered_or_rejected(phase: dict) -> None:
    counts = json.loads((phase["library"] / "summary.json").read_text())["counts"]
    for entity in ("bibs", "holdings", "items", "patrons", "loans", "requests", "fines"):
        stage = phase["stages"][entity]
        assert stage["records_in"] == counts[entity], entity
        assert stage["records_in"] == stage["records"] + stage["rejected"], entity


def test_rejecting_rules_remove_their_records(phase: dict) -> None:
    truth = _ground_truth(phase["library"])
    manifest = phase["store"].manifest(phase["stages"]["loans"]["manifest"])
    by_reason = manifest.extra["rejected_by_reason"]
    assert by_reason.get("loan_missing_item", 0) == len(truth["loan_missing_item"])
    assert by_reason.get("loan_missing_patron", 0) == len(truth["loan_missing_patron"])
    holdings = phase["store"].manifest(phase["stages"]["holdings"]["manifest"])
    by_reason = holdings.extra["rejected_by_reason"]
    assert by_reason.pop("orphan_holdings") == len(truth["orphan_holdings"])
    # The holdings of bibs the transform rejected (invalid leader, missing title) are withheld too.
    assert by_reason == {"bib_rejected": by_reason.get("bib_rejected", 0)} and by_reason["bib_rejected"] > 0


def test_report_and_worklists_written(phase: dict) -> None:
    store: ArtifactStore = phase["store"]
    report = phase["report"]
    html = store.get_bytes(report["report_html"].split("/", 3)[3]).decode()
    assert "duplicate_barcode" in html
    worklists = store.list_keys(SCOPE.report_prefix() + "validation/worklists/")
    assert any(k.endswith("duplicate_barcode.tsv") for k in worklists)
    assert report["by_rule"]["orphan_item"] > 0


def test_p2e_lists_the_electronic_bibs(phase: dict) -> None:
    summary = json.loads((phase["library"] / "summary.json").read_text())
    assert phase["stages"]["p2e"]["records"] == sum(summary["electronic_bibs"].values())


def test_patron_file_has_no_pins_and_scrubbed_emails(phase: dict) -> None:
    store: ArtifactStore = phase["store"]
    manifest = store.manifest(phase["stages"]["patrons"]["manifest"])
    xml = store.get_bytes(manifest.parts()[0].key).decode()
    assert "@example.invalid" in xml
    engine = create_engine(f"sqlite:///{phase['library'] / 'replica.sqlite'}")
    with engine.connect() as conn:
        pins = {p.strip() for (p,) in conn.exec_driver_sql("select z308_verification from z308") if p and p.strip()}
    assert pins
    assert not [pin for pin in pins if f">{pin}<" in xml]


def test_items_of_undelivered_holdings_are_withheld(phase: dict) -> None:
    store: ArtifactStore = phase["store"]
    items = store.manifest(phase["stages"]["items"]["manifest"]).extra["rejected_by_reason"]
    holdings = store.manifest(phase["stages"]["holdings"]["manifest"]).extra["rejected_by_reason"]
    assert sum(holdings.values()) > 0 and items.get("holdings_not_delivered", 0) > 0


def test_items_embedded_in_the_delivered_bibs(phase: dict, tmp_path: Path) -> None:
    import pyarrow.compute as pc
    import pymarc

    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA

    store: ArtifactStore = phase["store"]
    bibs_manifest, items_manifest = phase["marc"]["bibs"]["manifest"], phase["stages"]["items"]["manifest"]
    parts = transform.bib_parts(store, bibs_manifest)
    result = transform.commit_bibs_with_items(store, SCOPE, [
        transform.embed_items_part(store, SCOPE, settings_mod.load("demo"), p, items_manifest) for p in parts])

    bibs = transform.index_table(store, bibs_manifest, tmp_path, BIB_INDEX_SCHEMA)
    delivered = {(lib, sysno) for lib, sysno, rejected in zip(
        bibs["library"].to_pylist(), bibs["sysno"].to_pylist(), bibs["rejected"].to_pylist(), strict=True)
        if not rejected}
    items = _items(store, items_manifest, tmp_path)
    linked = pc.not_equal(items["bib_sysno"], "")
    expected = sum(1 for lib, sysno in zip(items.filter(linked)["bib_library"].to_pylist(),
                                            items.filter(linked)["bib_sysno"].to_pylist(), strict=True)
                   if (lib, sysno) in delivered)
    assert result["records"] == phase["marc"]["bibs"]["records"]
    assert result["items_embedded"] == expected > 0
    embedded = 0
    for part in store.manifest(result["manifest"]).parts():
        data = store.get_bytes(part.key)
        embedded += sum(len(r.get_fields("949")) for r in pymarc.MARCReader(data, to_unicode=True, force_utf8=True))
    assert embedded == expected


def _items(store: ArtifactStore, manifest_uri: str, tmp: Path):
    from aleph2alma.alma.items import ITEM_SCHEMA

    return transform.index_table(store, manifest_uri, tmp, ITEM_SCHEMA)


def test_every_delivered_holdings_names_exactly_one_delivered_bib(phase: dict, tmp_path: Path) -> None:
    import pymarc

    store: ArtifactStore = phase["store"]

    def records(entity: str) -> list[pymarc.Record]:
        manifest = store.manifest(phase["marc"][entity]["manifest"])
        return [r for part in manifest.parts()
                for r in pymarc.MARCReader(store.get_bytes(part.key), to_unicode=True, force_utf8=True)]

    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA

    bib_ids = [r["001"].data for r in records("bibs")]
    assert len(bib_ids) == len(set(bib_ids)), "bib 001s repeat across the BIB libraries"
    index = transform.index_table(store, phase["marc"]["bibs"]["manifest"], tmp_path, BIB_INDEX_SCHEMA)
    rejected = {lib + sysno for lib, sysno, gone in zip(index["library"].to_pylist(), index["sysno"].to_pylist(),
                                                       index["rejected"].to_pylist(), strict=True) if gone}
    links = {r["004"].data for r in records("holdings")}
    assert links and links <= set(bib_ids) and not links & rejected
