"""`make demo` leaves what Ex Libris would receive where a newcomer can open it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from aleph2alma.storage import ArtifactStore
from aleph2alma.storage_local import LocalObjectClient
from aleph2alma_dev.demo.runner import copy_delivery


def package(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_each_delivered_package_is_copied_beside_the_others_and_a_copy_again_replaces_its_members(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(LocalObjectClient(tmp_path / "s3"), "demo-bucket")
    store.ensure_bucket()
    out = tmp_path / "demo-output"
    store.put_bytes("demo/delivery/test_load.zip", package({"users.xml": b"<users/>", "stale.csv": b"x"}))
    store.put_bytes("demo/delivery/inventory.zip", package({"bibs_BNU01.mrc": b"\x1d"}))

    first = copy_delivery(store, "s3://demo-bucket/demo/delivery/test_load.zip", out)
    assert (
        first == out / "delivery" / "test_load.zip"
        and (out / "delivery" / "test_load" / "stale.csv").exists()
    )

    second = copy_delivery(store, "s3://demo-bucket/demo/delivery/inventory.zip", out)
    assert sorted(p.name for p in (out / "delivery").iterdir()) == [
        "inventory",
        "inventory.zip",
        "test_load",
        "test_load.zip",
    ]
    assert zipfile.ZipFile(second).namelist() == ["bibs_BNU01.mrc"]

    store.put_bytes("demo/delivery/test_load.zip", package({"users.xml": b"<users><user/></users>"}))
    copy_delivery(store, "s3://demo-bucket/demo/delivery/test_load.zip", out)
    assert sorted(p.name for p in (out / "delivery" / "test_load").iterdir()) == ["users.xml"]
    assert (out / "delivery" / "test_load" / "users.xml").read_bytes() == b"<users><user/></users>"


def test_the_demo_keeps_what_the_control_room_reads_and_make_airflow_loads_it_back(
    tmp_path: Path, s3_stack: Any
) -> None:
    from aleph2alma_dev.demo.runner import restore_bucket, save_bucket
    from aleph2alma_dev.devstack import BUCKET

    store = ArtifactStore(LocalObjectClient(tmp_path / "s3"), "demo-bucket")
    store.ensure_bucket()
    store.put_bytes("demo/state/plan/key_nodes/go_live/migration_cutover/c1.json", b'{"node": "go_live"}')
    store.put_bytes("demo/reports/migration_cutover/c1/run_summary.json", b"{}")
    store.put_bytes("demo/runs/migration_extract/e1/raw/bibs/part-0.mrc", b"\x1d")  # not read by the room
    out = tmp_path / "demo-output"
    assert save_bucket(store, out) == 2

    restored = ArtifactStore(s3_stack.s3_client(), BUCKET)
    assert restore_bucket(s3_stack, out) == 2
    assert (
        restored.get_bytes("demo/state/plan/key_nodes/go_live/migration_cutover/c1.json")
        == b'{"node": "go_live"}'
    )
    assert restore_bucket(s3_stack, tmp_path / "no-demo-yet") == 0
