"""``aleph2alma``: the migration's steps on local files, outside Airflow.

    aleph2alma bibs convert IN... --out OUT.mrc --rejects REJECTS.jsonl [--library BNU02 --flavour MARC21]
        [--items-out ITEMS.csv --items-subfields barcode=5,sub_library=1,…]
    aleph2alma validate --library-dir demo-data --out report/
    aleph2alma form generate --library-dir demo-data --out form.xlsx [--existing include/config/demo/form]

A bad input gives one line on standard error and a non-zero exit, never a traceback.
The demo library and the Alma API emulator are development tools: ``aleph2alma-dev demo …``
(package ``aleph2alma_dev``, not part of the product).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aleph2alma.profile import CodeInventory

EXIT_USAGE = 2
EXIT_INPUT = 3


class CliError(Exception):
    """An error the user can fix; printed as one line."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


ITEM_COLUMNS = ("barcode", "sub_library", "collection", "call_number", "item_status", "material")
"""Columns of ``--items-out`` after ``bib_id``: the Z30 values a librarian needs to check items."""


def parse_item_subfields(spec: str) -> dict[str, str]:
    """``barcode=5,sub_library=1,…`` → column → Z30-1 subfield code.

    The codes are the site's: column 3 of ``./xxx01/tab/expand_doc_bib_z30`` says which
    subfield each Z30 field becomes (Ex Libris KB "Add Entries to expand_doc_bib_z30"), so
    there is no default; every column of :data:`ITEM_COLUMNS` must be named."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        column, sep, code = part.partition("=")
        if not sep or column not in ITEM_COLUMNS or len(code) != 1:
            raise CliError(
                f"--items-subfields: {part!r} is not <column>=<one subfield code>; "
                f"columns: {', '.join(ITEM_COLUMNS)}"
            )
        mapping[column] = code
    missing = [c for c in ITEM_COLUMNS if c not in mapping]
    if missing:
        raise CliError(
            f"--items-subfields: no subfield code for {', '.join(missing)}; take them from column 3 of "
            "your ./xxx01/tab/expand_doc_bib_z30"
        )
    return mapping


def _bibs_convert(args: argparse.Namespace) -> int:
    import csv
    import os
    from collections import Counter
    from collections.abc import Iterable, Iterator

    from aleph2alma.aleph.alephseq import AlephSeqRecord
    from aleph2alma.marc.bibs import BibOptions, transform_bibs
    from aleph2alma.marc.readers import read_records
    from aleph2alma.rejects import RejectLog
    from aleph2alma.validate.issues import IssueLog

    for path in args.inputs:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    issues_path = args.issues or args.rejects.with_name(args.rejects.stem + ".issues.jsonl")
    if bool(args.items_out) != bool(args.items_subfields):
        raise CliError("--items-out and --items-subfields go together")
    codes = parse_item_subfields(args.items_subfields) if args.items_subfields else {}
    for output in (args.out, args.rejects, issues_path, *([args.items_out] if args.items_out else [])):
        for path in args.inputs:
            if _same_file(path, output):
                raise CliError(f"{output}: is also an input; writing it would destroy the input")
    # --flavour forces one flavour; without it each record's shape decides (MARC 21 by default).
    options = BibOptions(
        library=args.library,
        flavour=args.flavour or "MARC21",
        detect_flavour=args.flavour is None,
        report_flavour_mismatch=False,
    )
    totals = {"in": 0, "out": 0, "rejected": 0}
    dropped: Counter[str] = Counter()
    items_written = 0
    with (
        open(args.out, "wb") as out,
        open(args.rejects, "w", encoding="utf-8") as rej,
        open(issues_path, "w", encoding="utf-8") as iss,
        open(args.items_out or os.devnull, "w", encoding="utf-8", newline="") as items_fh,
    ):
        rejects, issues = RejectLog(rej), IssueLog(iss)
        items_csv = csv.writer(items_fh)
        if codes:
            items_csv.writerow(("bib_id", *ITEM_COLUMNS))

        def with_items(records: Iterable[AlephSeqRecord]) -> Iterator[AlephSeqRecord]:
            nonlocal items_written
            for rec in records:
                for item in rec.items if codes else ():
                    items_csv.writerow((rec.sysno, *(item.get(codes[c], "") for c in ITEM_COLUMNS)))
                    items_written += 1
                yield rec

        for path in args.inputs:
            records = read_records(path, args.format, rejects=rejects, library=args.library)
            stats = transform_bibs(with_items(records), options, out, rejects, issues)
            totals["in"] += stats.records_in
            totals["out"] += stats.records_out
            totals["rejected"] += stats.rejected
            dropped.update(stats.dropped)
    unreadable = rejects.total - totals["rejected"]
    fields = ", ".join(f"{n} {kind}" for kind, n in sorted(dropped.items())) or "none"
    print(
        f"{totals['out']} records written to {args.out}; {totals['rejected']} rejected"
        f"{f' and {unreadable} unreadable' if unreadable else ''} (see {args.rejects}); "
        f"fields dropped: {fields}; "
        f"{f'{items_written} embedded items written to {args.items_out}; ' if args.items_out else ''}"
        f"issues: {dict(issues.counts) or 'none'} (see {issues_path})"
    )
    if not totals["out"]:
        print(f"aleph2alma: error: no record was written to {args.out}", file=sys.stderr)
        return EXIT_INPUT
    return 0


def _library_inputs(args: argparse.Namespace) -> tuple[Path, str]:
    library = args.library_dir
    db_url = args.db_url or f"sqlite:///{library / 'replica.sqlite'}"
    seq_dir = library / "alephseq"
    if not seq_dir.is_dir():
        raise CliError(f"{library}: no alephseq/ folder with the BIB and HOL exports")
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).is_file():
        raise CliError(f"{db_url}: no such database (give --db-url)")
    return seq_dir, db_url


def _validate(args: argparse.Namespace) -> int:
    from aleph2alma import settings
    from aleph2alma.aleph.db import create_engine
    from aleph2alma.validate.local import one_part, validate_library

    seq_dir, db_url = _library_inputs(args)
    migration = one_part(settings.load(args.migration_id))
    as_of = date.fromisoformat(args.as_of) if args.as_of else date.today()
    outcome, _ = validate_library(seq_dir, create_engine(db_url), migration, args.form, as_of, args.out)
    hit = outcome.by_rule
    print(f"{outcome.status}: {sum(hit.values())} issues {hit or ''}; report: {args.out / 'report.html'}")
    for breach in outcome.blocking:
        print(f"  blocking: {breach}")
    return 0 if outcome.status == "PASS" else 1


def _form_generate(args: argparse.Namespace) -> int:
    from aleph2alma.alma.form import generate_form, load_form, write_form
    from aleph2alma.profile import CodeInventory

    if args.inventory:
        inventory = CodeInventory.from_json(args.inventory.read_text(encoding="utf-8"))
    else:
        inventory = _inventory_from_library(args)
    existing = load_form(args.existing) if args.existing else None
    form = generate_form(inventory, existing)
    write_form(form, args.out)
    print(f"migration form written to {args.out} ({sum(len(t) for t in form.tabs.values())} rows)")
    return 0


def _inventory_from_library(args: argparse.Namespace) -> CodeInventory:
    import tempfile
    from dataclasses import replace

    from aleph2alma import settings
    from aleph2alma.aleph.db import create_engine
    from aleph2alma.aleph.extract import PartSpec, extract_table_part
    from aleph2alma.profile import profile_parquet

    if not args.library_dir:
        raise CliError("give --inventory (code_inventory.json from an extract run) or --library-dir")
    _, db_url = _library_inputs(args)
    migration = replace(settings.load(args.migration_id), part_rows=10**12)
    engine = create_engine(db_url)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for table, entity in (("Z30", "items"), ("Z305", "patrons")):
            paths[table] = Path(tmp) / f"{table}.parquet"
            extract_table_part(engine, migration, PartSpec(entity, table, 0, "table"), paths[table])
        return profile_parquet([str(paths["Z30"])], [str(paths["Z305"])])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aleph2alma", description="Aleph500 → Alma migration steps on local files."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    bibs = sub.add_parser("bibs", help="bibliographic records").add_subparsers(
        dest="bibs_command", required=True
    )
    convert = bibs.add_parser("convert", help="ALEPHSEQ / ISO 2709 / MARCXML → Alma-ready ISO 2709 UTF-8")
    convert.add_argument("inputs", nargs="+", type=Path)
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--rejects", type=Path, required=True)
    convert.add_argument("--issues", type=Path)
    convert.add_argument(
        "--format", choices=["alephseq", "iso2709", "marcxml"], help="detected when not given"
    )
    convert.add_argument("--library", default="XXX01", help="Aleph BIB library code (035 prefix)")
    convert.add_argument(
        "--flavour",
        choices=["MARC21", "CNMARC"],
        help="force one flavour; default: each record's shape decides (200 + coded 100: CNMARC), else MARC21",
    )
    convert.add_argument(
        "--items-out", type=Path, help="CSV of the embedded Z30-1 item lines (bib id, barcode, sub-library …)"
    )
    convert.add_argument(
        "--items-subfields",
        help="with --items-out: the site's Z30-1 subfield codes, e.g. "
        "barcode=5,sub_library=1,collection=2,call_number=3,item_status=f,material=m "
        "(column 3 of ./xxx01/tab/expand_doc_bib_z30)",
    )
    convert.set_defaults(run=_bibs_convert)

    def library_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument(
            "--library-dir",
            type=Path,
            required=required,
            help="folder with alephseq/ and replica.sqlite (as `aleph2alma-dev demo generate` writes)",
        )
        p.add_argument(
            "--db-url", help="SQLAlchemy URL of the Aleph database (default: the folder's replica)"
        )
        p.add_argument("--migration-id", default="demo")

    val = sub.add_parser(
        "validate", help="run the validation rules; write report.html, report.json, worklists/"
    )
    library_args(val, True)
    val.add_argument("--form", type=Path, help="migration form (default: include/config/<migration>/form)")
    val.add_argument("--as-of", help="YYYY-MM-DD patron expiry is judged against (default: today)")
    val.add_argument("--out", type=Path, required=True)
    val.set_defaults(run=_validate)

    forms = sub.add_parser("form", help="the migration form").add_subparsers(
        dest="form_command", required=True
    )
    fgen = forms.add_parser(
        "generate", help="a form pre-filled with every code in the data; merges --existing"
    )
    library_args(fgen, False)
    fgen.add_argument("--inventory", type=Path, help="code_inventory.json from an extract run")
    fgen.add_argument("--existing", type=Path, help="a form to merge into (its filled values are kept)")
    fgen.add_argument("--out", type=Path, required=True, help="a folder (CSV per tab) or a .xlsx workbook")
    fgen.set_defaults(run=_form_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except (CliError, ValueError, OSError, LookupError) as exc:
        # Domain errors (FormError, MarcFormatError, SettingsError, …) say what is wrong and where.
        print(f"aleph2alma: error: {exc}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
