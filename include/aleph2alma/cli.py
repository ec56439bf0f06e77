"""``aleph2alma``: the migration's steps on local files, outside Airflow.

    aleph2alma demo generate --scale tiny --seed 1 --out demo-data
    aleph2alma demo form [--out include/config/demo/form]
    aleph2alma demo alma --port 8765
    aleph2alma bibs convert IN... --out OUT.mrc --rejects REJECTS.jsonl [--library BNU02 --flavour MARC21]
    aleph2alma validate --library-dir demo-data --out report/
    aleph2alma form generate --library-dir demo-data --out form.xlsx [--existing include/config/demo/form]

A bad input gives one line on standard error and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
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


def _demo_generate(args: argparse.Namespace) -> int:
    from aleph2alma.demo.generator import generate

    summary = generate(args.out, scale=args.scale, seed=args.seed, db_url=args.db_url)
    print(json.dumps(summary["counts"], ensure_ascii=False))
    return 0


def _demo_form(args: argparse.Namespace) -> int:
    from aleph2alma.alma.form import form_dir, write_form
    from aleph2alma.demo.form import demo_form

    out = args.out or form_dir("demo")
    write_form(demo_form(), out)
    print(f"demo migration form written to {out}")
    return 0


def _demo_alma(args: argparse.Namespace) -> int:
    from aleph2alma.demo.alma_emulator import main as emulator_main

    return int(emulator_main(args.rest) or 0)


def _bibs_convert(args: argparse.Namespace) -> int:
    from aleph2alma.marc.bibs import BibOptions, transform_bibs
    from aleph2alma.marc.readers import read_records
    from aleph2alma.rejects import RejectLog
    from aleph2alma.validate.issues import IssueLog

    for path in args.inputs:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    options = BibOptions(library=args.library, flavour=args.flavour)
    issues_path = args.issues or args.rejects.with_name(args.rejects.stem + ".issues.jsonl")
    totals = {"in": 0, "out": 0, "rejected": 0}
    with open(args.out, "wb") as out, open(args.rejects, "w", encoding="utf-8") as rej, \
            open(issues_path, "w", encoding="utf-8") as iss:
        rejects, issues = RejectLog(rej), IssueLog(iss)
        for path in args.inputs:
            records = read_records(path, args.format, rejects=rejects, library=args.library)
            stats = transform_bibs(records, options, out, rejects, issues)
            totals["in"] += stats.records_in
            totals["out"] += stats.records_out
            totals["rejected"] += stats.rejected
    unreadable = rejects.total - totals["rejected"]
    print(f"{totals['out']} records written to {args.out}; {totals['rejected']} rejected"
          f"{f' and {unreadable} unreadable' if unreadable else ''} (see {args.rejects}); "
          f"issues: {dict(issues.counts) or 'none'} (see {issues_path})")
    return 0 if totals["out"] or not totals["in"] else EXIT_INPUT


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
    from aleph2alma.alma.form import form_dir, load_form
    from aleph2alma.validate.local import validate_library
    from aleph2alma.validate.rules import rules_for_migration

    seq_dir, db_url = _library_inputs(args)
    migration = settings.load(args.migration_id)
    form = load_form(args.form or form_dir(args.migration_id))
    as_of = date.fromisoformat(args.as_of) if args.as_of else date.today()
    report = validate_library(seq_dir, create_engine(db_url), migration, form,
                              rules_for_migration(args.migration_id), as_of, args.out)
    hit = {r.rule.id: r.count for r in report.rules if r.count}
    print(f"{report.status}: {sum(hit.values())} issues {hit or ''}; report: {args.out / 'report.html'}")
    for breach in report.blocking:
        print(f"  blocking: {breach.describe()}")
    return 0 if report.status == "PASS" else 1


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
    parser = argparse.ArgumentParser(prog="aleph2alma", description="Aleph500 → Alma migration steps on local files.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the demo library and the Alma API emulator").add_subparsers(
        dest="demo_command", required=True)
    gen = demo.add_parser("generate", help="generate a BNU-shaped demo Aleph library")
    gen.add_argument("--scale", default="tiny", choices=["tiny", "small", "bnu"])
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--db-url", help="write the Z-table replica here instead of <out>/replica.sqlite")
    gen.set_defaults(run=_demo_generate)
    form = demo.add_parser("form", help="write the demo library's filled migration form")
    form.add_argument("--out", type=Path)
    form.set_defaults(run=_demo_form)
    alma = demo.add_parser("alma", help="run the Alma API emulator (an emulator, not Alma)")
    alma.add_argument("rest", nargs=argparse.REMAINDER, help="emulator options, e.g. --port 8765")
    alma.set_defaults(run=_demo_alma)

    bibs = sub.add_parser("bibs", help="bibliographic records").add_subparsers(dest="bibs_command", required=True)
    convert = bibs.add_parser("convert", help="ALEPHSEQ / ISO 2709 / MARCXML → Alma-ready ISO 2709 UTF-8")
    convert.add_argument("inputs", nargs="+", type=Path)
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--rejects", type=Path, required=True)
    convert.add_argument("--issues", type=Path)
    convert.add_argument("--format", choices=["alephseq", "iso2709", "marcxml"], help="detected when not given")
    convert.add_argument("--library", default="XXX01", help="Aleph BIB library code (035 prefix)")
    convert.add_argument("--flavour", default="MARC21", choices=["MARC21", "CNMARC"])
    convert.set_defaults(run=_bibs_convert)

    def library_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument("--library-dir", type=Path, required=required,
                       help="folder with alephseq/ and replica.sqlite (as `demo generate` writes)")
        p.add_argument("--db-url", help="SQLAlchemy URL of the Aleph database (default: the folder's replica)")
        p.add_argument("--migration-id", default="demo")

    val = sub.add_parser("validate", help="run the validation rules; write report.html, report.json, worklists/")
    library_args(val, True)
    val.add_argument("--form", type=Path, help="migration form (default: include/config/<migration>/form)")
    val.add_argument("--as-of", help="YYYY-MM-DD patron expiry is judged against (default: today)")
    val.add_argument("--out", type=Path, required=True)
    val.set_defaults(run=_validate)

    forms = sub.add_parser("form", help="the migration form").add_subparsers(dest="form_command", required=True)
    fgen = forms.add_parser("generate", help="a form pre-filled with every code in the data; merges --existing")
    library_args(fgen, False)
    fgen.add_argument("--inventory", type=Path, help="code_inventory.json from an extract run")
    fgen.add_argument("--existing", type=Path, help="a form to merge into (its filled values are kept)")
    fgen.add_argument("--out", type=Path, required=True, help="a folder (CSV per tab) or a .xlsx workbook")
    fgen.set_defaults(run=_form_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["demo", "alma"]:  # the emulator parses its own options
        return _demo_alma(argparse.Namespace(rest=argv[2:]))
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
