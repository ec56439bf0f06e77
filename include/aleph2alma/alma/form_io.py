"""Reading and writing the migration form: a directory of CSVs or one XLSX workbook.

Both formats hold the same tabs (``form_spec.TABS``), one CSV file or one sheet per tab,
header in row 1. Row numbers in error messages are the ones a spreadsheet shows.

CSV files are written as UTF-8 **with** a byte-order mark: Excel opens a BOM-less CSV in
the Windows ANSI code page (GBK on a Chinese Windows) and garbles Chinese names; with the
BOM it reads UTF-8. Reading accepts UTF-8 with or without the BOM; anything else is an
error telling the librarian how to save the file, never a guessed decoding.

Hostile files end in a :class:`FormError`, in bounded memory and time: a workbook is read
rows as they are, not as its ``<dimension>`` claims (openpyxl's read-only mode trusts it: an
under-stated one silently drops rows, an over-stated one pads every row to it, minutes and
gigabytes for a 14 KB file), with at most :data:`MAX_SHEET_ROWS` rows and
:data:`MAX_SHEET_COLUMNS` columns of data and :data:`MAX_SHEET_XML_BYTES` of sheet XML; a
CSV tab is read to at most :data:`MAX_SHEET_ROWS` rows of :data:`MAX_CELL_CHARS` per cell.

Cells written that start with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return are
neutralised (``reporting.neutralise``, after OWASP's CSV injection guidance): a CSV cell gets
a leading ``'`` (taken off again on reading), a workbook cell is written as a string cell,
never as a formula.

Workbooks are written with a README sheet, a bold frozen header with an autofilter, text
cell format (so Excel keeps ``01`` as ``01``) and a Y/N drop-down on flag columns. On
reading, a number in an Aleph column is an error, because Excel has already turned
``01`` into ``1`` and the code would silently never match.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from aleph2alma.alma.form_spec import COUNT, IN_DATA, TABS, FormError, check_tabs, instructions

CSV_ENCODING = "utf-8-sig"
README_SHEET = "README"
README_FILE = "README.txt"
HEADER_WIDTH_MAX = 60
MAX_SHEET_ROWS = 100_000
"""Rows read from a form tab (a code list: a few thousand rows at most in a real library)."""
MAX_SHEET_COLUMNS = 1_000
"""Columns of data in a sheet row; the form's tabs have about ten."""
MAX_SHEET_XML_BYTES = 256 << 20
"""Uncompressed size of a workbook's members: a zip bomb is refused before it is read."""
MAX_CELL_CHARS = 32_767
"""Excel's own limit of characters in a cell."""


@dataclass
class RawTab:
    """A tab as read: its place for messages, header, and non-blank rows with their row numbers."""

    where: str
    frame: pd.DataFrame
    rows: list[int]


def _raw_tab(where: str, header: list[str], records: list[tuple[int, list[str]]]) -> RawTab:
    names = [h.strip() for h in header]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name and name in seen:
            raise FormError(
                f"{where}, row 1, column {i + 1}: header {name!r} appears twice; accepted: each column once"
            )
        seen.add(name)
    kept: list[list[str]] = []
    rows: list[int] = []
    for row, cells in records:
        cells = [c.strip() for c in cells] + [""] * (len(names) - len(cells))
        for i, cell in enumerate(cells):
            if cell and (i >= len(names) or not names[i]):
                raise FormError(
                    f"{where}, row {row}, column {i + 1}: {cell!r} is in a column with no header; "
                    f"accepted: values only under a header"
                )
        if any(cells):
            kept.append(cells[: len(names)])
            rows.append(row)
    columns = [n for n in names if n]
    index = [i for i, n in enumerate(names) if n]
    frame = pd.DataFrame([[r[i] for i in index] for r in kept], columns=columns, dtype=str)
    return RawTab(where, frame, rows)


def _finish(raw: dict[str, RawTab], origin: str) -> dict[str, pd.DataFrame]:
    missing = [name for name in TABS if name not in raw]
    if missing:
        raise FormError(
            f"{origin}: tab {', '.join(repr(m) for m in missing)} missing; required tabs: {', '.join(TABS)}"
        )
    return check_tabs(
        {n: t.frame for n, t in raw.items() if n in TABS},
        where={n: t.where for n, t in raw.items()},
        rows={n: t.rows for n, t in raw.items()},
    )


# --- CSV --------------------------------------------------------------------------------


def _csv_rows(file: Path) -> list[list[str]]:
    """The rows of a tab CSV, bounded; a cell starting with the neutralising ``'`` loses it."""
    from aleph2alma.reporting import unneutralise

    limit = csv.field_size_limit()
    csv.field_size_limit(MAX_CELL_CHARS)
    try:
        with open(file, encoding=CSV_ENCODING, newline="") as fh:
            lines: list[list[str]] = []
            for row in csv.reader(fh):
                if len(lines) > MAX_SHEET_ROWS:
                    raise FormError(
                        f"{file}: more than {MAX_SHEET_ROWS:,} rows; accepted: a form tab of at most "
                        f"{MAX_SHEET_ROWS:,} rows"
                    )
                if len(row) > MAX_SHEET_COLUMNS:
                    raise FormError(
                        f"{file}, row {len(lines) + 1}: {len(row):,} columns; accepted: at most "
                        f"{MAX_SHEET_COLUMNS:,}"
                    )
                lines.append([unneutralise(cell) for cell in row])
            return lines
    except UnicodeDecodeError as exc:
        raise FormError(
            f"{file}: not UTF-8 (byte {exc.start}); accepted: UTF-8 text — in Excel use "
            "Save As 'CSV UTF-8 (Comma delimited)'"
        ) from exc
    except csv.Error as exc:
        raise FormError(
            f"{file}: not a readable CSV ({exc}); accepted: comma-separated UTF-8 text with cells of at "
            f"most {MAX_CELL_CHARS:,} characters"
        ) from exc
    finally:
        csv.field_size_limit(limit)


def read_csv_dir(path: Path) -> dict[str, pd.DataFrame]:
    """The tabs of a form kept as ``<tab>.csv`` files in ``path``; checked and normalised."""
    raw: dict[str, RawTab] = {}
    for name in TABS:
        file = path / f"{name}.csv"
        if not file.exists():
            continue
        lines = _csv_rows(file)
        if not lines:
            raise FormError(f"{file}: empty; accepted: a header row with {', '.join(TABS[name].required)}")
        raw[name] = _raw_tab(str(file), lines[0], list(enumerate(lines[1:], start=2)))
    return _finish(raw, f"form directory {path} (no <tab>.csv)")


@contextmanager
def _atomic(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Write to a temporary file beside ``path`` and move it into place only when complete."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_csv_dir(tabs: dict[str, pd.DataFrame], path: Path) -> None:
    from aleph2alma.reporting import neutralise

    path.mkdir(parents=True, exist_ok=True)
    for name, frame in tabs.items():
        with _atomic(path / f"{name}.csv", "w", encoding=CSV_ENCODING, newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow([neutralise(str(c)) for c in frame.columns])
            writer.writerows([neutralise(v) for v in row] for row in frame.itertuples(index=False, name=None))
    with _atomic(path / README_FILE, "w", encoding="utf-8", newline="") as fh:
        fh.write(instructions())


# --- XLSX -------------------------------------------------------------------------------


def _cell_text(value: Any, where: str, row: int, column: str, is_code: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, datetime | date):
        return value.strftime("%Y%m%d")
    if isinstance(value, int | float):
        if is_code:
            raise FormError(
                f"{where}, row {row}, column {column!r}: the number {value!r} is not valid; "
                "accepted: the code as text (format the column as Text and type it again, "
                "e.g. 01 rather than 1)"
            )
        return str(int(value)) if float(value).is_integer() else str(value)
    return str(value)


def open_workbook(path: Path, error: type[Exception], accepted: str, kind: str = ".xlsx workbook") -> Any:
    """A workbook opened read-only (values, not formulas), refused before reading when it is not a
    zip of at most :data:`MAX_SHEET_XML_BYTES` uncompressed (sizes as the zip declares them,
    which also bound what is decompressed). ``error`` is raised with ``accepted`` appended."""
    import zipfile

    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
        if size > MAX_SHEET_XML_BYTES:
            raise error(
                f"{path}: {size:,} bytes once unzipped, more than the {MAX_SHEET_XML_BYTES:,} "
                f"read; {accepted}"
            )
        return load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError, zipfile.BadZipFile, TypeError) as exc:
        if isinstance(exc, error):
            raise
        raise error(f"{path}: not a readable {kind} ({exc}); {accepted}") from exc


def sheet_rows(
    sheet: Any, where: str, error: type[Exception], max_rows: int | None = None
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(row number, values without trailing blanks) of a read-only sheet, rows as they are.

    The sheet's ``<dimension>`` is ignored (``reset_dimensions``): openpyxl's read-only mode
    would drop the rows past an under-stated one and pad every row to an over-stated one.
    Data past ``max_rows`` rows or :data:`MAX_SHEET_COLUMNS` columns raises ``error``; blank
    rows past the limit (formatted but empty) are skipped. ``max_rows`` defaults to
    :data:`MAX_SHEET_ROWS`.
    """
    max_rows = MAX_SHEET_ROWS if max_rows is None else max_rows
    sheet.reset_dimensions()
    for row_no, values in enumerate(sheet.iter_rows(values_only=True), start=1):
        width = len(values)
        while width and values[width - 1] in (None, ""):
            width -= 1
        if width and row_no > max_rows:
            raise error(f"{where}: data in row {row_no:,}; accepted: at most {max_rows:,} rows")
        if width > MAX_SHEET_COLUMNS:
            raise error(
                f"{where}, row {row_no:,}: data in column {width:,}; accepted: at most "
                f"{MAX_SHEET_COLUMNS:,} columns"
            )
        if row_no <= max_rows:
            yield row_no, tuple(values[:width])


def read_xlsx(path: Path) -> dict[str, pd.DataFrame]:
    """The tabs of a form kept as sheets of one workbook; checked and normalised."""
    workbook = open_workbook(path, FormError, "accepted: an Excel 2007+ workbook")
    raw: dict[str, RawTab] = {}
    try:
        for name, spec in TABS.items():
            if name not in workbook.sheetnames:
                continue
            where = f"{path}, sheet {name!r}"
            rows = sheet_rows(workbook[name], where, FormError)
            header = [_cell_text(v, where, 1, "", False) for v in next(rows, (1, ()))[1]]
            records = [
                (
                    i,
                    [
                        _cell_text(
                            v,
                            where,
                            i,
                            header[j] if j < len(header) else str(j + 1),
                            j < len(header) and header[j].strip() in spec.keys,
                        )
                        for j, v in enumerate(values)
                    ],
                )
                for i, values in rows
            ]
            if not header:
                raise FormError(f"{where}: empty; accepted: a header row with {', '.join(spec.required)}")
            raw[name] = _raw_tab(where, header, records)
    finally:
        workbook.close()
    return _finish(raw, f"workbook {path} (sheet names are the tab names)")


def _no_formulas(sheet: Any) -> None:
    """Text starting with ``=`` is kept as text: openpyxl would otherwise write it as a formula
    that Excel runs on opening (OWASP CSV injection; a string cell is inert, no ``'`` needed)."""
    for row in sheet.iter_rows():
        for cell in row:
            if cell.data_type == "f":
                cell.data_type = "s"


def text_cell(sheet: Any, value: Any) -> Any:
    """For a write-only sheet: text starting with ``=`` as an inert string cell, not a formula."""
    if not (isinstance(value, str) and value.startswith("=")):
        return value
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=value)
    cell.data_type = "s"
    return cell


def write_xlsx(tabs: dict[str, pd.DataFrame], path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    workbook = Workbook()
    readme = workbook.active
    assert readme is not None
    readme.title = README_SHEET
    for line in instructions().splitlines():
        readme.append([line])
    readme.column_dimensions["A"].width = 110
    bold = Font(bold=True)
    for name, frame in tabs.items():
        sheet = workbook.create_sheet(name)
        flags = {*TABS[name].flags, IN_DATA} if name in TABS else set()
        sheet.append(list(frame.columns))
        for values in frame.itertuples(index=False, name=None):
            sheet.append(
                [
                    int(v) if c == COUNT and v.isdigit() else v
                    for c, v in zip(frame.columns, values, strict=True)
                ]
            )
        for j, column in enumerate(frame.columns, start=1):
            letter = get_column_letter(j)
            sheet.cell(1, j).font = bold
            sheet.cell(1, j).alignment = Alignment(horizontal="center")
            width = max([len(str(column)), *(len(v) * (2 if not v.isascii() else 1) for v in frame[column])])
            sheet.column_dimensions[letter].width = min(HEADER_WIDTH_MAX, width + 2)
            if column != COUNT:  # text, also for rows the librarian adds: Excel keeps 01 as 01
                sheet.column_dimensions[letter].number_format = "@"
                for (cell,) in sheet.iter_rows(min_row=2, min_col=j, max_col=j):
                    cell.number_format = "@"
            if column in flags:
                check = DataValidation(type="list", formula1='"Y,N"', allow_blank=True)
                check.add(f"{letter}2:{letter}1048576")
                sheet.add_data_validation(check)
        _no_formulas(sheet)
        sheet.freeze_panes = "A2"
        sheet.auto_filter.ref = f"A1:{get_column_letter(max(1, frame.shape[1]))}{frame.shape[0] + 1}"
    with _atomic(path, "wb") as fh:
        workbook.save(fh)


# --- either -----------------------------------------------------------------------------


def resolve(path: Path) -> Path:
    """The form behind ``path``: a workbook, a CSV directory, or the one workbook in a directory."""
    if path.suffix.lower() == ".xlsx" or not path.is_dir():
        return path
    if any((path / f"{name}.csv").exists() for name in TABS):
        workbooks = [p for p in path.glob("*.xlsx") if not p.name.startswith("~$")]
        if workbooks:
            raise FormError(
                f"{path}: holds both tab CSVs and {workbooks[0].name}; accepted: one form per "
                "directory, either <tab>.csv files or a single .xlsx workbook"
            )
        return path
    workbooks = sorted(p for p in path.glob("*.xlsx") if not p.name.startswith("~$"))
    if len(workbooks) == 1:
        return workbooks[0]
    found = ", ".join(p.name for p in workbooks) or "nothing"
    raise FormError(
        f"{path}: no migration form ({found} found); accepted: <tab>.csv files for "
        f"{', '.join(TABS)}, or exactly one .xlsx workbook"
    )


def read_form(path: Path) -> dict[str, pd.DataFrame]:
    path = resolve(path)
    if path.suffix.lower() == ".xlsx":
        if not path.exists():
            raise FormError(f"{path}: no such workbook")
        return read_xlsx(path)
    if not path.is_dir():
        raise FormError(
            f"{path}: no such form; accepted: a directory of <tab>.csv files or an .xlsx workbook"
        )
    return read_csv_dir(path)


def write_form_tabs(tabs: dict[str, pd.DataFrame], path: Path) -> None:
    if path.suffix.lower() == ".xlsx":
        path.parent.mkdir(parents=True, exist_ok=True)
        write_xlsx(tabs, path)
    else:
        write_csv_dir(tabs, path)
