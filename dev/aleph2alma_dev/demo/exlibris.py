"""The demo's stand-in for Ex Libris' migration team (demo only; never used by DAGs).

In a real migration Ex Libris takes the delivery from the file-transfer server, loads it
into the Alma test environment and sends back a statistics workbook. Here the Alma API
emulator's import profiles do the load (bibs, then the MARC holdings, their 852 ``$b``/``$c``
mapped through the package's migration form as Ex Libris does, then items and users), and
this module writes the workbook from what the emulator loaded (holdings on their own tab),
uploads it to S3 and gives its URI — which the demo then pastes into the "test environment
loaded" gate, as an operator would.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pymarc

from aleph2alma.alma.holdings import map_852
from aleph2alma.alma.statistics import AreaStatistics, write_statistics_workbook
from aleph2alma.storage import ArtifactStore, parse_s3_uri

if TYPE_CHECKING:
    from aleph2alma.alma.form import MigrationForm

# Ex Libris loads the standard file set; bibs_with_items_*.mrc (an import-profile
# alternative to bibs_* + items.csv) is not loaded on top of it.
WITH_ITEMS = "bibs_with_items_"
IMPORTS = (
    ("bibs_", "bibs", "bib_inventory"),
    ("holdings.mrc", "holdings", "bib_inventory.holdings"),
    ("items.csv", "items", "bib_inventory.items"),
    ("users.xml", "users", "patron"),
)
FORM_MEMBER = "migration_form.xlsx"


def _records(name: str, data: bytes) -> int:
    if name.endswith(".mrc"):
        return data.count(b"\x1d")
    if name.endswith(".csv"):
        return max(data.count(b"\n") - 1, 0)
    return data.count(b"<user>")


def _form(archive: zipfile.ZipFile) -> MigrationForm | None:
    """The package's migration form; None when it has none (the Aleph codes then stay)."""
    from aleph2alma.alma.form import load_form

    if FORM_MEMBER not in archive.namelist():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FORM_MEMBER
        path.write_bytes(archive.read(FORM_MEMBER))
        return load_form(path)


def mapped_holdings(data: bytes, form: MigrationForm | None) -> bytes:
    """The holdings file with its 852 locations as Alma's (the form applied, as Ex Libris' load does)."""
    out = io.BytesIO()
    reader = pymarc.MARCReader(io.BytesIO(data), to_unicode=True, force_utf8=True, permissive=True)
    for record in reader:  # an unreadable record goes as it is: the import refuses it
        out.write(reader.current_chunk if record is None else map_852(record, form).as_marc())
    return out.getvalue()


def load_delivery(store: ArtifactStore, package_uri: str, emulator_url: str, workbook_key: str) -> str:
    """Import a delivered package into the emulator and write Ex Libris' statistics workbook."""
    bucket, key = parse_s3_uri(package_uri)
    archive = zipfile.ZipFile(io.BytesIO(store.client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    form = _form(archive)
    totals: dict[str, dict[str, int]] = {}
    rejected_records: dict[str, list[tuple[str, str]]] = {}
    with httpx.Client(base_url=emulator_url, timeout=600) as http:
        for prefix, kind, area in IMPORTS:
            for name in sorted(
                n for n in archive.namelist() if n.startswith(prefix) and not n.startswith(WITH_ITEMS)
            ):
                data = archive.read(name)
                body = mapped_holdings(data, form) if kind == "holdings" else data
                response = http.post(f"/_emulator/import/{kind}", content=body)
                response.raise_for_status()
                result: dict[str, Any] = response.json()[kind]
                counts = totals.setdefault(area, {"total": 0, "loaded": 0, "rejected": 0})
                counts["total"] += _records(name, data)
                counts["loaded"] += int(result.get("created", 0)) + int(result.get("updated", 0))
                counts["rejected"] += int(result.get("rejected", 0))
                rejected_records.setdefault(area, []).extend(
                    (str(i), str(reason)) for i, reason in result.get("rejected_records", [])
                )
    stats = {
        area: AreaStatistics(area, c["total"], c["loaded"], c["rejected"], rejected_records.get(area, []))
        for area, c in totals.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "statistics.xlsx"
        write_statistics_workbook(stats, path)
        store.put_file(workbook_key, path, kind="report")
    return store.uri(workbook_key)
