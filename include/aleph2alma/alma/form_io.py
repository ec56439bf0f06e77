"""Reading and writing the migration form: a directory of CSVs or one XLSX workbook.

Both formats hold the same tabs (``form_spec.TABS``), one CSV file or one sheet per tab,
header in row 1. Row numbers in error messages are the ones a spreadsheet shows.

CSV files are written as UTF-8 **with** a byte-order mark: Excel opens a BOM-less CSV in
the Windows ANSI code page (GBK on a Chinese Windows) and garbles Chinese names; with the
BOM it reads UTF-8. Reading accepts UTF-8 with or without the BOM; anything else is an
error telling the librarian how to save the file, never a guessed decoding.

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
            raise FormError(f"{where}, row 1, column {i + 1}: header {name!r} appears twice; "
                            "accepted: each column once")
        seen.add(name)
    kept: list[list[str]] = []
    rows: list[int] = []
    for row, cells in records:
        cells = [c.strip() for c in cells] + [""] * (len(names) - len(cells))
        for i, cell in enumerate(cells):
            if cell and (i >= len(names) or not names[i]):
                raise FormError(f"{where}, row {row}, column {i + 1}: {cell!r} is in a column with no header; "
                                f"accepted: values only under a header")
        if any(cells):
            kept.append(cells[:len(names)])
            rows.append(row)
    columns = [n for n in names if n]
    index = [i for i, n in enumerate(names) if n]
    frame = pd.DataFrame([[r[i] for i in index] for r in kept], columns=columns, dtype=str)
    return RawTab(where, frame, rows)


def _finish(raw: dict[str, RawTab], origin: str) -> dict[str, pd.DataFrame]:
    missing = [name for name in TABS if name not in raw]
    if missing:
        raise FormError(f"{origin}: tab {', '.join(repr(m) for m in missing)} missing; "
                        f"required tabs: {', '.join(TABS)}")
    return check_tabs({n: t.frame for n, t in raw.items() if n in TABS},
                      where={n: t.where for n, t in raw.items()}, rows={n: t.rows for n, t in raw.items()})


# --- CSV --------------------------------------------------------------------------------

def read_csv_dir(path: Path) -> dict[str, pd.DataFrame]:
    """The tabs of a form kept as ``<tab>.csv`` files in ``path``; checked and normalised."""
    raw: dict[str, RawTab] = {}
    for name in TABS:
        file = path / f"{name}.csv"
        if not file.exists():
            continue
        try:
            with open(file, encoding=CSV_ENCODING, newline="") as fh:
                lines = list(csv.reader(fh))
        except UnicodeDecodeError as exc:
            raise FormError(f"{file}: not UTF-8 (byte {exc.start}); accepted: UTF-8 text — in Excel use "
                            "Save As 'CSV UTF-8 (Comma delimited)'") from exc
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
    path.mkdir(parents=True, exist_ok=True)
    for name, frame in tabs.items():
        with _atomic(path / f"{name}.csv", "w", encoding=CSV_ENCODING, newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(frame.columns)
            writer.writerows(frame.itertuples(index=False, name=None))
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
            raise FormError(f"{where}, row {row}, column {column!r}: the number {value!r} is not valid; "
                            "accepted: the code as text (format the column as Text and type it again, "
                            "e.g. 01 rather than 1)")
        return str(int(value)) if float(value).is_integer() else str(value)
    return str(value)


def read_xlsx(path: Path) -> dict[str, pd.DataFrame]:
    """The tabs of a form kept as sheets of one workbook; checked and normalised."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError) as exc:
        raise FormError(f"{path}: not a readable .xlsx workbook ({exc}); accepted: an Excel 2007+ workbook") \
            from exc
    raw: dict[str, RawTab] = {}
    try:
        for name, spec in TABS.items():
            if name not in workbook.sheetnames:
                continue
            where = f"{path}, sheet {name!r}"
            rows = workbook[name].iter_rows(values_only=True)
            header = [_cell_text(v, where, 1, "", False) for v in next(rows, ())]
            records = [(i, [_cell_text(v, where, i, header[j] if j < len(header) else str(j + 1),
                                       j < len(header) and header[j].strip() in spec.keys)
                            for j, v in enumerate(values)])
                       for i, values in enumerate(rows, start=2)]
            if not header:
                raise FormError(f"{where}: empty; accepted: a header row with {', '.join(spec.required)}")
            raw[name] = _raw_tab(where, header, records)
    finally:
        workbook.close()
    return _finish(raw, f"workbook {path} (sheet names are the tab names)")


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
            sheet.append([int(v) if c == COUNT and v.isdigit() else v
                          for c, v in zip(frame.columns, values, strict=True)])
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
            raise FormError(f"{path}: holds both tab CSVs and {workbooks[0].name}; accepted: one form per "
                            "directory, either <tab>.csv files or a single .xlsx workbook")
        return path
    workbooks = sorted(p for p in path.glob("*.xlsx") if not p.name.startswith("~$"))
    if len(workbooks) == 1:
        return workbooks[0]
    found = ", ".join(p.name for p in workbooks) or "nothing"
    raise FormError(f"{path}: no migration form ({found} found); accepted: <tab>.csv files for "
                    f"{', '.join(TABS)}, or exactly one .xlsx workbook")


def read_form(path: Path) -> dict[str, pd.DataFrame]:
    path = resolve(path)
    if path.suffix.lower() == ".xlsx":
        if not path.exists():
            raise FormError(f"{path}: no such workbook")
        return read_xlsx(path)
    if not path.is_dir():
        raise FormError(f"{path}: no such form; accepted: a directory of <tab>.csv files or an .xlsx workbook")
    return read_csv_dir(path)


def write_form_tabs(tabs: dict[str, pd.DataFrame], path: Path) -> None:
    if path.suffix.lower() == ".xlsx":
        path.parent.mkdir(parents=True, exist_ok=True)
        write_xlsx(tabs, path)
    else:
        write_csv_dir(tabs, path)
