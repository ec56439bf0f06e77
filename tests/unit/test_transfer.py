"""Delivering the package to a real SFTP server on localhost (paramiko, and Airflow's SFTPHook) and to S3."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import paramiko
import pytest

from aleph2alma.delivery.package import PackageResult
from aleph2alma.delivery.transfer import (
    DeliveryError,
    DeliveryTargetError,
    TransferInterrupted,
    deliver,
    deliver_s3,
    deliver_sftp,
    no_remote_hash,
    parse_target,
)
from aleph2alma.storage import ArtifactStore
from sftp_server import SftpTestServer, sftp_server_fixture  # noqa: F401  (the sftp_server fixture)

SIZE = 3_000_000  # several SFTP write windows, small enough to be quick


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "out" / "demo_migration_test_load_run1.zip"
    path.parent.mkdir()
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
def stored(store: ArtifactStore, package: Path) -> PackageResult:
    file = store.put_file("demo/runs/d/r/package/delivery/" + package.name, package)
    return PackageResult(file.key, store.uri(file.key), file.bytes, file.sha256)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_sleep(delays: list[float]) -> Any:
    return delays.append


# --- SFTP ------------------------------------------------------------------------------------


def test_upload_verified_by_reading_back_lands_under_its_final_name(
    sftp_server: SftpTestServer, package: Path
) -> None:
    sftp = sftp_server.connect()
    done = deliver_sftp(package, sftp, "/incoming")
    final = sftp_server.local("/incoming/" + package.name)
    assert (done.remote_path, done.bytes, done.sha256, done.verified) == (
        f"/incoming/{package.name}",
        SIZE,
        sha256(package),
        True,
    )
    assert done.method == "read-back" and not done.already
    assert final.read_bytes() == package.read_bytes()
    assert sorted(p.name for p in final.parent.iterdir()) == [package.name], "no .part left behind"
    assert sftp.stat("/incoming").st_size is not None, "a client passed in is left open"


def test_remote_sha256sum_is_used_when_the_server_allows_exec(
    sftp_server: SftpTestServer, package: Path
) -> None:
    sftp_server.faults.exec_sha256sum = True
    done = deliver_sftp(package, sftp_server.connect(), "/incoming")
    assert done.method == "sha256sum"
    assert sftp_server.execs == [f"sha256sum -- /incoming/{package.name}.part"]


def test_a_fast_digest_that_disagrees_is_confirmed_by_reading_back(
    sftp_server: SftpTestServer, package: Path
) -> None:
    sftp_server.faults.exec_sha256sum = sftp_server.faults.exec_wrong_digest = True
    done = deliver_sftp(package, sftp_server.connect(), "/incoming")
    assert (done.method, done.verified) == ("read-back", True)


def test_check_file_extension_digest_is_used_when_offered(sftp_server: SftpTestServer, package: Path) -> None:
    """asyncssh has no check-file; this client adds it the way a server would answer (raw digest)."""

    class CheckFileClient:
        def __init__(self, sftp: paramiko.SFTPClient) -> None:
            self.sftp = sftp

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sftp, name)

        def open(self, path: str, mode: str = "r", bufsize: int = -1) -> Any:
            handle = self.sftp.open(path, mode, bufsize)
            local = sftp_server.local(path)
            handle.check = lambda algorithm, *_: hashlib.new(algorithm, local.read_bytes()).digest()
            return handle

    done = deliver_sftp(package, CheckFileClient(sftp_server.connect()), "/incoming")
    assert done.method == "check-file"


def test_delivering_twice_sends_nothing_the_second_time(sftp_server: SftpTestServer, package: Path) -> None:
    first = deliver_sftp(package, sftp_server.connect, "/incoming")
    written = sftp_server.bytes_written
    again = deliver_sftp(package, sftp_server.connect, "/incoming")
    assert again.already and again.verified and again.sha256 == first.sha256
    assert sftp_server.bytes_written == written == SIZE


def test_a_server_that_corrupts_the_upload_is_a_delivery_error(
    sftp_server: SftpTestServer, package: Path
) -> None:
    sftp_server.faults.flip_byte_at = 1_234_567
    with pytest.raises(
        DeliveryError, match=rf"{package.name}.part does not match .* expected {sha256(package)}"
    ):
        deliver_sftp(package, sftp_server.connect, "/incoming")
    assert list(sftp_server.local("/incoming").iterdir()) == [], "nothing published, the bad .part removed"


def test_a_different_file_under_the_final_name_is_never_overwritten(
    sftp_server: SftpTestServer, package: Path
) -> None:
    other = sftp_server.local("/incoming/" + package.name)
    other.write_bytes(b"an older package")
    with pytest.raises(DeliveryError, match="already on the server .* refusing to overwrite"):
        deliver_sftp(package, sftp_server.connect, "/incoming")
    other.write_bytes(os.urandom(SIZE))  # same size, other bytes: caught by the checksum
    with pytest.raises(DeliveryError, match="refusing to overwrite"):
        deliver_sftp(package, sftp_server.connect, "/incoming")
    assert sftp_server.bytes_written == 0


def test_an_interrupted_transfer_is_resumed_on_a_new_connection(
    sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(8 << 20))
    sftp_server.faults.drop_after = 5 << 20
    delays: list[float] = []
    done = deliver_sftp(
        big, sftp_server.connect, "/incoming", backoff=0.5, resume_margin=5 << 19, sleep=no_sleep(delays)
    )
    assert done.verified and sftp_server.local(done.remote_path).read_bytes() == big.read_bytes()
    assert sftp_server.connections == 2 and delays == [0.5]
    first, second = sftp_server.written_per_connection
    assert second < 8 << 20, "the second attempt resumed rather than restarted"
    assert sftp_server.wait_closed() == 0, "every connection it opened is closed"


def test_every_connection_opened_is_closed_and_one_passed_in_is_left_open(
    sftp_server: SftpTestServer, package: Path
) -> None:
    sftp_server.faults.drop_after = 1_000_000
    deliver_sftp(package, sftp_server.connect, "/incoming", sleep=no_sleep([]))
    assert sftp_server.connections == 2 and sftp_server.wait_closed() == 0
    mine = sftp_server.connect()
    deliver_sftp(package, mine, "/incoming")
    assert mine.stat("/incoming").st_size is not None and sftp_server.open_connections == 1


def _part_sizes(sftp_server: SftpTestServer, part: str, delays: list[float]) -> Any:
    """A ``sleep`` that records the ``.part``'s size on the server between attempts."""

    def sleep(delay: float) -> None:
        delays.append(sftp_server.local(part).stat().st_size)

    return sleep


@pytest.mark.parametrize(
    ("margin", "whole_again"), [(0, True), (1 << 20, False)], ids=["no-margin", "margin-covers-the-hole"]
)
def test_a_hole_left_by_out_of_order_writes_is_caught_by_the_checksum(
    sftp_server: SftpTestServer, tmp_path: Path, margin: int, whole_again: bool
) -> None:
    """The dropped connection leaves a ``.part`` with a hole before its last bytes: resuming at its
    size (no margin) leaves the hole in, the checksum on the far side catches it and the package is
    uploaded whole once more; a margin wider than the hole re-sends it and verifies at once."""
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(6 << 20))
    sftp_server.faults.drop_after, sftp_server.faults.drop_leaves_hole = 5 << 20, True
    sizes: list[float] = []
    done = deliver_sftp(
        big,
        sftp_server.connect,
        "/incoming",
        resume_margin=margin,
        sleep=_part_sizes(sftp_server, "/incoming/big.zip.part", sizes),
    )
    assert done.verified and sftp_server.local(done.remote_path).read_bytes() == big.read_bytes()
    [part_size] = sizes
    first, second = sftp_server.written_per_connection
    assert first < part_size, "the .part has a hole: fewer bytes stored than its size"
    resumed = (6 << 20) - (int(part_size) - margin)
    assert second == resumed + ((6 << 20) if whole_again else 0)
    assert not sftp_server.local("/incoming/big.zip.part").exists() and sftp_server.wait_closed() == 0


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_connection_dropped_during_the_final_rename(
    sftp_server: SftpTestServer, package: Path, when: str
) -> None:
    """Dropped before the rename: the next attempt finds the verified ``.part``, re-sends only the
    resume margin, verifies and renames. Dropped after it (the answer lost): the next attempt finds
    the final file, verifies it and sends nothing. Either way one rename, one final file, no ``.part``."""
    sftp_server.faults.drop_on_rename = when
    delays: list[float] = []
    done = deliver_sftp(package, sftp_server.connect, "/incoming", resume_margin=100_000, sleep=delays.append)
    assert done.verified and sftp_server.local(done.remote_path).read_bytes() == package.read_bytes()
    assert (sftp_server.connections, len(delays), sftp_server.renames) == (2, 1, 1)
    assert sftp_server.written_per_connection == [SIZE, 100_000 if when == "before" else 0]
    assert done.already is (when == "after")
    assert sorted(p.name for p in sftp_server.local("/incoming").iterdir()) == [package.name]
    assert sftp_server.wait_closed() == 0


def test_a_server_that_stops_answering_is_timed_out_and_the_upload_resumed(
    sftp_server: SftpTestServer, package: Path
) -> None:
    """The server never answers a write: only the I/O timeout deliver_sftp puts on a client without
    one ends the wait (the stall is endless, so the test does not race the timeout), then a fresh
    connection resumes the upload."""
    sftp_server.faults.stall_after = 1_000_000
    sizes: list[float] = []
    done = deliver_sftp(
        package,
        sftp_server.connect,
        "/incoming",
        io_timeout=0.5,
        resume_margin=100_000,
        sleep=_part_sizes(sftp_server, f"/incoming/{package.name}.part", sizes),
    )
    assert done.verified and sftp_server.local(done.remote_path).read_bytes() == package.read_bytes()
    [part_size] = sizes
    assert sftp_server.connections == 2 and 0 < part_size <= 1_000_000
    assert sftp_server.written_per_connection[1] == SIZE - (part_size - 100_000), "resumed, not restarted"
    assert sftp_server.wait_closed() == 0


def test_a_resumed_part_that_does_not_verify_is_uploaded_whole(
    sftp_server: SftpTestServer, package: Path
) -> None:
    stale = sftp_server.local(f"/incoming/{package.name}.part")
    stale.write_bytes(b"\0" * 1000)  # left by an earlier attempt, not a prefix of the package
    done = deliver_sftp(package, sftp_server.connect, "/incoming", resume_margin=0)
    assert done.verified and sftp_server.local(done.remote_path).read_bytes() == package.read_bytes()
    assert sftp_server.written_per_connection == [SIZE - 1000 + SIZE], "resumed, then uploaded whole"


def test_transient_failures_past_the_last_attempt(sftp_server: SftpTestServer, package: Path) -> None:
    def flaky() -> paramiko.SFTPClient:
        sftp_server.faults.drop_after = 500_000  # every connection drops at the first write past 500 kB
        return sftp_server.connect()

    delays: list[float] = []
    with pytest.raises(TransferInterrupted, match="failed 3 times"):
        deliver_sftp(package, flaky, "/incoming", attempts=3, backoff=1, sleep=no_sleep(delays))
    assert delays == [1, 2] and sftp_server.connections == 3
    assert not sftp_server.local(f"/incoming/{package.name}").exists()


def test_a_missing_remote_directory_is_permanent(sftp_server: SftpTestServer, package: Path) -> None:
    with pytest.raises(DeliveryError, match="remote directory /outgoing does not exist"):
        deliver_sftp(package, sftp_server.connect, "/outgoing")


def test_forced_read_back(sftp_server: SftpTestServer, package: Path) -> None:
    sftp_server.faults.exec_sha256sum = True
    assert (
        deliver_sftp(package, sftp_server.connect, "/incoming", verify=no_remote_hash).method == "read-back"
    )
    assert sftp_server.execs == []


def test_through_airflow_sftp_hook(
    sftp_server: SftpTestServer,
    store: ArtifactStore,
    stored: PackageResult,
    package: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The production wiring: ``wiring.sftp_client`` → ``SFTPHook(ssh_conn_id=...).get_conn()``."""
    from aleph2alma import wiring

    monkeypatch.setenv("AIRFLOW_CONN_TEST_MFT", json.dumps(sftp_server.airflow_connection()))
    opened: list[Any] = []

    def sftp_client(conn_id: str) -> Any:
        opened.append(client := wiring.sftp_client(conn_id))
        return client

    [done] = deliver(
        store, stored, ["sftp://test_mft/incoming"], sftp_client=sftp_client, s3_client=lambda: store.client
    )
    assert (done.target, done.remote_path, done.sha256) == (
        "sftp://test_mft/incoming",
        f"/incoming/{package.name}",
        stored.sha256,
    )
    assert isinstance(opened[0], paramiko.SFTPClient)
    assert not opened[0].get_channel().get_transport().is_active(), "the connection it opened is closed"
    assert sftp_server.wait_closed() == 0
    assert sftp_server.local(done.remote_path).read_bytes() == package.read_bytes()


# --- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def dest_bucket(store: ArtifactStore) -> str:
    bucket = f"t-dest-{uuid.uuid4().hex[:12]}"
    store.client.create_bucket(Bucket=bucket)
    return bucket


@pytest.mark.parametrize(
    ("server_side", "reread", "method"),
    [(None, False, "head+metadata"), (False, True, "reread")],
    ids=["server-side-copy", "streamed-reread"],
)
def test_s3_copy_to_a_second_bucket_is_verified(
    store: ArtifactStore,
    stored: PackageResult,
    dest_bucket: str,
    server_side: bool | None,
    reread: bool,
    method: str,
) -> None:
    done = deliver_s3(
        store, stored.key, store.client, dest_bucket, "/to-exlibris/", server_side=server_side, reread=reread
    )
    key = f"to-exlibris/{stored.name}"
    assert (done.target, done.remote_path, done.method, done.verified) == (
        f"s3://{dest_bucket}/to-exlibris",
        key,
        method,
        True,
    )
    body = store.client.get_object(Bucket=dest_bucket, Key=key)
    assert body["Metadata"]["sha256"] == stored.sha256
    assert body["ServerSideEncryption"] == "AES256"
    assert hashlib.sha256(body["Body"].read()).hexdigest() == stored.sha256
    again = deliver_s3(store, stored.key, store.client, dest_bucket, "to-exlibris")
    assert again.already and again.sha256 == stored.sha256


def test_s3_never_overwrites_a_different_object(
    store: ArtifactStore, stored: PackageResult, dest_bucket: str
) -> None:
    store.client.put_object(Bucket=dest_bucket, Key=stored.name, Body=b"older", Metadata={"sha256": "0" * 64})
    with pytest.raises(DeliveryError, match="a different object is already there .* refusing to overwrite"):
        deliver_s3(store, stored.key, store.client, dest_bucket, "")
    assert store.client.get_object(Bucket=dest_bucket, Key=stored.name)["Body"].read() == b"older"


def test_deliver_to_sftp_and_s3(
    sftp_server: SftpTestServer, store: ArtifactStore, stored: PackageResult, dest_bucket: str
) -> None:
    results = deliver(
        store,
        stored,
        ["sftp://mft/incoming", f"s3://{dest_bucket}/alma"],
        sftp_client=lambda conn_id: sftp_server.connect(),
        s3_client=lambda: store.client,
    )
    assert [(d.target, d.verified, d.sha256) for d in results] == [
        ("sftp://mft/incoming", True, stored.sha256),
        (f"s3://{dest_bucket}/alma", True, stored.sha256),
    ]
    assert results[1].remote_path == f"alma/{stored.name}"


# --- targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sftp://exlibris_mft/incoming/bnu", ("sftp", "exlibris_mft", "/incoming/bnu")),
        ("sftp://mft", ("sftp", "mft", "/")),
        ("s3://bnu-delivery/test-load/1", ("s3", "bnu-delivery", "test-load/1")),
        ("s3://bnu-delivery", ("s3", "bnu-delivery", "")),
    ],
    ids=["sftp", "sftp-root", "s3", "s3-bucket"],
)
def test_parse_target(uri: str, expected: tuple[str, str, str]) -> None:
    target = parse_target(uri)
    assert (target.scheme, target.location, target.path) == expected


@pytest.mark.parametrize(
    "uri",
    ["ftp://mft/in", "sftp:///in", "s3://B/x", "/local/dir"],
    ids=["ftp", "no-conn-id", "bad-bucket", "path"],
)
def test_bad_targets_name_the_input_and_what_is_accepted(uri: str) -> None:
    with pytest.raises(DeliveryTargetError, match=rf"{uri!r}.*accepted: sftp://<connection id>/<remote dir>"):
        parse_target(uri)


def test_every_target_is_checked_before_anything_is_sent(store: ArtifactStore, stored: PackageResult) -> None:
    def refuse(*_: Any) -> Any:
        raise AssertionError("no client may be opened")

    with pytest.raises(DeliveryTargetError, match="ftp://mft"):
        deliver(store, stored, ["s3://ok-bucket/x", "ftp://mft/in"], sftp_client=refuse, s3_client=refuse)
