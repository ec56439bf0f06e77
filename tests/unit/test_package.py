"""The delivery package: members, one items header, counts and checksums, identical bytes on a retry.

Its shape is Ex Libris' *Generic Alma Data Delivery Specifications* (issue 8, B7): MARC for bibs and
holdings, CSV for items and fulfillment with a Field Mapping form naming each column's Alma field,
no JSON lines.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import pytest

from aleph2alma.alma.form import form_dir, load_form
from aleph2alma.alma.items import ITEM_COLUMNS
from aleph2alma.delivery.field_mapping import DELIMITED, FIELD_MAPPING_MEMBER, FINES, ITEMS, LOANS
from aleph2alma.delivery.package import (
    FIXED_DATE_TIME,
    FORM_MEMBER,
    MANIFEST_MEMBER,
    PackageError,
    build_package,
    package_name,
)
from aleph2alma.storage import ArtifactStore, RunScope, StorageError, part_name

SCOPE = RunScope("demo", "migration_test_load", "manual__2026-11-01T00:00:00+00:00")
FORM = form_dir("demo")
ITEMS_HEADER = b"barcode,library,location,item_policy\n"

# entity -> [(source, ext, bytes, records)]; parts listed out of order on purpose
PARTS: dict[str, list[tuple[str, str, bytes, int]]] = {
    "bibs": [
        ("BNU01", "mrc", b"00030nam  2200025   4500\x1e\x1d" * 3, 3),
        ("BNU02", "mrc", b"00030nam  2200025   450 \x1e\x1d", 1),
        ("BNU01", "mrc", b"00030nam  2200025   4500\x1e\x1d" * 2, 2),
    ],
    "holdings": [("BNU60", "mrc", b"00030nx   2200025   4500\x1e\x1d" * 4, 4)],
    "items": [
        ("Z30", "csv", ITEMS_HEADER + b"B0001,MAIN,ZWSK,LOAN\nB0002,MAIN,ZWSK,LOAN\n", 2),
        ("Z30", "csv", ITEMS_HEADER + b'B0003,EDU,JYZW,"NO,LOAN"\n', 1),
    ],
    "patrons": [("users", "xml", "<?xml version='1.0'?>\n<users><user>张三</user></users>\n".encode(), 1)],
    "loans": [
        ("loans", "jsonl", b'{"item_barcode":"B0001","note":"a, \\"b\\""}\n{"item_barcode":"B0002"}', 2)
    ],  # no final newline
    "requests": [("requests", "jsonl", b"", 0)],
    "fines": [("fines", "jsonl", b'{"amount":1.5}\n', 1)],
    "p2e": [("p2e", "txt", b"BNU01000000042,portfolio\n", 1)],
}


def commit_alma(
    store: ArtifactStore, tmp: Path, entity: str, parts: list[tuple[str, str, bytes, int]], rejected: int = 0
) -> str:
    files = []
    counters: dict[str, int] = {}
    for source, ext, data, records in parts:
        index = counters[source] = counters.get(source, -1) + 1
        local = tmp / f"{entity}-{source}-{index}.{ext}"
        local.write_bytes(data)
        key = SCOPE.prefix("alma", entity) + part_name(source, index, ext)
        files.append(store.put_file(key, local, records=records, rejected=rejected, source=source))
    if entity == "items":  # rejects are reported, never delivered
        reject = tmp / "items-rejects.jsonl"
        reject.write_bytes(b'{"id":"000000001000010","reason":"duplicate barcode"}\n')
        files.append(
            store.put_file(
                SCOPE.prefix("alma", entity) + "rejects/z30-part-00000.jsonl",
                reject,
                records=1,
                source="Z30",
                kind="rejects",
            )
        )
    total = sum(p[3] for p in parts)
    return store.commit(SCOPE, "alma", entity, files, extra={"records_in": total + rejected * len(parts)})


@pytest.fixture
def manifests(store: ArtifactStore, tmp_path: Path) -> dict[str, str]:
    return {
        entity: commit_alma(store, tmp_path, entity, parts, rejected=1 if entity == "items" else 0)
        for entity, parts in PARTS.items()
    }


def members_of(store: ArtifactStore, key: str) -> tuple[zipfile.ZipFile, dict[str, bytes]]:
    zf = zipfile.ZipFile(io.BytesIO(store.get_bytes(key)))
    return zf, {info.filename: zf.read(info) for info in zf.infolist()}


def test_members_in_their_fixed_order(store: ArtifactStore, manifests: dict[str, str]) -> None:
    result = build_package(store, SCOPE, manifests, FORM, "demo")
    zf, _ = members_of(store, result.key)
    assert zf.namelist() == [
        "bibs_BNU01.mrc",
        "bibs_BNU02.mrc",
        "holdings.mrc",
        "items.csv",
        "users.xml",
        "loans.csv",
        "requests.csv",
        "fines.csv",
        "p2e.txt",
        FORM_MEMBER,
        FIELD_MAPPING_MEMBER,
        MANIFEST_MEMBER,
    ]
    assert result.key == SCOPE.prefix("package", "delivery") + f"{package_name('demo', SCOPE)}.zip"
    assert result.name == "demo_migration_test_load_manual__2026-11-01T00-00-00-00-00.zip"


def test_parts_are_joined_in_order_with_one_items_header(
    store: ArtifactStore, manifests: dict[str, str], tmp_path: Path
) -> None:
    _, members = members_of(store, build_package(store, SCOPE, manifests, FORM, "demo").key)
    bnu01 = [p[2] for p in PARTS["bibs"] if p[0] == "BNU01"]
    assert members["bibs_BNU01.mrc"] == bnu01[0] + bnu01[1]
    assert members["items.csv"] == (
        ITEMS_HEADER + b'B0001,MAIN,ZWSK,LOAN\nB0002,MAIN,ZWSK,LOAN\nB0003,EDU,JYZW,"NO,LOAN"\n'
    )
    assert members["items.csv"].count(b"barcode,") == 1
    loans = list(csv.DictReader(io.StringIO(members["loans.csv"].decode("utf-8"))))
    assert list(loans[0]) == LOANS.header
    assert [(r["item_barcode"], r["note"], r["due_date"]) for r in loans] == [
        ("B0001", 'a, "b"', ""),
        ("B0002", "", ""),
    ]
    assert members["fines.csv"].decode().splitlines() == [",".join(FINES.header), ",,,1.5,,,,,,"]
    assert not [name for name in members if name.endswith(".jsonl")]
    assert "张三" in members["users.xml"].decode("utf-8")
    assert b"duplicate barcode" not in b"".join(members.values())
    (tmp_path / FORM_MEMBER).write_bytes(members[FORM_MEMBER])
    assert load_form(tmp_path / FORM_MEMBER) == load_form(FORM)


def test_manifest_has_counts_checksums_and_sources(store: ArtifactStore, manifests: dict[str, str]) -> None:
    result = build_package(store, SCOPE, manifests, FORM, "demo")
    _, members = members_of(store, result.key)
    manifest = json.loads(members[MANIFEST_MEMBER])
    listed = {m["name"]: m for m in manifest["members"]}
    assert set(listed) == set(members) - {MANIFEST_MEMBER}
    for name, member in listed.items():
        assert member["sha256"] == hashlib.sha256(members[name]).hexdigest(), name
        assert member["bytes"] == len(members[name]), name
    assert listed["bibs_BNU01.mrc"]["records"] == 5 and listed["bibs_BNU02.mrc"]["records"] == 1
    assert listed["items.csv"]["records"] == 3 and listed["items.csv"]["parts"] == [
        SCOPE.prefix("alma", "items") + "z30-part-00000.csv",
        SCOPE.prefix("alma", "items") + "z30-part-00001.csv",
    ]
    assert manifest["counts"]["items"] == {"records": 3, "rejected": 2, "records_in": 5}
    assert manifest["counts"]["bibs"]["records"] == 6
    assert manifest["sources"] == manifests
    assert result.members == [
        {k: m[k] for k in ("name", "entity", "bytes", "sha256", "records")} for m in manifest["members"]
    ]

    committed = store.manifest(SCOPE.prefix("package", "delivery") + "_MANIFEST.json")
    assert [(f.key, f.sha256, f.bytes) for f in committed.files] == [
        (result.key, result.sha256, result.bytes)
    ]
    assert hashlib.sha256(store.get_bytes(result.key)).hexdigest() == result.sha256


def test_same_inputs_give_identical_bytes(store: ArtifactStore, manifests: dict[str, str]) -> None:
    first = build_package(store, SCOPE, manifests, FORM, "demo")
    zip_bytes = store.get_bytes(first.key)
    time.sleep(1.1)  # the form workbook and zip entries would carry a new time
    second = build_package(store, SCOPE, manifests, FORM, "demo")
    assert (second.key, second.sha256, second.bytes) == (first.key, first.sha256, first.bytes)
    assert store.get_bytes(second.key) == zip_bytes
    zf, members = members_of(store, first.key)
    assert {(i.date_time, i.external_attr >> 16, i.compress_type) for i in zf.infolist()} == {
        (FIXED_DATE_TIME, 0o100644, zipfile.ZIP_DEFLATED)
    }
    with zipfile.ZipFile(io.BytesIO(members[FORM_MEMBER])) as form:
        assert {i.date_time for i in form.infolist()} == {FIXED_DATE_TIME}


def test_a_tampered_part_is_refused_and_named(store: ArtifactStore, manifests: dict[str, str]) -> None:
    key = SCOPE.prefix("alma", "items") + "z30-part-00001.csv"
    store.client.put_object(Bucket=store.bucket, Key=key, Body=ITEMS_HEADER + b"B9999,MAIN,ZWSK,LOAN\n")
    with pytest.raises(StorageError, match="z30-part-00001.csv does not match the sha256"):
        build_package(store, SCOPE, manifests, FORM, "demo")
    assert not store.list_keys(SCOPE.prefix("package")), "nothing is uploaded or committed"


def test_only_the_entities_given_are_packaged(store: ArtifactStore, manifests: dict[str, str]) -> None:
    fulfillment = {e: manifests[e] for e in ("loans", "requests", "fines")}
    result = build_package(store, SCOPE, fulfillment, FORM, "demo", name="demo-fulfillment")
    zf, members = members_of(store, result.key)
    assert zf.namelist() == [
        "loans.csv",
        "requests.csv",
        "fines.csv",
        FORM_MEMBER,
        FIELD_MAPPING_MEMBER,
        MANIFEST_MEMBER,
    ]
    assert result.key.endswith("/package/delivery/demo-fulfillment.zip")
    assert members["requests.csv"] == (",".join(DELIMITED["requests"].header) + "\n").encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"orders": "s3://x/y"}, "cannot package entity 'orders'; accepted: bibs, bibs_with_items, holdings"),
        ({"bibs": "items"}, "manifest of 'items', given as 'bibs'"),
    ],
    ids=["unknown-entity", "wrong-manifest"],
)
def test_bad_manifest_mapping(
    store: ArtifactStore, manifests: dict[str, str], change: dict[str, str], message: str
) -> None:
    given = dict(manifests)
    for entity, value in change.items():
        given[entity] = manifests.get(value, value)
    with pytest.raises(PackageError, match=message):
        build_package(store, SCOPE, given, FORM, "demo")


def test_items_parts_with_different_headers_do_not_join(store: ArtifactStore, tmp_path: Path) -> None:
    uri = commit_alma(
        store,
        tmp_path,
        "items",
        [("Z30", "csv", ITEMS_HEADER + b"B1,M,Z,L\n", 1), ("Z30", "csv", b"barcode,library\nB2,M\n", 1)],
    )
    with pytest.raises(PackageError, match="z30-part-00001.csv: CSV header .* differs"):
        build_package(store, SCOPE, {"items": uri}, FORM, "demo")


def test_users_xml_must_be_one_part(store: ArtifactStore, tmp_path: Path) -> None:
    uri = commit_alma(store, tmp_path, "patrons", [("users", "xml", b"<users/>", 0)] * 2)
    with pytest.raises(PackageError, match="users.xml must be a single part"):
        build_package(store, SCOPE, {"patrons": uri}, FORM, "demo")


@pytest.mark.parametrize(
    "name", ["../x", "a b", "pkg.zip", "-x"], ids=["traversal", "space", "extension", "dash"]
)
def test_unsafe_names_are_refused(store: ArtifactStore, name: str) -> None:
    with pytest.raises(PackageError, match="not a safe file name"):
        build_package(store, SCOPE, {}, FORM, "demo", name=name)


def test_migration_id_must_match_the_scope(store: ArtifactStore) -> None:
    with pytest.raises(PackageError, match="differs from the run scope"):
        build_package(store, SCOPE, {}, FORM, "bnu")


def test_the_field_mapping_form_names_every_delivered_column_and_file(
    store: ArtifactStore, manifests: dict[str, str], tmp_path: Path
) -> None:
    from openpyxl import load_workbook

    _, members = members_of(store, build_package(store, SCOPE, manifests, FORM, "demo").key)
    (tmp_path / FIELD_MAPPING_MEMBER).write_bytes(members[FIELD_MAPPING_MEMBER])
    book = load_workbook(tmp_path / FIELD_MAPPING_MEMBER, read_only=True)
    assert book.sheetnames == ["Delivered files", "items", "loans", "requests", "fines"]
    for name in ("items", "loans", "requests", "fines"):
        rows = list(book[name].iter_rows(values_only=True))
        assert rows[0][:2] == ("file", f"{name}.csv")
        header = next(csv.reader([members[f"{name}.csv"].decode("utf-8").splitlines()[0]]))
        assert [r[0] for r in rows[2:]] == header, name  # every column, in the file's order
        assert all(r[1] for r in rows[2:]), f"{name}: a column without its Alma field"
    delivered = {r[0]: r for r in book["Delivered files"].iter_rows(min_row=2, values_only=True)}
    assert set(delivered) == set(members) - {FIELD_MAPPING_MEMBER, MANIFEST_MEMBER}
    assert delivered["loans.csv"][1:3] == ("CSV, UTF-8, comma-separated, header row", 2)
    assert delivered["users.xml"][1] == "Alma user XML (rest_users.xsd), UTF-8"
    assert delivered["bibs_BNU01.mrc"][2] == 5


def test_the_form_describes_every_column_the_transform_writes() -> None:
    assert ITEMS.header == ITEM_COLUMNS


def test_a_column_without_an_alma_field_stops_the_package(store: ArtifactStore, tmp_path: Path) -> None:
    items = commit_alma(store, tmp_path, "items", [("Z30", "csv", b"barcode,shelf_mark\nB1,X\n", 1)])
    with pytest.raises(PackageError, match="column shelf_mark of items.csv has no Alma field"):
        build_package(store, SCOPE, {"items": items}, FORM, "demo")
    loans = commit_alma(store, tmp_path, "loans", [("loans", "jsonl", b'{"item_barcode":"B1","x":1}\n', 1)])
    with pytest.raises(PackageError, match=r"line 1: x not a column of loans.csv"):
        build_package(store, SCOPE, {"loans": loans}, FORM, "demo")
