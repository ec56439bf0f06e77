"""Hand-made Z-table rows for unit tests, shaped as the extraction writes them."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aleph2alma.aleph.ztables import ZTable


def ztable(zt: ZTable, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as an Aleph extract holds them: CHAR values blank-padded, dates and numbers 0 unless given."""
    cols = {}
    for c in zt.extracted:
        values = [r.get(c.name, "" if c.kind == "char" else 0) for r in rows]
        if c.kind == "char":
            cols[c.name] = pa.array([None if v is None else v.ljust(c.width) for v in values], pa.string())
        else:
            cols[c.name] = pa.array(values, pa.int64())
    return pa.table(cols)
