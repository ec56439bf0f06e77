"""Search artifacts for planted values, through the containers that would hide them from a byte search.

Parquet parts are zstd-compressed (a PIN in them is invisible to ``bytes.find``), delivery
packages and workbooks are zip files, some outputs may be gzip: each is opened and searched
value by value, member by member. Everything else is searched as it is stored.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Iterable, Iterator

import pyarrow.parquet as pq

PARQUET, ZIP, GZIP = b"PAR1", b"PK\x03\x04", b"\x1f\x8b"


def leaves(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """(path, searchable bytes) of an artifact and of everything packed inside it."""
    if data[:4] == PARQUET:
        table = pq.read_table(io.BytesIO(data))
        values = [*table.column_names, *(str(v) for col in table.columns for v in col.to_pylist())]
        yield f"{name} (parquet values)", "\x00".join(values).encode("utf-8", "surrogateescape")
    elif data[:4] == ZIP:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield from leaves(f"{name}!{member}", archive.read(member))
    elif data[:2] == GZIP:
        yield from leaves(f"{name} (gunzipped)", gzip.decompress(data))
    else:
        yield name, data


def find(needles: Iterable[str], artifacts: Iterable[tuple[str, bytes]]) -> dict[str, set[str]]:
    """Which needles each artifact (or packed member) holds; artifacts holding none are left out."""
    wanted = sorted({n.encode() for n in needles if n}, key=len, reverse=True)
    if not wanted:
        raise ValueError("nothing to search for")
    pattern = re.compile(b"|".join(re.escape(n) for n in wanted))
    found: dict[str, set[str]] = {}
    for name, data in artifacts:
        for leaf, content in leaves(name, data):
            hits = {m.decode() for m in pattern.findall(content)}
            if hits:
                found.setdefault(leaf, set()).update(hits)
    return found
