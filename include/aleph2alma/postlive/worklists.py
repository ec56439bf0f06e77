"""Clean-up worklists after go-live: what librarians fix in Alma, record by record, and why.

Built from a run's extract (the raw Z-tables and ALEPHSEQ exports, as Aleph held them) and
its transform (what was delivered, what was rejected and why). One workbook, one tab per
worklist plus a summary tab, and one CSV per worklist, committed as the ``worklists`` stage
of the run that builds them. Each row names the record as Aleph knows it (Z30 key, system
number, Z303 patron id) and as Alma can find it (barcode, user primary id, the bib's
``035 (ALEPH)<library><sysno>``), whether it reached the delivery, the reason code it is
listed for and a sentence saying why.

The worklists (``WORKLISTS``):

``test_patrons``
    dummy and test patrons to purge in Alma (DOMAIN.md: "dummy/test patrons that Ex Libris
    cannot exclude by group"): an Aleph bor status of ``test_patron_bor_statuses``, a
    Z303_NAME matching ``test_patron_name_patterns`` or a primary id, patron id or Z308
    identifier matching ``test_patron_id_patterns``. The name is matched, never written:
    reports show patron ids, not names (ARCHITECTURE.md, invariant 8).
``items_without_barcode``
    Z30 items whose Z30_BARCODE is blank: Alma holds them without a barcode, so they cannot
    circulate; they are found through their bib's 035.
``suppressed_records``
    bibs and holdings Aleph suppressed from discovery: an ALEPHSEQ ``STA`` field (tag
    ``suppressed_tag``) whose ``$a`` is one of ``suppressed_values``. The transform drops
    every Aleph-local field, STA included (``marc.bibs``, ``marc.holdings``), so these
    records reach Alma *unsuppressed*: suppress them there. Z30 has no suppression column
    (Aleph hides items through tab15's OPAC display per status, which is configuration the
    extract does not read), so no item is listed here; the summary says so.
``items_in_process``
    items whose Z30_ITEM_PROCESS_STATUS is one of ``acquisition_process_statuses``: still on
    order or being received when Aleph froze; finish them in Alma's acquisitions.
``loans``
    loans whose Aleph dates or status Alma does not hold: rejected by the transform for a
    missing due date (``missing_due_date``); and, when the loans went in through Alma's API
    (``ApiLoad``), those Alma refused (its ``alma_<code>``), those whose due date was already
    past on the day of the load (Alma refuses a past due date, 401681: the loan keeps the
    policy's due date), those lost or claimed returned (the API cannot set a loan's process
    status) and, with ``list_api_loan_dates``, every loan the API created (its loan date is the
    day of the load, not Aleph's: ``reconcile.API_LOAN_DATE_NOTE``).

Memory: Z30 parts are read one at a time and only the listed rows are kept; the patron tables
are read whole, as the patron transform reads them.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from aleph2alma.phases.context import PhaseContext
from aleph2alma.postlive.settings import WorklistSettings
from aleph2alma.refs import Ref
from aleph2alma.runs import RunRef
from aleph2alma.storage import ArtifactStore, Manifest, RunScope, StoredFile

STAGE = "worklists"
ENTITY = "cleanup"
WORKBOOK = "worklists.xlsx"
SUMMARY = "summary.json"
DELIVERED = "delivered"

# --- what the worklists are ----------------------------------------------------------------


@dataclass(frozen=True)
class Worklist:
    """One worklist: its tab and CSV name, title, what to do, and its columns (``reason`` and
    ``detail`` always last)."""

    name: str
    title: str
    action: str
    columns: tuple[str, ...]

    @property
    def header(self) -> tuple[str, ...]:
        return (*self.columns, "reason", "detail")


_ITEM = ("item_key", "barcode", "sub_library", "collection", "call_number", "hol_sysno", "bib_035")
WORKLISTS: tuple[Worklist, ...] = (
    Worklist(
        "test_patrons",
        "Dummy and test patrons to purge",
        "Check each patron, then purge the user in Alma (or leave it, if it is a real reader).",
        ("patron_id", "primary_id", "bor_statuses", "alma"),
    ),
    Worklist(
        "items_without_barcode",
        "Items without a barcode",
        "Barcode the copy and add the barcode to the Alma item (find it through the bib's 035).",
        (*_ITEM, "alma"),
    ),
    Worklist(
        "suppressed_records",
        "Records suppressed from discovery in Aleph",
        "Suppress the record from discovery in Alma: the delivery did not carry Aleph's suppression.",
        ("entity", "library", "sysno", "bib_035", "value", "alma"),
    ),
    Worklist(
        "items_in_process",
        "Items still in acquisition",
        "Finish receiving or cancel the order in Alma, then clear the item's process type.",
        (*_ITEM, "process_status", "alma"),
    ),
    Worklist(
        "loans",
        "Loans whose Aleph dates or status Alma does not hold",
        "Correct the loan in Alma (due date, lost / claimed returned) or create it at the desk.",
        ("item_key", "barcode", "patron_id", "primary_id", "aleph_status", "loan_date", "due_date", "alma"),
    ),
)
BY_NAME = {w.name: w for w in WORKLISTS}

SUPPRESSION_NOTE = (
    "The transform drops Aleph-local fields, STA included: no Aleph suppression reaches Alma through "
    "the delivery, so every record in suppressed_records is in Alma unsuppressed. Z30 has no "
    "suppression column (Aleph hides items through tab15's OPAC display per status, not extracted): "
    "no item is listed there."
)

Row = dict[str, str]


class ApiLoad(Ref):
    """The run whose ``api_load`` step created the loans in Alma, and the day it ran."""

    run: RunRef
    loaded_on: date


class WorklistsResult(Ref):
    """The committed ``worklists`` stage: its manifest, the workbook and the rows per worklist."""

    manifest: str
    workbook: str
    summary: str
    counts: dict[str, int]
    by_reason: dict[str, dict[str, int]]


# --- reading the extract and the transform ------------------------------------------------


@dataclass
class _Reader:
    store: ArtifactStore
    extract: RunScope
    transform: RunScope
    tmp: Path
    _n: int = 0

    def raw(self, entity: str) -> Manifest:
        return self.store.stage_manifest(self.extract, "raw", entity)

    def alma(self, entity: str) -> Manifest:
        return self.store.stage_manifest(self.transform, "alma", entity)

    def table(self, files: Iterable[StoredFile], columns: list[str], filters: Any = None) -> Any:
        self._n += 1
        return self.store.read_table(list(files), self.tmp / f"t{self._n}", columns=columns, filters=filters)

    def rows(self, files: Iterable[StoredFile], columns: list[str], filters: Any = None) -> list[Row]:
        """Stripped text rows (Aleph pads CHAR columns; NULL becomes "")."""
        table = self.table(files, columns, filters)
        if table.num_rows == 0:
            return []
        data = {c: table.column(c).to_pylist() for c in columns}
        return [{c: _text(data[c][i]) for c in columns} for i in range(table.num_rows)]

    def rejects(self, entity: str) -> dict[str, str]:
        """Record id → reason of the transform's rejects of ``entity``."""
        files = [f for f in self.alma(entity).files if f.kind == "rejects"]
        return {r["record_id"]: r["reason"] for r in self.store.iter_jsonl(files)}

    def index(self, entity: str, columns: list[str], key: str, wanted: Iterable[str]) -> list[Row]:
        values = sorted(set(wanted))
        if not values:
            return []
        files = [f for f in self.alma(entity).files if f.kind == "index"]
        return self.rows(files, columns, filters=[(key, "in", values)])


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _alma_status(delivered: bool, reason: str | None) -> str:
    return DELIVERED if delivered else f"not delivered: {reason or 'withheld'}"


def _bib_035(library: str, sysno: str) -> str:
    return f"(ALEPH){library}{sysno}" if library and sysno else ""


# --- the worklists -------------------------------------------------------------------------


def test_patrons(reader: _Reader, settings: WorklistSettings) -> list[Row]:
    raw = reader.raw("patrons")
    z303 = reader.rows(raw.parts("Z303"), ["Z303_REC_KEY", "Z303_PRIMARY_ID", "Z303_NAME"])
    statuses: dict[str, set[str]] = {}
    for r in reader.rows(raw.parts("Z305"), ["Z305_REC_KEY", "Z305_BOR_STATUS"]):
        statuses.setdefault(r["Z305_REC_KEY"][:12].strip(), set()).add(r["Z305_BOR_STATUS"])
    identifiers: dict[str, list[str]] = {}
    for r in reader.rows(raw.parts("Z308"), ["Z308_REC_KEY", "Z308_ID"]):
        identifiers.setdefault(r["Z308_ID"], []).append(r["Z308_REC_KEY"][2:].strip())
    names = [re.compile(p) for p in settings.test_patron_name_patterns]
    ids = [re.compile(p) for p in settings.test_patron_id_patterns]
    test_groups = set(settings.test_patron_bor_statuses)
    rejected = reader.rejects("patrons")
    out = []
    for p in z303:
        key, primary = p["Z303_REC_KEY"], p["Z303_PRIMARY_ID"]
        groups = sorted(statuses.get(key, set()))
        reasons, details = [], []
        if hit := sorted(test_groups.intersection(groups)):
            reasons.append("test_user_group")
            details.append(f"bor status {', '.join(hit)} is a test group")
        if hit_name := next((rx.pattern for rx in names if rx.search(p["Z303_NAME"])), None):
            reasons.append("test_name")
            details.append(f"Z303_NAME matches {hit_name}")
        candidates = [("patron id", key), ("primary id", primary)]
        candidates += [("Z308 identifier", i) for i in identifiers.get(key, [])]
        hit_id = next(
            ((what, rx.pattern) for what, v in candidates for rx in ids if v and rx.search(v)), None
        )
        if hit_id:
            reasons.append("test_id")
            details.append(f"{hit_id[0]} matches {hit_id[1]}")
        if reasons:
            delivered = key not in rejected
            out.append(
                {
                    "patron_id": key,
                    "primary_id": primary,
                    "bor_statuses": ", ".join(groups),
                    "alma": _alma_status(delivered, rejected.get(key)),
                    "reason": ",".join(reasons),
                    "detail": "; ".join(details),
                }
            )
    return out


_Z30 = [
    "Z30_REC_KEY",
    "Z30_BARCODE",
    "Z30_SUB_LIBRARY",
    "Z30_COLLECTION",
    "Z30_CALL_NO",
    "Z30_ITEM_PROCESS_STATUS",
    "Z30_HOL_DOC_NUMBER_X",
]


def _listed_items(reader: _Reader, statuses: tuple[str, ...]) -> Iterator[Row]:
    """Z30 rows without a barcode or in one of ``statuses``, one part at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from aleph2alma.alma.items import text_column

    for part in reader.raw("items").parts("Z30"):
        table = reader.table([part], _Z30)
        stripped = pa.table({c: text_column(table, c) for c in _Z30})
        mask = pc.or_(
            pc.equal(stripped["Z30_BARCODE"], ""),
            pc.is_in(stripped["Z30_ITEM_PROCESS_STATUS"], value_set=pa.array(statuses, pa.string())),
        )
        yield from stripped.filter(mask).to_pylist()


def items(reader: _Reader, settings: WorklistSettings) -> tuple[list[Row], list[Row]]:
    """(items without barcode, items in acquisition)."""
    listed = list(_listed_items(reader, settings.acquisition_process_statuses))
    keys = [r["Z30_REC_KEY"] for r in listed]
    delivered = {
        r["aleph_item_key"]: r
        for r in reader.index(
            "items", ["aleph_item_key", "bib_library", "bib_sysno", "process_type"], "aleph_item_key", keys
        )
    }
    rejected = reader.rejects("items") if len(delivered) < len(set(keys)) else {}
    holdings = [r["Z30_HOL_DOC_NUMBER_X"].zfill(9) for r in listed if r["Z30_HOL_DOC_NUMBER_X"]]
    hol_bibs = {
        r["sysno"]: r
        for r in reader.index("holdings", ["sysno", "bib_library", "bib_sysno"], "sysno", holdings)
    }
    no_barcode, in_process = [], []
    for r in listed:
        key, hol = r["Z30_REC_KEY"], r["Z30_HOL_DOC_NUMBER_X"].zfill(9) if r["Z30_HOL_DOC_NUMBER_X"] else ""
        link = delivered.get(key) or hol_bibs.get(hol) or {}
        row = {
            "item_key": key,
            "barcode": r["Z30_BARCODE"],
            "sub_library": r["Z30_SUB_LIBRARY"],
            "collection": r["Z30_COLLECTION"],
            "call_number": r["Z30_CALL_NO"],
            "hol_sysno": hol,
            "bib_035": _bib_035(link.get("bib_library", ""), link.get("bib_sysno", "")),
            "alma": _alma_status(key in delivered, rejected.get(key)),
        }
        if not r["Z30_BARCODE"]:
            no_barcode.append(
                row
                | {"reason": "missing_barcode", "detail": "Z30_BARCODE is blank: the item cannot circulate"}
            )
        status = r["Z30_ITEM_PROCESS_STATUS"]
        if status in settings.acquisition_process_statuses:
            process_type = delivered.get(key, {}).get("process_type", "")
            in_process.append(
                row
                | {
                    "process_status": status,
                    "reason": f"process_status_{status}",
                    "detail": f"Z30_ITEM_PROCESS_STATUS {status}"
                    + (f" (Alma process type {process_type})" if process_type else ""),
                }
            )
    return no_barcode, in_process


def suppressed_records(reader: _Reader, settings: WorklistSettings) -> list[Row]:
    """Bibs and holdings whose ALEPHSEQ export holds the suppression tag with a suppressed value."""
    tag = settings.suppressed_tag.encode("ascii")
    values = {v.upper() for v in settings.suppressed_values}
    found: list[tuple[str, str, str, str]] = []  # entity, library, sysno, value
    for entity in ("bibs", "holdings"):
        for part in reader.raw(entity).parts():
            for line in reader.store.iter_lines(part.key, part.sha256):
                if line[10:13] != tag or len(line) < 18:
                    continue
                data = line[18:].decode("utf-8", errors="replace").strip()
                value = next((s[1:].strip() for s in data.split("$$") if s[:1] == "a"), data)
                if value.upper() in values:
                    found.append((entity, part.source, line[:9].decode("ascii", errors="replace"), value))
    bib_sysnos = [s for e, _, s, _ in found if e == "bibs"]
    bibs = {
        (r["library"], r["sysno"]): r
        for r in reader.index("bibs", ["library", "sysno", "rejected"], "sysno", bib_sysnos)
    }
    hol_sysnos = [s for e, _, s, _ in found if e == "holdings"]
    hols = {
        r["sysno"]: r
        for r in reader.index("holdings", ["sysno", "bib_library", "bib_sysno"], "sysno", hol_sysnos)
    }
    rejected = {e: reader.rejects(e) for e in {e for e, *_ in found}}
    out = []
    for entity, library, sysno, value in dict.fromkeys(found):
        if entity == "bibs":
            bib = bibs.get((library, sysno))
            delivered = bib is not None and bib["rejected"] != "True"
            bib_035 = _bib_035(library, sysno)
        else:
            hol = hols.get(sysno)
            delivered = hol is not None
            bib_035 = _bib_035(hol["bib_library"], hol["bib_sysno"]) if hol else ""
        reason = rejected[entity].get(f"{library}:{sysno}")
        out.append(
            {
                "entity": entity,
                "library": library,
                "sysno": sysno,
                "bib_035": bib_035,
                "value": value,
                "alma": _alma_status(delivered, reason),
                "reason": "suppressed_in_aleph",
                "detail": f"{settings.suppressed_tag} $a {value}: delivered without suppression",
            }
        )
    return out


def loans(reader: _Reader, settings: WorklistSettings, api_load: ApiLoad | None) -> list[Row]:
    z303 = reader.rows(reader.raw("patrons").parts("Z303"), ["Z303_REC_KEY", "Z303_PRIMARY_ID"])
    primary = {r["Z303_REC_KEY"]: r["Z303_PRIMARY_ID"] for r in z303}
    manifest = reader.alma("loans")
    out: list[Row] = []
    missing = [
        r
        for r in reader.store.iter_jsonl(f for f in manifest.files if f.kind == "rejects")
        if r["reason"] == "missing_due_date"
    ]
    barcodes = {
        r["aleph_item_key"]: r["barcode"]
        for r in reader.index(
            "items", ["aleph_item_key", "barcode"], "aleph_item_key", [r["record_id"] for r in missing]
        )
    }
    for reject in missing:
        raw = json.loads(reject.get("raw") or "{}")
        key = reject["record_id"]
        out.append(
            {
                "item_key": key,
                "barcode": barcodes.get(key, ""),
                "patron_id": raw.get("patron", ""),
                "primary_id": primary.get(raw.get("patron", ""), ""),
                "aleph_status": raw.get("status", ""),
                "loan_date": raw.get("loan_date", ""),
                "due_date": "",
                "alma": "not delivered: missing_due_date",
                "reason": "missing_due_date",
                "detail": "Z36_DUE_DATE is blank or not a date: the loan was not migrated",
            }
        )
    if api_load is not None:
        patron_of = {p: k for k, p in primary.items() if p}
        out.extend(_api_loans(reader, settings, api_load, patron_of))
    return out


def _api_loans(
    reader: _Reader, settings: WorklistSettings, api_load: ApiLoad, patron_of: dict[str, str]
) -> Iterator[Row]:
    from aleph2alma.alma.fulfillment import LOAN_PROCESS_STATUS

    refused_key = api_load.run.scope(reader.extract.migration_id).prefix("load", "loans") + "rejects.jsonl"
    refused: dict[str, dict[str, Any]] = {}
    if reader.store.exists(refused_key):
        for line in reader.store.iter_lines(refused_key):
            if line.strip():
                r = json.loads(line)
                refused[r["record_id"]] = r
    aleph_status = {v: k for k, v in LOAN_PROCESS_STATUS.items()}
    day = api_load.loaded_on.isoformat()
    for loan in reader.store.iter_jsonl(reader.alma("loans").parts()):
        reasons, details = [], []
        key, due = loan["aleph_key"], loan.get("due_date") or ""
        if key in refused:
            reasons.append(refused[key]["reason"])
            details.append(f"Alma refused the loan: {refused[key].get('detail', '')}".rstrip(": "))
        else:
            if due and datetime.fromisoformat(due).date() < api_load.loaded_on:
                reasons.append("due_date_in_past")
                details.append(
                    f"due {due[:10]} was past on {day}: Alma refuses it (401681), policy due date kept"
                )
            if loan.get("process_status") not in (None, "NORMAL"):
                reasons.append("process_status_not_set")
                details.append(
                    f"{loan['process_status']} cannot be set through the API: the loan is NORMAL in Alma"
                )
            if settings.list_api_loan_dates:
                reasons.append("loan_date_is_load_date")
                details.append(f"Alma's loan date is {day}, the day of the load")
        if reasons:
            yield {
                "item_key": key,
                "barcode": loan.get("item_barcode") or "",
                "patron_id": patron_of.get(loan.get("user_primary_id") or "", ""),
                "primary_id": loan.get("user_primary_id") or "",
                "aleph_status": aleph_status.get(loan.get("process_status") or "", ""),
                "loan_date": (loan.get("loan_date") or "")[:10],
                "due_date": due[:10],
                "alma": "refused by Alma" if key in refused else "created through the API",
                "reason": ",".join(reasons),
                "detail": "; ".join(details),
            }


# --- writing -------------------------------------------------------------------------------


@dataclass
class Built:
    """The rows of every worklist, and what the summary says."""

    rows: dict[str, list[Row]]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.rows.items()}

    def by_reason(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, rows in self.rows.items():
            counter: Counter[str] = Counter(code for r in rows for code in r["reason"].split(","))
            out[name] = dict(sorted(counter.items()))
        return out


def collect(
    store: ArtifactStore,
    extract: RunScope,
    transform: RunScope,
    settings: WorklistSettings,
    tmp: Path,
    api_load: ApiLoad | None = None,
) -> Built:
    """Every worklist's rows, sorted by their first column."""
    from aleph2alma.reconcile.reconcile import API_LOAN_DATE_NOTE

    reader = _Reader(store, extract, transform, tmp)
    no_barcode, in_process = items(reader, settings)
    rows = {
        "test_patrons": test_patrons(reader, settings),
        "items_without_barcode": no_barcode,
        "suppressed_records": suppressed_records(reader, settings),
        "items_in_process": in_process,
        "loans": loans(reader, settings, api_load),
    }
    for name, listed in rows.items():
        listed.sort(key=_row_order(BY_NAME[name].header))
    notes = [SUPPRESSION_NOTE]
    if api_load is not None:
        notes.append(API_LOAN_DATE_NOTE)
    return Built(rows, notes)


def _row_order(header: tuple[str, ...]) -> Callable[[Row], tuple[str, ...]]:
    return lambda row: tuple(row.get(c, "") for c in header)


def write_csv(worklist: Worklist, rows: list[Row], path: Path) -> None:
    """UTF-8 with a byte-order mark (Excel then reads Chinese text right); formula-like cells
    neutralised."""
    from aleph2alma.reporting import neutralise

    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(worklist.header)
        writer.writerows([neutralise(r.get(c, "")) for c in worklist.header] for r in rows)


def write_workbook(built: Built, run: dict[str, str], path: Path, as_of: date) -> None:
    """The summary tab, then one tab per worklist (header frozen); dated ``as_of``, not today."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    from aleph2alma.reporting import neutralise

    book = Workbook(write_only=True)
    book.properties.created = book.properties.modified = datetime.combine(as_of, time())
    bold = Font(bold=True)

    def heading(sheet: Any, values: Iterable[str]) -> list[Any]:
        cells = []
        for v in values:
            cell = WriteOnlyCell(sheet, value=v)
            cell.font = bold
            cells.append(cell)
        return cells

    summary = book.create_sheet("summary")
    for key, value in run.items():
        summary.append([key, value])
    summary.append([])
    summary.append(heading(summary, ["worklist", "title", "rows", "by reason", "what to do"]))
    by_reason = built.by_reason()
    for w in WORKLISTS:
        reasons = "; ".join(f"{k}: {n}" for k, n in by_reason[w.name].items())
        summary.append([w.name, w.title, len(built.rows[w.name]), reasons, w.action])
    summary.append([])
    for note in built.notes:
        summary.append(["note", note])
    for w in WORKLISTS:
        sheet = book.create_sheet(w.name)
        sheet.freeze_panes = "A2"
        sheet.append(heading(sheet, w.header))
        for r in built.rows[w.name]:
            sheet.append([neutralise(r.get(c, "")) for c in w.header])
    book.save(path)


def build_worklists(
    ctx: PhaseContext,
    extract: RunRef,
    transform: RunRef,
    settings: WorklistSettings,
    api_load: ApiLoad | None = None,
) -> WorklistsResult:
    """The clean-up worklists of ``transform`` (of ``extract``), committed as ``ctx``'s
    ``worklists/cleanup`` stage: the workbook, one CSV per worklist (a ``part`` whose records
    are its rows), ``summary.json``; the manifest last. ``api_load``: the loans went in
    through Alma's API in that run on that day."""
    store, scope = ctx.store, ctx.scope
    prefix = scope.prefix(STAGE, ENTITY)
    run = {
        "migration_id": ctx.migration_id,
        "dag_id": scope.dag_id,
        "run_id": scope.run_id,
        "as_of": ctx.as_of.isoformat(),
        "extract": str(extract),
        "transform": str(transform),
        "api_load": f"{api_load.run} on {api_load.loaded_on.isoformat()}" if api_load else "",
    }
    with tempfile.TemporaryDirectory(prefix="aleph2alma-worklists-") as tmp_dir:
        tmp = Path(tmp_dir)
        built = collect(store, ctx.scope_of(extract), ctx.scope_of(transform), settings, tmp / "in", api_load)
        files = []
        for w in WORKLISTS:
            path = tmp / f"{w.name}.csv"
            write_csv(w, built.rows[w.name], path)
            files.append(
                store.put_file(prefix + path.name, path, records=len(built.rows[w.name]), source=w.name)
            )
        write_workbook(built, run, tmp / WORKBOOK, ctx.as_of)
        workbook = store.put_file(prefix + WORKBOOK, tmp / WORKBOOK, source="workbook", kind="report")
    body = {"run": run, "counts": built.counts(), "by_reason": built.by_reason(), "notes": built.notes}
    summary = store.put_bytes(
        prefix + SUMMARY,
        (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"),
        content_type="application/json",
        source="summary",
    )
    uri = store.commit(
        scope,
        STAGE,
        ENTITY,
        [*files, workbook, summary],
        extra={"counts": built.counts(), "by_reason": built.by_reason(), "notes": built.notes},
    )
    return WorklistsResult(
        manifest=uri,
        workbook=store.uri(workbook.key),
        summary=store.uri(summary.key),
        counts=built.counts(),
        by_reason=built.by_reason(),
    )
