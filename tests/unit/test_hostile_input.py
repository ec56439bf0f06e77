"""Hostile input is survived: every reader fuzzed (hypothesis) and fed hand-made bad files.

Targets: the ALEPHSEQ reader, the extraction's ALEPHSEQ part copy and splitter, the MARC
readers (format sniffing, ISO 2709, MARCXML), the Z-table extraction (database rows → Parquet)
and the migration form / statistics workbook readers. Every case ends in a result, a reject
with its reason, or one clear error of the module's own type, never another exception; the
big inputs run in a subprocess whose peak memory (``ru_maxrss``) must stay under 500 MB.

The hypothesis profile is set in ``tests/conftest.py``'s absence here: ``derandomize=True``
and a bounded number of examples per target (``FUZZ_EXAMPLES``), so the suite is fast and
the same on every run; ``HYPOTHESIS_PROFILE=deep`` runs 20x more examples, random.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aleph2alma.aleph import extract
from aleph2alma.aleph.alephseq import (
    EXCERPT,
    MAX_LINE,
    MAX_LINE_REJECTS,
    AlephSeqError,
    read_alephseq,
    scan_lines,
    split_ranges,
)
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.aleph.ztables import Z_TABLES, build_metadata
from aleph2alma.alma.form_io import MAX_SHEET_ROWS, read_csv_dir, read_xlsx, write_csv_dir, write_xlsx
from aleph2alma.alma.form_spec import TABS, FormError
from aleph2alma.alma.statistics import StatisticsWorkbookError, read_statistics_workbook
from aleph2alma.marc.readers import MarcFormatError, detect_format, read_records
from aleph2alma.rejects import RejectLog
from aleph2alma.reporting import neutralise, unneutralise
from aleph2alma.validate.issues import Issue
from aleph2alma.validate.report import write_worklists
from aleph2alma.validate.rules import RULES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEQ = (FIXTURES / "alephseq" / "quirks.seq").read_bytes()
ISO = (FIXTURES / "samples" / "pymarc_test.dat").read_bytes()
XML = (FIXTURES / "samples" / "pymarc_utf8.xml").read_bytes()
MEMORY_LIMIT_MB = 500

settings.register_profile(
    "hostile", max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
settings.register_profile("deep", max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "hostile"))
FUZZ = settings(PROFILE)


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` cut, with bytes flipped, spliced with random bytes, or plain random bytes."""
    cut = st.integers(0, len(seed)).map(lambda n: seed[:n])
    flipped = st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)).map(
        lambda t: seed[: t[0]] + bytes([t[1]]) + seed[t[0] + 1 :]
    )
    spliced = st.tuples(st.integers(0, len(seed)), st.binary(max_size=64)).map(
        lambda t: seed[: t[0]] + t[1] + seed[t[0] :]
    )
    return st.one_of(cut, flipped, spliced, st.binary(max_size=512))


def _rejects(sink: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


# --- ALEPHSEQ -------------------------------------------------------------------------------


@FUZZ
@given(mutations(SEQ))
def test_fuzz_alephseq_reader_accounts_for_every_line(data: bytes) -> None:
    sink = io.StringIO()
    records = list(read_alephseq(io.BytesIO(data), rejects=RejectLog(sink), source_name="f.seq"))
    rejects = _rejects(sink)
    lines = list(scan_lines(io.BytesIO(data)))
    bad = [line for line in lines if line.reason not in (None, "blank")]
    line_rejects = [r for r in rejects if r["reason"] != "truncated_record"]
    assert len(line_rejects) == len(bad)
    assert all(r["reason"] and len(r.get("raw", "")) <= EXCERPT + 1 for r in rejects)
    truncated = [r for r in rejects if r["reason"] == "truncated_record"]
    cut = bool(data) and not data.endswith(b"\n") and bool(lines) and lines[-1].reason != "blank"
    assert len(truncated) == (1 if cut and any(line.reason is None for line in lines) else 0)
    assert all(r.sysno.isdigit() and len(r.sysno) == 9 for r in records)


@FUZZ
@given(mutations(SEQ), st.integers(1, 600))
def test_fuzz_extraction_copies_counts_and_splits(tmp_path_factory, data: bytes, part_bytes: int) -> None:
    tmp = tmp_path_factory.mktemp("x")
    (tmp / "B.seq").write_bytes(data)
    ranges = split_ranges(tmp / "B.seq", part_bytes)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    records = malformed = 0
    for i, (start, end) in enumerate(ranges):
        spec = extract.PartSpec("bibs", "BNU01", i, "alephseq", "B.seq", start, end)
        result = extract.extract_alephseq_part(LocalLanding(tmp), spec, tmp / f"{i}.seq", tmp / f"{i}.jsonl")
        records += result.records
        malformed += result.malformed_lines
    whole = list(read_alephseq(io.BytesIO(data + b"\n")))
    assert records == len(whole)  # the record count of the raw stage is the reader's
    assert malformed == sum(1 for line in scan_lines(io.BytesIO(data)) if line.reason not in (None, "blank"))


def test_over_long_line_is_one_reject_with_an_excerpt(tmp_path: Path) -> None:
    data = SEQ + b"\0" * (MAX_LINE + 10) + b"\n" + SEQ.replace(b"000000020", b"000000099")
    sink = io.StringIO()
    records = list(read_alephseq(io.BytesIO(data), rejects=RejectLog(sink), source_name="n.seq"))
    (reject,) = _rejects(sink)
    assert reject["reason"] == "line_too_long"
    assert f"{MAX_LINE + 11:,} bytes" in reject["detail"]
    assert len(reject["raw"]) <= EXCERPT + 1
    assert "000000099" in {r.sysno for r in records}  # the stream goes on after it


def test_malformed_lines_past_the_limit_are_counted_in_one_reject() -> None:
    data = b"garbage\n" * (MAX_LINE_REJECTS + 5)
    sink = io.StringIO()
    assert list(read_alephseq(io.BytesIO(data), rejects=RejectLog(sink))) == []
    rejects = _rejects(sink)
    assert len(rejects) == MAX_LINE_REJECTS + 1
    assert rejects[-1]["reason"] == "too_many_malformed_lines"
    assert "5 more" in rejects[-1]["detail"]


def test_truncated_last_record_is_rejected_with_its_id() -> None:
    cut = SEQ[: SEQ.rindex(b"\n", 0, len(SEQ) - 1) + 20]  # 20 bytes into the last line
    sink = io.StringIO()
    records = list(read_alephseq(io.BytesIO(cut), rejects=RejectLog(sink), source_name="cut.seq"))
    last_sysno = SEQ.splitlines()[-1][:9].decode()
    (reject,) = _rejects(sink)
    assert (reject["reason"], reject["record_id"]) == ("truncated_record", last_sysno)
    assert last_sysno not in {r.sysno for r in records}


def test_a_record_larger_than_any_aleph_record_is_a_clear_error(monkeypatch) -> None:
    from aleph2alma.aleph import alephseq

    monkeypatch.setattr(alephseq, "MAX_RECORD_BYTES", 1000)
    data = b"000000001 245   L $$a" + b"x" * 60 + b"\n"
    with pytest.raises(AlephSeqError, match="record 000000001 passes 1,000 bytes"):
        list(read_alephseq(io.BytesIO(data * 20)))


# --- MARC readers ----------------------------------------------------------------------------


@FUZZ
@given(st.sampled_from(["iso2709", "marcxml", None]), st.data())
def test_fuzz_marc_readers(tmp_path_factory, fmt, data) -> None:
    seed = {"iso2709": ISO, "marcxml": XML, None: ISO}[fmt]
    raw = data.draw(mutations(seed))
    path = tmp_path_factory.mktemp("m") / "in.dat"
    path.write_bytes(raw)
    sink = io.StringIO()
    try:
        records = list(read_records(path, fmt, rejects=RejectLog(sink), library="L"))
    except MarcFormatError:
        assert fmt is None  # only sniffing refuses a file
        return
    assert all(r.record is not None for r in records)
    assert all(r["reason"] and len(r.get("raw", "")) <= EXCERPT + 1 for r in _rejects(sink))


def test_iso2709_record_shorter_than_its_leader_is_rejected(tmp_path: Path) -> None:
    first_end = ISO.index(b"\x1d") + 1
    short = ISO[: first_end - 40] + b"\x1d"  # keeps its terminator, loses 40 bytes of data
    path = tmp_path / "short.mrc"
    path.write_bytes(short + ISO[first_end:])
    sink = io.StringIO()
    records = list(read_records(path, "iso2709", rejects=RejectLog(sink), library="L"))
    reject = _rejects(sink)[0]
    assert (reject["record_id"], reject["line_no"]) == ("L:short.mrc@0", 1)
    assert reject["reason"] in {"truncated_record", "base_address_invalid", "record_directory_invalid"}
    assert len(records) == ISO.count(b"\x1d") - 1


def test_iso2709_file_cut_mid_record_rejects_the_last_one(tmp_path: Path) -> None:
    path = tmp_path / "cut.mrc"
    path.write_bytes(ISO[:-30])
    sink = io.StringIO()
    records = list(read_records(path, "iso2709", rejects=RejectLog(sink), library="L"))
    (reject,) = _rejects(sink)
    assert reject["reason"] == "end_of_record_not_found"
    last = ISO[:-30].rindex(RT) + 1  # where the cut record starts: its id is file and byte offset
    assert reject["record_id"] == f"L:cut.mrc@{last}"
    assert len(records) == ISO.count(b"\x1d") - 1


RT = b"\x1d"

LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY l0 "lol">'
    + b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10))
    + b"]><collection><record><leader>&l9;</leader></record></collection>"
)
"""The billion laughs: 10^9 "lol"s from a 1 KB file (expat's amplification limit refuses it)."""


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(LAUGHS, id="billion-laughs"),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<collection><record><controlfield tag='001'>&x;</controlfield></record></collection>",
            id="external-entity",
        ),
    ],
)
def test_hostile_marcxml_is_one_reject(tmp_path: Path, doc: bytes) -> None:
    path = tmp_path / "x.xml"
    path.write_bytes(doc)
    sink = io.StringIO()
    records = list(read_records(path, "marcxml", rejects=RejectLog(sink), library="L"))
    assert records == []
    assert [r["reason"] for r in _rejects(sink)] == ["xml_syntax_error"]


@pytest.mark.parametrize(
    "head",
    [b"", b"\0" * 100, "é".encode("latin-1") * 50, b"\xff\xfe<\0r\0"],
    ids=["empty", "nul", "latin1", "utf16"],
)
def test_unknown_formats_are_one_clear_error(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "f.dat"
    path.write_bytes(head)
    with pytest.raises(MarcFormatError, match="not ALEPHSEQ, ISO 2709 or MARCXML"):
        detect_format(path)


# --- Z-tables (database rows → raw Parquet) ---------------------------------------------------

Z30 = Z_TABLES["Z30"]
HOSTILE_VALUES = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.binary(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
)


@pytest.fixture(scope="module")
def z30_db() -> sa.Engine:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    metadata, _ = build_metadata({})
    metadata.create_all(engine)
    return engine


@FUZZ
@given(st.dictionaries(st.sampled_from([c.name for c in Z30.columns[1:]]), HOSTILE_VALUES, max_size=6))
def test_fuzz_ztable_extraction(tmp_path_factory, z30_db: sa.Engine, row: dict) -> None:
    """SQLite keeps whatever it is given, like a damaged replica: the part is written, or the
    extraction stops with an ExtractError naming the table, column and row."""
    from aleph2alma import settings as settings_mod

    table = build_metadata({})[1]["Z30"]
    values = {name.lower(): value for name, value in row.items()}
    with z30_db.begin() as conn:
        conn.execute(table.delete())
        try:
            conn.execute(table.insert().values(z30_rec_key="000000001000010", **values))
        except (sa.exc.StatementError, OverflowError, UnicodeEncodeError):
            return  # the database itself refuses it
    spec = extract.PartSpec("items", "Z30", 0, "table")
    out = tmp_path_factory.mktemp("z") / "p.parquet"
    try:
        result = extract.extract_table_part(z30_db, settings_mod.load("demo"), spec, out)
    except extract.ExtractError as exc:
        assert str(exc).startswith("Z30 part 0: column Z30_") and "row '000000001000010'" in str(exc)
        return
    assert result.records == 1


# --- the migration form and the statistics workbook ------------------------------------------


def _form_tabs() -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame(columns=list(spec.required), dtype=str) for name, spec in TABS.items()}


@FUZZ
@given(st.sampled_from(sorted(TABS)), st.binary(max_size=300))
def test_fuzz_form_csv(tmp_path_factory, tab: str, content: bytes) -> None:
    path = tmp_path_factory.mktemp("f")
    write_csv_dir(_form_tabs(), path)
    (path / f"{tab}.csv").write_bytes(content)
    try:
        read_csv_dir(path)
    except FormError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_workbook_bytes(tmp_path_factory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("w") / "form.xlsx"
    path.write_bytes(content)
    with pytest.raises(FormError):
        read_xlsx(path)
    with pytest.raises(StatisticsWorkbookError):
        read_statistics_workbook(path)


CELLS = st.one_of(
    st.none(),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=12),
    st.integers(-5, 10**6),
    st.booleans(),
    st.dates(),
)


@FUZZ
@given(st.lists(st.lists(CELLS, max_size=6), max_size=8))
def test_fuzz_workbook_cells(tmp_path_factory, rows: list) -> None:
    from openpyxl import Workbook

    path = tmp_path_factory.mktemp("w") / "form.xlsx"
    workbook = Workbook()
    for name in TABS:
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append([f"'{v}" if isinstance(v, str) and v.startswith("=") else v for v in row])
    workbook.save(path)
    try:
        read_xlsx(path)
    except FormError:
        pass
    try:
        read_statistics_workbook(path)
    except StatisticsWorkbookError:
        pass


def _set_dimension(path: Path, ref: str) -> None:
    """Rewrite every sheet's ``<dimension ref=…>`` in place, as another tool might have written it."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.startswith("xl/worksheets/sheet"):
                text = data.decode("utf-8")
                start = text.find("<dimension ref=")
                if start == -1:
                    text = text.replace("<sheetViews>", f'<dimension ref="{ref}"/><sheetViews>', 1)
                else:
                    end = text.index("/>", start)
                    text = text[:start] + f'<dimension ref="{ref}"' + text[end:]
                data = text.encode("utf-8")
            dst.writestr(item, data)
    tmp.replace(path)


def _demo_form(tmp_path: Path) -> dict[str, pd.DataFrame]:
    from aleph2alma.alma.form import load_form

    return load_form(Path(__file__).resolve().parents[2] / "include" / "config" / "demo" / "form").tabs


def test_understated_dimension_drops_no_row(tmp_path: Path) -> None:
    tabs = _demo_form(tmp_path)
    path = tmp_path / "form.xlsx"
    write_xlsx(tabs, path)
    _set_dimension(path, "A1:B2")
    back = read_xlsx(path)
    for name in TABS:
        assert len(back[name]) == len(tabs[name]), name


def test_overstated_dimension_reads_in_bounded_time(tmp_path: Path) -> None:
    """A1:XFD1048576 makes openpyxl pad every row to 16,384 cells and 1,048,576 rows (control);
    read as it is, the sheet gives its real rows and the read stays small."""
    from aleph2alma.alma.form_io import open_workbook, sheet_rows

    tabs = _demo_form(tmp_path)
    path = tmp_path / "form.xlsx"
    write_xlsx(tabs, path)
    _set_dimension(path, "A1:XFD1048576")
    assert path.stat().st_size < 100_000
    workbook = open_workbook(path, FormError, "")
    name = "locations"
    padded = workbook[name].iter_rows(values_only=True)  # what read_only mode did before
    assert len(next(padded)) == 16_384
    rows = list(sheet_rows(workbook[name], name, FormError))
    assert len(rows) == len(tabs[name]) + 1
    assert max(len(values) for _, values in rows) == tabs[name].shape[1]
    workbook.close()
    peak, out = _peak_mb(f"from aleph2alma.alma.form_io import read_xlsx; read_xlsx(Path({str(path)!r}))")
    assert peak < MEMORY_LIMIT_MB, out


def test_data_past_the_row_limit_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from aleph2alma.alma import form_io

    tabs = _demo_form(tmp_path)
    path = tmp_path / "form.xlsx"
    write_xlsx(tabs, path)
    monkeypatch.setattr(form_io, "MAX_SHEET_ROWS", 3)
    with pytest.raises(FormError, match=r"data in row 4; accepted: at most 3 rows"):
        read_xlsx(path)
    assert MAX_SHEET_ROWS > 3


def test_zip_bomb_workbook_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    from aleph2alma.alma import form_io

    path = tmp_path / "form.xlsx"
    write_xlsx(_demo_form(tmp_path), path)
    monkeypatch.setattr(form_io, "MAX_SHEET_XML_BYTES", 10_000)
    with pytest.raises(FormError, match="once unzipped, more than the 10,000 read"):
        read_xlsx(path)


def test_wrong_encoding_and_huge_cell_in_a_form_csv(tmp_path: Path) -> None:
    write_csv_dir(_form_tabs(), tmp_path)
    tab = sorted(TABS)[0]
    (tmp_path / f"{tab}.csv").write_bytes("名称,代码\n".encode("gbk"))
    with pytest.raises(FormError, match="not UTF-8"):
        read_csv_dir(tmp_path)
    (tmp_path / f"{tab}.csv").write_text('a\n"' + "x" * 200_000 + '"\n', encoding="utf-8")
    with pytest.raises(FormError, match="not a readable CSV"):
        read_csv_dir(tmp_path)
    assert csv.field_size_limit() == 131072  # the process-wide limit is put back


# --- formula injection -------------------------------------------------------------------------

INJECTIONS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "=cmd|'/c calc'!A1"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_formula_injection_in_a_note_is_neutralised_in_worklists(tmp_path: Path, value: str) -> None:
    issue = Issue("missing_barcode", "items", value, detail=f"note {value}")
    paths = write_worklists([issue], RULES, tmp_path)
    (row,) = list(csv.reader(paths["missing_barcode"].open(encoding="utf-8"), delimiter="\t"))[1:]
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row
    assert row[0].lstrip("'").strip() == value.strip()


@FUZZ
@given(st.text(max_size=20))
def test_neutralise_round_trips(value: str) -> None:
    assert unneutralise(neutralise(value)) == value or value.startswith("'")
    assert not str(neutralise(value)).startswith(("=", "+", "-", "@", "\t", "\r"))


def test_form_writers_keep_formulas_inert(tmp_path: Path) -> None:
    tabs = _demo_form(tmp_path)
    name = next(n for n in TABS if len(tabs[n]) and "description" in "".join(tabs[n].columns))
    column = next(c for c in tabs[name].columns if "description" in c)
    tabs[name].loc[tabs[name].index[0], column] = '=HYPERLINK("http://evil","x")'
    write_csv_dir(tabs, tmp_path / "csv")
    text = (tmp_path / "csv" / f"{name}.csv").read_text(encoding="utf-8-sig")
    assert ",'=HYPERLINK" in text or "\"'=HYPERLINK" in text
    assert read_csv_dir(tmp_path / "csv")[name][column].iloc[0] == '=HYPERLINK("http://evil","x")'
    write_xlsx(tabs, tmp_path / "form.xlsx")
    from openpyxl import load_workbook

    cell = next(
        c
        for row in load_workbook(tmp_path / "form.xlsx")[name].iter_rows()
        for c in row
        if str(c.value).startswith("=HYP")
    )
    assert cell.data_type == "s"  # a string, never a formula Excel would run


# --- big inputs: bounded memory, in a subprocess ---------------------------------------------


def _peak_mb(code: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; its peak resident memory in MB and its output.

    The peak is ``VmHWM`` of ``/proc/self/status``: the new process's own high-water mark
    (``ru_maxrss`` would also count the forked test process's memory before ``exec``).
    """
    script = (
        "from pathlib import Path\n"
        + textwrap.dedent(code)
        + "\nhwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]"
        + "\nprint('PEAK', int(hwm.split()[1]) / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    peak = float(done.stdout.split("PEAK")[-1])
    print(f"peak {peak:.0f} MB: {code.strip()[:90]}")
    return peak, done.stdout + done.stderr


def _nul_file(path: Path, size: int, line_end_every: int | None = None) -> Path:
    block = b"\0" * (1 << 20)
    if line_end_every:
        block = (b"\0" * (line_end_every - 1) + b"\n") * ((1 << 20) // line_end_every)
    with open(path, "wb") as fh:
        for _ in range(size >> 20):
            fh.write(block)
    return path


BIG = 600 << 20
"""Bigger than the memory limit: a reader that holds its input cannot pass."""


@pytest.mark.parametrize(
    ("name", "line_end_every"),
    [("nul-no-newline", None), ("nul-lines", 1024)],
    ids=["no-newline", "lines"],
)
def test_big_nul_export_extracts_in_bounded_memory(
    tmp_path: Path, name: str, line_end_every: int | None
) -> None:
    _nul_file(tmp_path / "B.seq", BIG, line_end_every)
    code = f"""
        from aleph2alma.aleph import extract
        from aleph2alma.aleph.alephseq import split_ranges, read_alephseq
        from aleph2alma.aleph.landing import LocalLanding
        from aleph2alma.rejects import RejectLog
        tmp = Path({str(tmp_path)!r})
        (start, end), = split_ranges(tmp / "B.seq", 1 << 30)
        spec = extract.PartSpec("bibs", "BNU01", 0, "alephseq", "B.seq", start, end)
        r = extract.extract_alephseq_part(LocalLanding(tmp), spec, tmp / "part.seq", tmp / "rejects.jsonl")
        (tmp / "part.seq").unlink()
        log = RejectLog()
        assert list(read_alephseq(tmp / "B.seq", rejects=log)) == []
        print("RESULT", r.records, r.malformed_lines, log.total, (tmp / "rejects.jsonl").stat().st_size)
    """
    peak, out = _peak_mb(code)
    records, malformed, read_rejects, rejects_size = map(int, out.split("RESULT")[1].split()[:4])
    assert records == 0 and malformed >= 1 and read_rejects == malformed
    # Rejects are bounded whatever the input (10,001 excerpts at most), not 6x the input.
    assert rejects_size < (MAX_LINE_REJECTS + 1) * 1500 < BIG // 40
    assert peak < MEMORY_LIMIT_MB


def test_a_100_mb_line_in_a_real_export(tmp_path: Path) -> None:
    path = tmp_path / "B.seq"
    with open(path, "wb") as fh:
        fh.write(SEQ)
        fh.write(b"000000500 245   L $$a" + b"x" * (100 << 20) + b"\n")
        fh.write(SEQ.replace(b"0000000", b"0000009"))
    code = f"""
        from aleph2alma.aleph.alephseq import read_alephseq
        from aleph2alma.rejects import RejectLog
        log = RejectLog()
        n = sum(1 for _ in read_alephseq(Path({str(path)!r}), rejects=log))
        print("RESULT", n, dict(log.counts))
    """
    peak, out = _peak_mb(code)
    assert "'line_too_long': 1" in out
    assert peak < MEMORY_LIMIT_MB


def test_big_garbage_iso2709_and_marcxml_in_bounded_memory(tmp_path: Path) -> None:
    _nul_file(tmp_path / "nul.mrc", BIG)
    xml = tmp_path / "big.xml"
    with open(xml, "wb") as fh:
        fh.write(b'<marc:collection xmlns:marc="http://www.loc.gov/MARC21/slim">')
        record = XML[XML.index(b"<marc:record") : XML.rindex(b"</marc:record>") + 14]
        for _ in range((BIG // len(record)) // 4):
            fh.write(record)
        fh.write(b"</marc:collection>")
    code = f"""
        from aleph2alma.marc.readers import read_records
        from aleph2alma.rejects import RejectLog
        tmp = Path({str(tmp_path)!r})
        for name, fmt in (("nul.mrc", "iso2709"), ("big.xml", "marcxml")):
            log = RejectLog()
            n = sum(1 for _ in read_records(tmp / name, fmt, rejects=log))
            print("RESULT", name, n, log.total)
    """
    peak, out = _peak_mb(code)
    assert "RESULT nul.mrc 0" in out
    assert peak < MEMORY_LIMIT_MB


# --- extraction rejects reach the validation report and block delivery ----------------------


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    from aleph2alma.storage import ArtifactStore
    from aleph2alma.storage_local import LocalObjectClient

    store = ArtifactStore(LocalObjectClient(tmp_path_factory.mktemp("store")), "hostile")
    store.ensure_bucket()
    return store


@pytest.mark.parametrize(
    ("content", "rules"),
    [
        pytest.param(b"", {"empty_export"}, id="empty"),
        pytest.param(bytes(range(256)) * 400, {"empty_export", "malformed_line"}, id="random"),
        pytest.param(b"not an export\n" * 500, {"empty_export", "malformed_line"}, id="text"),
    ],
)
def test_empty_or_garbage_bib_export_blocks_delivery(
    tiny_library: Path, local_store, tmp_path: Path, content: bytes, rules: set[str]
) -> None:
    import shutil
    from dataclasses import replace

    from aleph2alma import pipeline
    from aleph2alma import settings as settings_mod
    from aleph2alma.aleph.db import create_engine
    from aleph2alma.phases.context import PhaseContext
    from aleph2alma.phases.validation import DeliveryBlocked, gate
    from aleph2alma.storage import RunScope

    landing = tmp_path / "alephseq"
    shutil.copytree(tiny_library / "alephseq", landing)
    (landing / "BNU01.seq").write_bytes(content)
    settings = replace(settings_mod.load("demo"), part_rows=400, part_bytes=32_768)
    as_of = date.fromisoformat(json.loads((tiny_library / "summary.json").read_text())["as_of"])
    run = tmp_path.name[-20:]
    extract_ctx = PhaseContext(local_store, RunScope("demo", "migration_extract", f"x{run}"), settings, as_of)
    pipeline.extract(
        extract_ctx, create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}"), LocalLanding(landing)
    )
    ctx = PhaseContext(local_store, RunScope("demo", "migration_transform", f"t{run}"), settings, as_of)
    outcome = pipeline.transform_and_validate(ctx, extract_ctx.run).outcome
    assert outcome.status == "BLOCKED"
    assert rules <= set(outcome.by_rule)
    assert all(any(rule in b for b in outcome.blocking) for rule in rules), outcome.blocking
    with pytest.raises(DeliveryBlocked, match="empty_export"):
        gate(outcome)
