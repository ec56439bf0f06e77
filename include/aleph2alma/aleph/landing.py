"""Where ALEPHSEQ exports land: a local directory, an S3 prefix, or the Aleph server over SFTP.

A landing location is named by a URI:

- ``file:///exports/aleph`` or a plain path: a directory on the worker;
- ``s3://bucket/prefix``: an S3 prefix (read with ranged GETs, so parts read only their bytes);
- ``sftp://<connection id>/absolute/path``: a directory on the Aleph server, reached through
  the Airflow SFTP connection of that id.

Every location can report a file's size, read a byte range, and fetch a file whole.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from aleph2alma.sftp_session import sftp_session

CHUNK = 1 << 20


class LandingError(ValueError):
    """A landing URI is malformed, or a file is missing from the landing location."""


def _span(fh: Any, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of a seekable file, in chunks."""
    fh.seek(start)
    remaining = end - start
    while remaining > 0 and (block := fh.read(min(CHUNK, remaining))):
        remaining -= len(block)
        yield block


class Landing(Protocol):
    @property
    def uri(self) -> str: ...

    def size(self, name: str) -> int: ...
    def read_range(self, name: str, start: int, end: int) -> Iterator[bytes]: ...
    def fetch(self, name: str, dest: Path) -> Path: ...


@dataclass
class LocalLanding:
    root: Path

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def _path(self, name: str) -> Path:
        path = self.root / name
        if not path.is_file():
            raise LandingError(f"{name} is not in the landing directory {self.root}")
        return path

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def read_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        with open(self._path(name), "rb") as fh:
            yield from _span(fh, start, end)

    def fetch(self, name: str, dest: Path) -> Path:
        # Already local: no copy needed to split or read it.
        return self._path(name)


@dataclass
class S3Landing:
    client: Any
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, name: str) -> str:
        return f"{self.prefix.rstrip('/')}/{name}" if self.prefix else name

    def size(self, name: str) -> int:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(name))["ContentLength"])
        except ClientError as exc:
            raise LandingError(f"{name} is not in the landing prefix {self.uri}") from exc

    def read_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        if end <= start:
            return
        body = self.client.get_object(
            Bucket=self.bucket, Key=self._key(name), Range=f"bytes={start}-{end - 1}"
        )["Body"]
        yield from body.iter_chunks(CHUNK)

    def fetch(self, name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._key(name), str(dest))
        return dest


@dataclass
class SftpLanding:
    """Reads from the Aleph server; ``open_sftp`` returns a paramiko-compatible SFTP client."""

    open_sftp: Callable[[], Any]
    conn_id: str
    root: str

    @property
    def uri(self) -> str:
        return f"sftp://{self.conn_id}{self.root}"

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    # each call opens its own connection and closes it (with its SSH transport) when done
    def size(self, name: str) -> int:
        with sftp_session(self.open_sftp) as sftp:
            try:
                return int(sftp.stat(self._path(name)).st_size)
            except OSError as exc:
                raise LandingError(f"{name} is not on the Aleph server at {self.uri}") from exc

    def read_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        with sftp_session(self.open_sftp) as sftp, sftp.open(self._path(name), "rb") as fh:
            yield from _span(fh, start, end)

    def fetch(self, name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with sftp_session(self.open_sftp) as sftp:
            with sftp.open(self._path(name), "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        return dest


def parse_landing(
    uri: str, *, s3_client: Callable[[], Any] | None = None, sftp_client: Callable[[str], Any] | None = None
) -> Landing:
    """Build the landing location a URI names; clients are supplied by the caller's wiring."""
    if not uri:
        raise LandingError(
            "no ALEPHSEQ landing location given; use file:///dir, s3://bucket/prefix or sftp://conn_id/path"
        )
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        root = Path(parsed.path if parsed.scheme else uri)
        if not root.is_dir():
            raise LandingError(f"landing directory {root} does not exist")
        return LocalLanding(root)
    if parsed.scheme == "s3":
        if s3_client is None:
            raise LandingError(f"{uri}: an S3 landing location needs an S3 connection")
        return S3Landing(s3_client(), parsed.netloc, parsed.path.lstrip("/"))
    if parsed.scheme == "sftp":
        if sftp_client is None:
            raise LandingError(f"{uri}: an SFTP landing location needs an SFTP connection")
        conn_id = parsed.netloc
        return SftpLanding(lambda: sftp_client(conn_id), conn_id, parsed.path or "/")
    raise LandingError(
        f"unsupported landing location {uri!r}; use file:///dir, s3://bucket/prefix or sftp://conn_id/path"
    )
