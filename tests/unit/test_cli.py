"""The command line: the same steps on local files, with one-line errors and no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aleph2alma.alma.form import form_dir
from aleph2alma.cli import EXIT_INPUT, main
from aleph2alma.rejects import read_rejects

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLES = FIXTURES / "samples"


def test_convert_shared_samples_in_all_three_formats(tmp_path: Path, capsys) -> None:
    inputs = [SAMPLES / "usp_41_bibs.seq", SAMPLES / "pymarc_test.dat", SAMPLES / "pymarc_utf8.xml"]
    code = main(["bibs", "convert", *map(str, inputs), "--out", str(tmp_path / "out.mrc"),
                 "--rejects", str(tmp_path / "rejects.jsonl"), "--library", "USP01"])
    assert code == 0
    assert "0 rejected" in capsys.readouterr().out
    from pymarc import MARCReader

    with open(tmp_path / "out.mrc", "rb") as fh:
        records = list(MARCReader(fh, to_unicode=True, force_utf8=True))
    assert len(records) > 41
    assert all(r.leader[9] == "a" for r in records)
    assert any(f.value().startswith("(ALEPH)USP01") for f in records[0].get_fields("035"))


def test_broken_records_are_rejected_and_the_rest_converted(tmp_path: Path, capsys) -> None:
    code = main(["bibs", "convert", str(FIXTURES / "marc" / "broken.mrc"), "--out", str(tmp_path / "o.mrc"),
                 "--rejects", str(tmp_path / "r.jsonl")])
    out = capsys.readouterr().out
    rejects = read_rejects(tmp_path / "r.jsonl")
    assert code == 0
    assert rejects and all(r["reason"] and r["record_id"] for r in rejects)
    assert "records written" in out and (tmp_path / "o.mrc").stat().st_size > 0


@pytest.mark.parametrize("content", [b"hello, this is not a MARC file\n", b"", b"\x00\x01\x02garbage"],
                         ids=["text", "empty", "binary"])
def test_malformed_input_gives_one_line_and_nonzero_exit(tmp_path: Path, capsys, content: bytes) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(content)
    code = main(["bibs", "convert", str(bad), "--out", str(tmp_path / "o.mrc"), "--rejects", str(tmp_path / "r")])
    err = capsys.readouterr().err
    if content:
        assert code == EXIT_INPUT
        assert err.count("\n") == 1 and err.startswith("aleph2alma: error: ") and "Traceback" not in err
    else:
        assert code == 0  # an empty file is no error: nothing to convert


def test_missing_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["bibs", "convert", str(tmp_path / "nope.seq"), "--out", "o", "--rejects", "r"])
    assert code == EXIT_INPUT
    assert "nope.seq: no such file" in capsys.readouterr().err


def test_validate_and_form_generate_on_the_demo_library(tiny_library: Path, tmp_path: Path, capsys) -> None:
    as_of = json.loads((tiny_library / "summary.json").read_text())["as_of"]
    code = main(["validate", "--library-dir", str(tiny_library), "--as-of", as_of, "--out", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report
    assert (tmp_path / "rep" / "worklists" / "orphan_item.tsv").exists()

    code = main(["form", "generate", "--library-dir", str(tiny_library), "--out", str(tmp_path / "form.xlsx"),
                 "--existing", str(form_dir("demo"))])
    assert code == 0
    from aleph2alma.alma.form import load_form

    form = load_form(tmp_path / "form.xlsx")
    assert form.location_for("BNUZG", "ZWSK") == ("BNUZG", "ZWSK"), "existing mappings are kept"
    assert ("BNUCP", "CPZW") in set(zip(form.tabs["locations"]["aleph_sub_library"],
                                        form.tabs["locations"]["aleph_collection"], strict=True))
