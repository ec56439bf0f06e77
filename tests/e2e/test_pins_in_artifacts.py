"""PINs never leave Aleph, end to end: after the session's test load (extract, transform, package,
delivery, the API load, reconciliation), no object in the artifact bucket, no file of the stack
(Airflow's metadata database with every XCom, the task logs, the Alma emulator's database) holds
one of the demo library's PINs. The same search finds the patrons' barcodes: it does look inside.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from artifact_scan import find

pytestmark = pytest.mark.e2e


def test_no_pin_in_the_bucket_or_the_stack_after_the_test_load(
    test_load: dict, stack_store, airflow_stack, tiny_library: Path
) -> None:
    assert test_load["state"] == "success", test_load.get("failed_tasks")
    with sqlite3.connect(tiny_library / "replica.sqlite") as db:
        rows = [
            (k.strip(), v.strip()) for k, v in db.execute("select z308_rec_key, z308_verification from z308")
        ]
    pins = {pin for _, pin in rows}
    barcodes = {key[2:] for key, _ in rows if key.startswith("01")}
    assert len(pins) > 100

    keys = stack_store.list_keys("")
    assert any("/package/" in k or "/delivery/" in k for k in keys), keys[:20]
    objects = [(f"s3://{stack_store.bucket}/{k}", stack_store.get_bytes(k)) for k in keys]
    files = [(str(p), p.read_bytes()) for p in sorted(airflow_stack.state_dir.rglob("*")) if p.is_file()]
    assert any(name.endswith("airflow.db") for name, _ in files)

    found = find(pins | barcodes, [*objects, *files])

    leaking = {leaf: sorted(hits & pins)[:3] for leaf, hits in found.items() if hits & pins}
    assert leaking == {}, f"PINs found in {len(leaking)} places: {leaking}"
    control = [leaf for leaf, hits in found.items() if hits & barcodes]
    assert any("/raw/patrons/" in leaf and "(parquet values)" in leaf for leaf in control), control
    assert any(".zip!" in leaf for leaf in control), control  # inside the delivered package
