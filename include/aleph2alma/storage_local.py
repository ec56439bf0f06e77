"""A local folder that answers the S3 calls ``ArtifactStore`` makes, for runs outside Airflow.

``aleph2alma validate`` runs the DAG's steps in one process on a librarian's machine, with
no S3 endpoint: the artifacts land in ``<folder>/<bucket>/<key>`` instead. Only the calls
``storage.ArtifactStore`` uses are answered; anything else is an AttributeError, on purpose.
Server-side encryption and tags are S3's: a local folder takes the arguments and ignores
them (encrypt the disk instead); ``head_object`` reports the file's own size and sha256.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from aleph2alma.storage import sha256_file


class _Body:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> bytes:
        return self.path.read_bytes()

    def iter_lines(self, keepends: bool = False) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            for line in fh:
                yield line if keepends else line.rstrip(b"\r\n")


class _Paginator:
    def __init__(self, client: LocalObjectClient) -> None:
        self.client = client

    def paginate(self, Bucket: str, Prefix: str = "") -> Iterator[dict[str, Any]]:  # noqa: N803 (boto3's names)
        root = self.client.root / Bucket
        keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        yield {"Contents": [{"Key": k} for k in keys if k.startswith(Prefix)]}


class LocalObjectClient:
    """boto3's S3 client, as far as ``ArtifactStore`` uses it, over a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, bucket: str, key: str) -> Path:
        path = (self.root / bucket / key).resolve()
        if not path.is_relative_to((self.root / bucket).resolve()):
            raise ValueError(f"key {key!r} leaves the bucket folder")
        return path

    def _existing(self, bucket: str, key: str) -> Path:
        path = self._path(bucket, key)
        if not path.is_file():
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": key}}, "GetObject")
        return path

    def head_bucket(self, Bucket: str) -> None:  # noqa: N803
        if not (self.root / Bucket).is_dir():
            raise ClientError({"Error": {"Code": "404", "Message": Bucket}}, "HeadBucket")

    def create_bucket(self, Bucket: str) -> None:  # noqa: N803
        (self.root / Bucket).mkdir(parents=True, exist_ok=True)

    def upload_file(self, filename: str, bucket: str, key: str, ExtraArgs: Any = None) -> None:  # noqa: N803
        dest = self._path(bucket, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(filename, dest)

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:  # noqa: N803
        dest = self._path(Bucket, Key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Body)

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        try:
            path = self._existing(Bucket, Key)
        except ClientError:
            raise ClientError({"Error": {"Code": "404", "Message": Key}}, "HeadObject") from None
        return {"ContentLength": path.stat().st_size, "Metadata": {"sha256": sha256_file(path)}}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803
        return {"Body": _Body(self._existing(Bucket, Key))}

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        shutil.copyfile(self._existing(bucket, key), filename)

    def get_paginator(self, name: str) -> _Paginator:
        if name != "list_objects_v2":
            raise AttributeError(name)
        return _Paginator(self)
