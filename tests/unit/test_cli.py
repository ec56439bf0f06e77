"""The command line: the same steps on local files, with one-line errors and no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pymarc
import pytest

from aleph2alma.alma.form import form_dir
from aleph2alma.cli import EXIT_INPUT, main
from aleph2alma.rejects import read_rejects

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLES = FIXTURES / "samples"


def test_convert_shared_samples_in_all_three_formats(tmp_path: Path, capsys) -> None:
    inputs = [SAMPLES / "usp_41_bibs.seq", SAMPLES / "pymarc_test.dat", SAMPLES / "pymarc_utf8.xml"]
    code = main(
        [
            "bibs",
            "convert",
            *map(str, inputs),
            "--out",
            str(tmp_path / "out.mrc"),
            "--rejects",
            str(tmp_path / "rejects.jsonl"),
            "--library",
            "USP01",
        ]
    )
    assert code == 0
    assert "0 rejected" in capsys.readouterr().out
    from pymarc import MARCReader

    with open(tmp_path / "out.mrc", "rb") as fh:
        records = list(MARCReader(fh, to_unicode=True, force_utf8=True))
    assert len(records) > 41
    assert all(r.leader[9] == "a" for r in records)
    assert any(f.value().startswith("(ALEPH)USP01") for f in records[0].get_fields("035"))


def test_broken_records_are_rejected_and_the_rest_converted(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "bibs",
            "convert",
            str(FIXTURES / "marc" / "broken.mrc"),
            "--out",
            str(tmp_path / "o.mrc"),
            "--rejects",
            str(tmp_path / "r.jsonl"),
        ]
    )
    out = capsys.readouterr().out
    rejects = read_rejects(tmp_path / "r.jsonl")
    assert code == 0
    assert rejects and all(r["reason"] and r["record_id"] for r in rejects)
    assert "records written" in out and (tmp_path / "o.mrc").stat().st_size > 0


@pytest.mark.parametrize(
    "content",
    [b"hello, this is not a MARC file\n", b"", b"\x00\x01\x02garbage"],
    ids=["text", "empty", "binary"],
)
def test_malformed_input_gives_one_line_and_nonzero_exit(tmp_path: Path, capsys, content: bytes) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(content)
    code = main(
        ["bibs", "convert", str(bad), "--out", str(tmp_path / "o.mrc"), "--rejects", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert code == EXIT_INPUT  # an empty file too: no record was written (issue 8, A5)
    assert err.count("\n") == 1 and err.startswith("aleph2alma: error: ") and "Traceback" not in err


def test_missing_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["bibs", "convert", str(tmp_path / "nope.seq"), "--out", "o", "--rejects", "r"])
    assert code == EXIT_INPUT
    assert "nope.seq: no such file" in capsys.readouterr().err


def test_validate_and_form_generate_on_the_demo_library(tiny_library: Path, tmp_path: Path, capsys) -> None:
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    code = main(
        ["validate", "--library-dir", str(tiny_library), "--as-of", as_of, "--out", str(tmp_path / "rep")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report
    assert (tmp_path / "rep" / "worklists" / "orphan_item.tsv").exists()

    code = main(
        [
            "form",
            "generate",
            "--library-dir",
            str(tiny_library),
            "--out",
            str(tmp_path / "form.xlsx"),
            "--existing",
            str(form_dir("demo")),
        ]
    )
    assert code == 0
    from aleph2alma.alma.form import load_form

    form = load_form(tmp_path / "form.xlsx")
    assert form.location_for("BNUZG", "ZWSK") == ("BNUZG", "ZWSK"), "existing mappings are kept"
    assert ("BNUCP", "CPZW") in set(
        zip(
            form.tabs["locations"]["aleph_sub_library"],
            form.tabs["locations"]["aleph_collection"],
            strict=True,
        )
    )


def test_the_demo_commands_are_not_in_the_product_cli(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "form"])
    assert exc.value.code == 2
    assert "invalid choice: 'demo'" in capsys.readouterr().err


def test_dev_cli_writes_the_demo_form(tmp_path: Path, capsys) -> None:
    from aleph2alma.alma.form import load_form
    from aleph2alma_dev.cli import main as dev_main
    from aleph2alma_dev.demo.form import demo_form

    assert dev_main(["demo", "form", "--out", str(tmp_path / "form")]) == 0
    assert "demo migration form written to" in capsys.readouterr().out
    assert load_form(tmp_path / "form") == demo_form()


def test_dev_cli_bad_scale_is_a_usage_error(capsys) -> None:
    from aleph2alma_dev.cli import main as dev_main

    with pytest.raises(SystemExit) as exc:
        dev_main(["demo", "generate", "--scale", "huge", "--out", "x"])
    assert exc.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_dev_cli_runs_as_a_module_and_hands_the_emulator_its_own_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aleph2alma_dev", "demo", "alma", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: aleph2alma-dev demo alma") and "--fault-429-rate" in done.stdout


# --- nothing dropped silently (issue 8, A5) -----------------------------------------------

SEQ_WITH_LOCAL_LINES = (
    "000000001 FMT   L BK\n"
    "000000001 LDR   L ^^^^^nam^a22^^^^^^a^4500\n"
    "000000001 24510 L $$aAnais do congresso /$$cEric T. Jennings.\n"
    "000000001 2X5   L $$aMistyped title field\n"
    "000000001 CAT   L $$aBATCH$$b00$$c20240101$$lUSP01$$h1200\n"
    "000000001 CAT   L $$aJOAO$$b00$$c20240301$$lUSP01$$h0930\n"
    "000000001 OWN   L $$aUSP\n"  # with FMT: 2 Aleph-local tags
    "000000001 Z30-1 L $$5A12345$$1FFLCH$$2GERAL$$3PN45.A5\n"
)


def test_summary_counts_every_kind_of_dropped_line(tmp_path: Path, capsys) -> None:
    seq = tmp_path / "in.seq"
    seq.write_text(SEQ_WITH_LOCAL_LINES, encoding="utf-8")
    args = [
        "bibs",
        "convert",
        str(seq),
        "--out",
        str(tmp_path / "o.mrc"),
        "--rejects",
        str(tmp_path / "r.jsonl"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "fields dropped: 2 Aleph-local tags, 2 CAT history, 1 embedded items (Z30), 1 mistyped tags;" in out
    )
    issues = [json.loads(line) for line in (tmp_path / "r.issues.jsonl").read_text().splitlines()]
    assert any("'2X5' looks like a mistyped MARC tag" in i["detail"] for i in issues)


@pytest.mark.parametrize("option", ["--out", "--rejects", "--issues"])
def test_an_output_that_is_an_input_is_refused(tmp_path: Path, capsys, option: str) -> None:
    seq = tmp_path / "in.seq"
    seq.write_text(SEQ_WITH_LOCAL_LINES, encoding="utf-8")
    before = seq.read_bytes()
    args = {"--out": str(tmp_path / "o.mrc"), "--rejects": str(tmp_path / "r.jsonl")}
    args[option] = str(tmp_path / "." / "in.seq")
    code = main(["bibs", "convert", str(seq), *[x for kv in args.items() for x in kv]])
    assert code == EXIT_INPUT
    assert "is also an input" in capsys.readouterr().err
    assert seq.read_bytes() == before


def test_without_flavour_each_record_shape_decides(tmp_path: Path, capsys) -> None:
    seq = tmp_path / "cn.seq"
    seq.write_text(
        "000000007 FMT   L BK\n"
        "000000007 LDR   L ^^^^^nam0^22^^^^^^^^450^\n"
        "000000007 100   L $$a20240115d2024    em y0chiy50      ea\n"
        "000000007 2001  L $$a教育心理学$$f王伟著\n",
        encoding="utf-8",
    )
    out = tmp_path / "o.mrc"
    assert main(["bibs", "convert", str(seq), "--out", str(out), "--rejects", str(tmp_path / "r")]) == 0
    [record] = pymarc.MARCReader(out.read_bytes(), force_utf8=True)
    assert record["200"]["a"] == "教育心理学"
    code = main(
        [
            "bibs",
            "convert",
            str(seq),
            "--out",
            str(out),
            "--rejects",
            str(tmp_path / "r"),
            "--flavour",
            "MARC21",
        ]
    )
    assert code == EXIT_INPUT  # forced MARC 21: no 245, rejected; nothing written


def test_items_out_writes_the_embedded_z30_lines(tmp_path: Path, capsys) -> None:
    seq = tmp_path / "in.seq"
    seq.write_text(
        SEQ_WITH_LOCAL_LINES + "000000002 FMT   L BK\n"
        "000000002 LDR   L ^^^^^nam^a22^^^^^^a^4500\n"
        "000000002 24510 L $$aSegundo\n"
        "000000002 Z30-1 L $$5A999$$1FFLCH$$2REF$$3PN46$$fRE$$mBOOK\n"
        "000000002 Z30-1 L $$5A1000$$1FFLCH$$2GERAL$$3PN46 c.2$$f01$$mBOOK\n",
        encoding="utf-8",
    )
    items = tmp_path / "items.csv"
    codes = "barcode=5,sub_library=1,collection=2,call_number=3,item_status=f,material=m"
    args = ["bibs", "convert", str(seq), "--out", str(tmp_path / "o.mrc"), "--rejects", str(tmp_path / "r")]
    assert main([*args, "--items-out", str(items), "--items-subfields", codes]) == 0
    assert "3 embedded items written to" in capsys.readouterr().out
    assert items.read_text(encoding="utf-8").splitlines() == [
        "bib_id,barcode,sub_library,collection,call_number,item_status,material",
        "000000001,A12345,FFLCH,GERAL,PN45.A5,,",
        "000000002,A999,FFLCH,REF,PN46,RE,BOOK",
        "000000002,A1000,FFLCH,GERAL,PN46 c.2,01,BOOK",
    ]
    # The codes are the site's (expand_doc_bib_z30): without them there is no guessing.
    assert main([*args, "--items-out", str(items)]) == EXIT_INPUT
    assert main([*args, "--items-out", str(items), "--items-subfields", "barcode=5"]) == EXIT_INPUT
    assert "no subfield code for sub_library" in capsys.readouterr().err
