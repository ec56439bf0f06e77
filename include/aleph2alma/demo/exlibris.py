"""The demo's stand-in for Ex Libris' migration team (demo only; never used by DAGs).

In a real migration Ex Libris takes the delivery from the file-transfer server, loads it
into the Alma test environment and sends back a statistics workbook. Here the Alma API
emulator's import profiles do the load, and this module writes the workbook from what the
emulator loaded, uploads it to S3 and gives its URI — which the demo then pastes into the
"test environment loaded" gate, as an operator would.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import httpx

from aleph2alma.alma.statistics import AreaStatistics, write_statistics_workbook
from aleph2alma.storage import ArtifactStore, parse_s3_uri

IMPORTS = (("bibs_", "bibs", "bib_inventory"), ("items.csv", "items", "bib_inventory.items"),
           ("users.xml", "users", "patron"))


def _records(name: str, data: bytes) -> int:
    if name.endswith(".mrc"):
        return data.count(b"\x1d")
    if name.endswith(".csv"):
        return max(data.count(b"\n") - 1, 0)
    return data.count(b"<user>")


def load_delivery(store: ArtifactStore, package_uri: str, emulator_url: str, workbook_key: str) -> str:
    """Import a delivered package into the emulator and write Ex Libris' statistics workbook."""
    bucket, key = parse_s3_uri(package_uri)
    archive = zipfile.ZipFile(io.BytesIO(store.client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    totals: dict[str, dict[str, int]] = {}
    rejected_records: dict[str, list[tuple[str, str]]] = {}
    with httpx.Client(base_url=emulator_url, timeout=600) as http:
        for prefix, kind, area in IMPORTS:
            for name in sorted(n for n in archive.namelist() if n.startswith(prefix)):
                data = archive.read(name)
                response = http.post(f"/_emulator/import/{kind}", content=data)
                response.raise_for_status()
                result: dict[str, Any] = response.json()[kind]
                counts = totals.setdefault(area, {"total": 0, "loaded": 0, "rejected": 0})
                counts["total"] += _records(name, data)
                counts["loaded"] += int(result.get("created", 0)) + int(result.get("updated", 0))
                counts["rejected"] += int(result.get("rejected", 0))
                rejected_records.setdefault(area, []).extend(
                    (str(i), str(reason)) for i, reason in result.get("rejected_records", []))
    stats = {area: AreaStatistics(area, c["total"], c["loaded"], c["rejected"], rejected_records.get(area, []))
             for area, c in totals.items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "statistics.xlsx"
        write_statistics_workbook(stats, path)
        store.put_file(workbook_key, path, kind="report")
    return store.uri(workbook_key)
