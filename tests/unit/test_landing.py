"""ALEPHSEQ landing locations: a local folder, an S3 prefix, and the Aleph server over SFTP."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aleph2alma.aleph.alephseq import split_ranges
from aleph2alma.aleph.landing import LandingError, LocalLanding, S3Landing, SftpLanding, parse_landing
from sftp_server import SftpTestServer

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "samples" / "usp_41_bibs.seq"


def _read_all(landing, name: str, size: int) -> bytes:
    ranges = split_ranges(SAMPLE, 4096)
    assert len(ranges) > 2
    return b"".join(b"".join(landing.read_range(name, start, end)) for start, end in ranges)


def test_local_folder(tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "BNU01.seq")
    landing = parse_landing(tmp_path.as_uri())
    assert isinstance(landing, LocalLanding)
    assert _read_all(landing, "BNU01.seq", landing.size("BNU01.seq")) == SAMPLE.read_bytes()


def test_s3_prefix_reads_ranges(store, tmp_path: Path) -> None:
    store.client.upload_file(str(SAMPLE), store.bucket, "exports/BNU01.seq")
    landing = parse_landing(f"s3://{store.bucket}/exports", s3_client=lambda: store.client)
    assert isinstance(landing, S3Landing)
    assert landing.size("BNU01.seq") == SAMPLE.stat().st_size
    assert _read_all(landing, "BNU01.seq", landing.size("BNU01.seq")) == SAMPLE.read_bytes()
    assert landing.fetch("BNU01.seq", tmp_path / "x.seq").read_bytes() == SAMPLE.read_bytes()


def test_aleph_server_over_sftp(sftp_server: SftpTestServer, tmp_path: Path) -> None:
    (sftp_server.root / "scratch").mkdir()
    shutil.copy(SAMPLE, sftp_server.root / "scratch" / "BNU01.seq")
    landing = parse_landing("sftp://aleph_sftp/scratch", sftp_client=lambda conn_id: sftp_server.connect())
    assert isinstance(landing, SftpLanding)
    assert landing.size("BNU01.seq") == SAMPLE.stat().st_size
    assert _read_all(landing, "BNU01.seq", landing.size("BNU01.seq")) == SAMPLE.read_bytes()
    assert landing.fetch("BNU01.seq", tmp_path / "x.seq").read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "no ALEPHSEQ landing location given"),
        ("ftp://host/x", "unsupported landing location"),
        ("/no/such/dir", "does not exist"),
        ("s3://bucket/x", "needs an S3 connection"),
    ],
    ids=["empty", "ftp", "missing-dir", "s3-without-client"],
)
def test_bad_landing_uris_are_clear_errors(uri: str, message: str) -> None:
    with pytest.raises(LandingError, match=message):
        parse_landing(uri)


def test_missing_file_names_the_location(tmp_path: Path) -> None:
    with pytest.raises(LandingError, match="BNU09.seq is not in the landing directory"):
        LocalLanding(tmp_path).size("BNU09.seq")
