"""PINs never leave Aleph: the demo library's PINs (Z308_VERIFICATION, "PIN" + 6 digits) are found
in no artifact of a full extract + transform (``aleph2alma validate``: the DAGs' steps in one
process), searched through Parquet, zip and gzip. A patron barcode from the same Z308 rows is
the control: the same search finds it in the raw Parquet and in the user XML.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from aleph2alma.aleph.extract import PartSpec, extract_table_part
from aleph2alma.aleph.ztables import Z_TABLES
from artifact_scan import find

SECRET_NAME = re.compile(r"VERIFICATION|PASSWORD|PASSWD|(^|_)PIN(_|$)")


def z308(library: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(library / "replica.sqlite") as db:
        return [
            (k.strip(), v.strip()) for k, v in db.execute("select z308_rec_key, z308_verification from z308")
        ]


def test_every_pin_or_password_column_is_secret_and_never_selected(
    tiny_library: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    import pyarrow.parquet as pq

    from aleph2alma import settings
    from aleph2alma.aleph.db import create_engine

    secret = [(t.name, c.name) for t in Z_TABLES.values() for c in t.columns if SECRET_NAME.search(c.name)]
    assert ("Z308", "Z308_VERIFICATION") in secret
    migration = replace(settings.load("demo"), part_rows=10**9)
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2].upper()))
    for table_name, column in secret:
        table = Z_TABLES[table_name]
        assert next(c for c in table.columns if c.name == column).secret, f"{column} would be extracted"
        out = tmp_path / f"{table_name}.parquet"
        rows = extract_table_part(engine, migration, PartSpec(table.entity, table_name, 0, "table"), out)
        assert rows.records > 0
        assert column not in pq.read_schema(out).names
        selects = [s for s in statements if s.lstrip().startswith("SELECT") and table_name in s]
        assert selects and all(column not in s for s in selects), selects


def test_the_demo_library_plants_distinctive_pins(tiny_library: Path) -> None:
    pins = {pin for _, pin in z308(tiny_library)}
    assert len(pins) > 100
    assert all(re.fullmatch(r"PIN\d{6}", pin) for pin in pins), sorted(pins)[:5]


def test_no_artifact_of_a_full_extract_and_transform_holds_a_pin(tiny_library: Path, tmp_path: Path) -> None:
    from aleph2alma.cli import main

    rows = z308(tiny_library)
    pins = {pin for _, pin in rows}
    barcodes = {key[2:] for key, _ in rows if key.startswith("01")}
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    out = tmp_path / "out"
    main(["validate", "--library-dir", str(tiny_library), "--as-of", as_of, "--out", str(out)])
    artifacts = [(str(p.relative_to(out)), p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()]
    assert len(artifacts) > 50 and any("/raw/patrons/" in name for name, _ in artifacts)

    found = find(pins | barcodes, artifacts)

    leaking = {leaf: sorted(hits & pins)[:3] for leaf, hits in found.items() if hits & pins}
    assert leaking == {}, f"PINs found in {len(leaking)} artifacts: {leaking}"
    control = [leaf for leaf, hits in found.items() if hits & barcodes]
    assert any("/raw/patrons/z308-" in leaf and "(parquet values)" in leaf for leaf in control), control
    assert any("/alma/patrons/users-" in leaf for leaf in control), control


@pytest.mark.parametrize("packed", ["zip", "gzip", "parquet"])
def test_the_search_opens_what_would_hide_a_pin(tmp_path: Path, packed: str) -> None:
    import gzip
    import io
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    if packed == "parquet":
        buffer = io.BytesIO()
        pins = [f"PIN{n:06d}" for n in range(123000, 124000)]
        pq.write_table(pa.table({"Z308_VERIFICATION": pins}), buffer, compression="zstd")
        data = buffer.getvalue()
        assert b"PIN123456" not in data  # compressed: a plain byte search would miss it
    elif packed == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("users.xml", "<pin>PIN123456</pin>" * 100)
        data = buffer.getvalue()
    else:
        data = gzip.compress(b"PIN123456" * 100)
    assert find({"PIN123456"}, [("artifact", data)]) != {}
