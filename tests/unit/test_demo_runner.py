"""`make demo` leaves what Ex Libris would receive where a newcomer can open it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from aleph2alma.storage import ArtifactStore
from aleph2alma.storage_local import LocalObjectClient
from aleph2alma_dev.demo.runner import copy_delivery


def package(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_the_delivered_package_and_its_members_are_copied_and_a_later_one_replaces_it(tmp_path: Path) -> None:
    store = ArtifactStore(LocalObjectClient(tmp_path / "s3"), "demo-bucket")
    store.ensure_bucket()
    out = tmp_path / "demo-output"
    store.put_bytes("demo/delivery/first.zip", package({"users.xml": b"<users/>", "stale.csv": b"x"}))
    store.put_bytes("demo/delivery/second.zip", package({"users.xml": b"<users><user/></users>"}))

    first = copy_delivery(store, "s3://demo-bucket/demo/delivery/first.zip", out)
    assert first == out / "delivery" / "first.zip" and (out / "delivery" / "first" / "stale.csv").exists()

    second = copy_delivery(store, "s3://demo-bucket/demo/delivery/second.zip", out)
    assert sorted(p.name for p in (out / "delivery").iterdir()) == ["second", "second.zip"]
    assert (out / "delivery" / "second" / "users.xml").read_bytes() == b"<users><user/></users>"
    assert zipfile.ZipFile(second).namelist() == ["users.xml"]
