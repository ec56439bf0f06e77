"""Transform throughput and peak RSS per DAG task, beside pymarc and pyarrow baselines (see README.md).

    .venv/bin/python bench/transform.py [--scales small,bnu] [--seed 1] [--repeat 1]

Setup (cached under ``bench/out/<scale>-seed<N>/``, not measured): generate the demo library,
extract its Z-tables to Parquet, cut the ALEPHSEQ files into DAG-sized parts. Then each stage
and baseline runs in a child process (``--child STAGE --library DIR``) that prints one JSON
line: records, wall and CPU seconds of the measured work, peak RSS. Rates "per core" are
records / CPU seconds of the child (user + system, all threads): they hold under load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "out"
MIGRATION = "demo"
PART_ROWS = 250_000  # MigrationSettings defaults, what the DAGs run with: Z-table rows per part,
PART_BYTES = 64 * 2**20  # ALEPHSEQ bytes per part,
DB_CHUNK_ROWS = 50_000  # rows per database round trip (= Parquet row group).
TABLES = ("Z30", "Z303", "Z304", "Z305", "Z308", "Z36", "Z37", "Z31")
PATRON_TABLES = ("Z303", "Z304", "Z305", "Z308")
RSS_LIMIT_MB = 1500.0  # "peak RSS of any task < 1.5 GB at bnu scale"; MB = 2**20 bytes


# --- setup (not measured) -----------------------------------------------------------------


def prepare(scale: str, seed: int) -> Path:
    """The cached library of ``scale``: generated, Z-tables extracted, ALEPHSEQ cut in parts."""
    from aleph2alma import settings as settings_module
    from aleph2alma.aleph.alephseq import split_ranges
    from aleph2alma.aleph.db import create_engine
    from aleph2alma.aleph.extract import PartSpec, extract_table_part, plan_table
    from aleph2alma.aleph.ztables import Z_TABLES
    from aleph2alma_dev.demo.generator import generate

    lib = OUT / f"{scale}-seed{seed}"
    if not (lib / "summary.json").exists():
        print(f"generating the {scale} library (seed {seed}) under {lib} …", flush=True)
        generate(lib, scale=scale, seed=seed)
    parts = lib / "parts"
    if (parts / ".done").exists():
        return lib
    print(f"extracting Z-tables and cutting ALEPHSEQ parts under {parts} …", flush=True)
    parts.mkdir(exist_ok=True)
    settings = replace(
        settings_module.load(MIGRATION), part_rows=10**12, part_bytes=PART_BYTES, db_chunk_rows=DB_CHUNK_ROWS
    )
    engine = create_engine(f"sqlite:///{lib / 'replica.sqlite'}")
    for name in TABLES:  # Z30 in the DAG's parts (keyset ranges of PART_ROWS), the others whole
        specs = (
            plan_table(engine, replace(settings, part_rows=PART_ROWS), Z_TABLES[name])
            if name == "Z30"
            else [PartSpec(Z_TABLES[name].entity, name, 0, "table")]
        )
        for spec in specs:
            extract_table_part(engine, settings, spec, parts / f"{name}-{spec.index:04d}.parquet")
    seq = [(b.code, b.file or f"{b.code}.seq") for b in settings.bib_libraries]
    for code, name in [*seq, (settings.hol_library, settings.hol_file)]:
        with open(lib / "alephseq" / name, "rb") as src:
            for i, (start, end) in enumerate(split_ranges(lib / "alephseq" / name, PART_BYTES)):
                src.seek(start)
                (parts / f"{code}-{i:04d}.seq").write_bytes(src.read(end - start))
    (parts / ".done").touch()
    return lib


# --- stages (one per child process) -------------------------------------------------------


class Meter:
    """Wall and CPU seconds of the ``with`` block."""

    wall = cpu = 0.0

    def __enter__(self) -> Meter:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


@dataclass
class Ctx:
    lib: Path
    meter: Meter

    @property
    def parts(self) -> Path:
        return self.lib / "parts"

    def work(self, name: str) -> Path:
        path = self.lib / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def as_of(self) -> date:
        return date.fromisoformat(json.loads((self.lib / "summary.json").read_text())["as_of"])

    def index(
        self,
        entity: str,
        schema: pa.Schema,
        columns: list[str] | None = None,
        read_dictionary: list[str] | None = None,
    ) -> pa.Table:
        """The concatenated index of the ``bibs`` or ``holdings`` stage, as the DAG reads it
        (``index_table``)."""
        # as phases.transform.index_schema (not imported here: the import would be measured)
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        for name in read_dictionary or []:
            at = schema.get_field_index(name)
            schema = schema.set(
                at, schema.field(at).with_type(pa.dictionary(pa.int32(), schema.field(at).type))
            )
        paths = sorted(self.work(entity).glob("*.parquet"))
        tables = [pq.read_table(p, columns=columns, read_dictionary=read_dictionary) for p in paths]
        return pa.concat_tables(tables).cast(schema)


def stage_marc(ctx: Ctx, entity: str) -> dict[str, Any]:
    """Every ALEPHSEQ part of ``entity`` → ISO 2709 + index Parquet, as ``transform_marc_part``."""
    from aleph2alma import settings as settings_module
    from aleph2alma.aleph.alephseq import read_alephseq
    from aleph2alma.marc import bibs, holdings
    from aleph2alma.rejects import RejectLog
    from aleph2alma.validate.issues import IssueLog

    settings = settings_module.load(MIGRATION)
    libraries = (
        [(b.code, b.flavour) for b in settings.bib_libraries]
        if entity == "bibs"
        else [(settings.hol_library, "")]
    )
    records = rejected = 0
    with ctx.meter:
        for code, flavour in libraries:
            for part in sorted(ctx.parts.glob(f"{code}-*.seq")):
                rows: list[dict[str, Any]] = []
                with open(ctx.work(entity) / f"{part.stem}.mrc", "wb") as out:
                    seq = read_alephseq(part, entity=entity)
                    if entity == "bibs":
                        stats: Any = bibs.transform_bibs(
                            seq,
                            bibs.BibOptions(code, flavour),  # type: ignore[arg-type]
                            out,
                            RejectLog(),
                            IssueLog(),
                            index=rows,
                        )
                        schema = bibs.BIB_INDEX_SCHEMA
                    else:
                        stats = holdings.transform_holdings(
                            seq,
                            holdings.HoldingsOptions(code),
                            out,
                            RejectLog(),
                            index=rows,
                            issues=IssueLog(),
                        )
                        schema = holdings.HOLDINGS_INDEX_SCHEMA
                pq.write_table(
                    pa.Table.from_pylist(rows, schema=schema), ctx.work(entity) / f"{part.stem}.parquet"
                )
                records, rejected = records + stats.records_in, rejected + stats.rejected
    return {"records": records, "rejected": rejected}


def baseline_pymarc(ctx: Ctx, entity: str) -> dict[str, Any]:
    """pymarc ``MARCReader`` + ``as_marc()`` over the ISO 2709 the ``entity`` stage wrote."""
    from pymarc import MARCReader

    records = 0
    with ctx.meter:
        for path in sorted(ctx.work(entity).glob("*.mrc")):
            with open(path, "rb") as src, open(ctx.work(f"pymarc-{entity}") / path.name, "wb") as out:
                for record in MARCReader(src, to_unicode=True, force_utf8=True):
                    if record is not None:
                        out.write(record.as_marc())
                        records += 1
    return {"records": records}


def stage_items(ctx: Ctx, whole_index: bool = False) -> dict[str, Any]:
    """Each Z30 part, as ``transform_items_part``: read it and its own holdings links (cut by
    ``validate_tables``), write CSV + Parquet. ``whole_index``: as before, every part reads the
    whole holdings-link index."""
    from aleph2alma.alma.form import form_dir, load_form
    from aleph2alma.alma.items import (
        HOL_LINK_COLUMNS,
        HOL_LINK_DICTIONARY,
        read_z30,
        transform_items,
        write_items_csv,
        write_items_parquet,
    )
    from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
    from aleph2alma.rejects import RejectLog

    form = load_form(form_dir(MIGRATION))

    def one(part: Path) -> tuple[int, int]:  # a function, so that a part is freed before the next is read
        z30 = read_z30(part)
        if whole_index:
            links = ctx.index(
                "holdings",
                HOLDINGS_INDEX_SCHEMA,
                columns=HOL_LINK_COLUMNS,
                read_dictionary=HOL_LINK_DICTIONARY,
            )
        else:
            links = pq.read_table(ctx.work("hol_links") / part.name, read_dictionary=HOL_LINK_DICTIONARY)
        items, stats = transform_items(z30, form, {}, RejectLog(), hol_links=links)
        write_items_csv(items, ctx.work("items") / f"{part.stem}.csv")
        write_items_parquet(items, ctx.work("items") / part.name)
        return stats.records_in, stats.rejected

    with ctx.meter:
        counts = [one(part) for part in sorted(ctx.parts.glob("Z30-*.parquet"))]
    return {"records": sum(c[0] for c in counts), "rejected": sum(c[1] for c in counts)}


def stage_extract_seq(ctx: Ctx, line_by_line: bool = False) -> dict[str, Any]:
    """Every ALEPHSEQ part counted and its malformed lines rejected, as ``extract_alephseq_part``
    (``count_records``; ``line_by_line``: ``grouped_lines``, every line through ``check_line``,
    as before); records = records counted."""
    import io

    from aleph2alma.aleph.alephseq import LineRejects, RawLine, count_records, grouped_lines
    from aleph2alma.rejects import RejectLog

    def one(part: Path) -> int:
        bad = LineRejects(RejectLog(io.StringIO()).add, "bibs", part.name)

        def on_invalid(line: RawLine, sysno: str) -> None:
            if line.reason != "blank":
                bad.reject(line, sysno or "?")

        with open(part, "rb") as fh:
            if line_by_line:
                return sum(1 for _ in grouped_lines(fh, on_invalid))
            return count_records(fh, on_invalid)

    with ctx.meter:
        records = sum(one(part) for part in sorted(ctx.parts.glob("*.seq")))
    return {"records": records}


def stage_fulfillment(ctx: Ctx, every_barcode: bool = False) -> dict[str, Any]:
    """Z36/Z37/Z31 → JSON lines, as ``transform_fulfillment``, with the items stage's index for
    the barcodes: only the items circulation names (``item_barcodes``; ``every_barcode``: a dict of
    every delivered item, as before); records = loans + requests + fines in."""
    from aleph2alma.alma import fulfillment
    from aleph2alma.alma.form import form_dir, load_form
    from aleph2alma.alma.users import patron_primary_ids
    from aleph2alma.rejects import RejectLog

    form = load_form(form_dir(MIGRATION))

    def raw(name: str, columns: list[str] | None = None) -> pa.Table:
        return pa.concat_tables(
            pq.read_table(p, columns=columns) for p in sorted(ctx.parts.glob(f"{name}-*.parquet"))
        )

    records = 0
    with ctx.meter:
        patron_ids = patron_primary_ids(raw("Z303", ["Z303_REC_KEY", "Z303_PRIMARY_ID"]))
        z36, z37, z31 = raw("Z36"), raw("Z37"), raw("Z31")
        delivered = pa.concat_tables(
            pq.read_table(p, columns=["aleph_item_key", "barcode"])
            for p in sorted(ctx.work("items").glob("*.parquet"))
        )
        if every_barcode:
            keys, codes = delivered["aleph_item_key"].to_pylist(), delivered["barcode"].to_pylist()
            barcodes = dict(zip(keys, codes, strict=True))
        else:
            barcodes = fulfillment.item_barcodes(delivered, z36, z37, z31)
        del delivered
        with open(ctx.work("fulfillment") / "out.jsonl", "w") as out:
            for stats in (
                fulfillment.transform_loans(z36, patron_ids, barcodes, form, {}, RejectLog(), out),
                fulfillment.transform_requests(z37, patron_ids, barcodes, form, {}, RejectLog(), out),
                fulfillment.transform_fines(z31, patron_ids, form, {}, RejectLog(), out, barcodes=barcodes),
            ):
                records += stats.records_in
    return {"records": records}


def baseline_pyarrow(ctx: Ctx, tables: tuple[str, ...]) -> dict[str, Any]:
    """pyarrow read + write of the Parquet parts of ``tables``; records = rows of the first table."""

    def one(part: Path) -> int:
        table = pq.read_table(part)
        pq.write_table(table, ctx.work("pyarrow") / part.name)
        return table.num_rows

    with ctx.meter:
        rows = {
            name: sum(one(part) for part in sorted(ctx.parts.glob(f"{name}-*.parquet"))) for name in tables
        }
    return {"records": rows[tables[0]]}


def stage_patrons(ctx: Ctx, all_columns: bool = False) -> dict[str, Any]:
    """Z303/Z304/Z305/Z308 → users XML, as ``transform_patrons``: only the columns the users XML
    needs (``USER_COLUMNS``; ``all_columns``: every column, as before); records = patrons."""
    from aleph2alma.alma.form import form_dir, load_form
    from aleph2alma.alma.users import USER_COLUMNS, UserOptions, write_users_xml
    from aleph2alma.rejects import RejectLog

    form, as_of = load_form(form_dir(MIGRATION)), ctx.as_of()
    with ctx.meter:
        z = {
            t: pa.concat_tables(
                [
                    pq.read_table(p, columns=None if all_columns else USER_COLUMNS[t])
                    for p in sorted(ctx.parts.glob(f"{t}-*.parquet"))
                ]
            )
            for t in PATRON_TABLES
        }
        with open(ctx.work("patrons") / "users.xml", "wb") as xml:
            stats = write_users_xml(
                z["Z303"],
                z["Z304"],
                z["Z305"],
                z["Z308"],
                form,
                xml,
                excluded={},
                rejects=RejectLog(),
                options=UserOptions(scrub_emails=True, as_of=as_of),
            )
    return {
        "records": stats.records_in,
        "rejected": stats.rejected,
        "input_rows": sum(t.num_rows for t in z.values()),
    }


def stage_validate(ctx: Ctx, whole_indexes: bool = False) -> dict[str, Any]:
    """As ``validate_tables``: ``check_tables`` over the needed Z-table columns (``read_parts``)
    and the needed index columns, and each Z30 part's holdings links cut for its items task.
    ``whole_indexes``: every index column, no links cut (as before)."""
    from aleph2alma.alma.form import form_dir, load_form
    from aleph2alma.alma.items import HOL_LINK_COLUMNS, HOL_LINK_DICTIONARY, part_hol_links
    from aleph2alma.marc.bibs import BIB_INDEX_SCHEMA
    from aleph2alma.marc.holdings import HOLDINGS_INDEX_SCHEMA
    from aleph2alma.phases.validation import BIB_INDEX_COLUMNS
    from aleph2alma.validate.checks import NEEDED_COLUMNS, TableInputs, check_tables, read_parts
    from aleph2alma.validate.issues import IssueLog
    from aleph2alma.validate.rules import rules_for_migration

    form, rules, as_of = load_form(form_dir(MIGRATION)), rules_for_migration(MIGRATION), ctx.as_of()
    with ctx.meter:
        z = {t: read_parts(sorted(ctx.parts.glob(f"{t}-*.parquet")), t) for t in NEEDED_COLUMNS}
        if whole_indexes:
            bib_index = ctx.index("bibs", BIB_INDEX_SCHEMA)
            holdings_index = ctx.index("holdings", HOLDINGS_INDEX_SCHEMA)
        else:
            bib_index = ctx.index("bibs", BIB_INDEX_SCHEMA, BIB_INDEX_COLUMNS, ["library"])
            holdings_index = ctx.index(
                "holdings", HOLDINGS_INDEX_SCHEMA, HOL_LINK_COLUMNS, HOL_LINK_DICTIONARY
            )
            for part in sorted(ctx.parts.glob("Z30-*.parquet")):
                hol = pq.read_table(part, columns=["Z30_HOL_DOC_NUMBER_X"]).column(0)
                pq.write_table(part_hol_links(holdings_index, hol), ctx.work("hol_links") / part.name)
        inputs = TableInputs(
            z30=z["Z30"],
            z303=z["Z303"],
            z305=z["Z305"],
            z36=z["Z36"],
            z37=z["Z37"],
            z31=z["Z31"],
            bib_index=bib_index,
            holdings_index=holdings_index,
        )
        with open(ctx.work("validate") / "tables.jsonl", "w", encoding="utf-8") as sink:
            log = IssueLog(sink)
            log.extend(check_tables(inputs, form, as_of, rules))
    return {"records": sum(inputs.totals().values()), "issues": sum(log.counts.values())}


CHILDREN: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "bibs": lambda ctx: stage_marc(ctx, "bibs"),
    "pymarc-bibs": lambda ctx: baseline_pymarc(ctx, "bibs"),
    "holdings": lambda ctx: stage_marc(ctx, "holdings"),
    "pymarc-holdings": lambda ctx: baseline_pymarc(ctx, "holdings"),
    "items": stage_items,
    "items-before": lambda ctx: stage_items(ctx, whole_index=True),
    "pyarrow-z30": lambda ctx: baseline_pyarrow(ctx, ("Z30",)),
    "patrons": stage_patrons,
    "patrons-before": lambda ctx: stage_patrons(ctx, all_columns=True),
    "pyarrow-z303-z308": lambda ctx: baseline_pyarrow(ctx, PATRON_TABLES),
    "validate_tables": stage_validate,
    "validate_tables-before": lambda ctx: stage_validate(ctx, whole_indexes=True),
    "extract_seq": stage_extract_seq,
    "extract_seq-before": lambda ctx: stage_extract_seq(ctx, line_by_line=True),
    "fulfillment": stage_fulfillment,
    "fulfillment-before": lambda ctx: stage_fulfillment(ctx, every_barcode=True),
}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux carries ``ru_maxrss`` over ``exec`` (a child would report
    its parent's peak if that were higher), so read the high-water mark of this image first."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child(stage: str, lib: Path) -> None:
    import pyarrow.dataset  # noqa: F401  # pq.read_table imports it (and pandas) on first use: not per record

    ctx = Ctx(lib, Meter())
    result = CHILDREN[stage](ctx)
    rss_mb = peak_rss_mb()
    print(
        json.dumps({"stage": stage, **result, "wall": ctx.meter.wall, "cpu": ctx.meter.cpu, "rss_mb": rss_mb})
    )


# --- parent: run the children, print the table --------------------------------------------


@dataclass(frozen=True)
class Row:
    stage: str
    baseline: str | None = None
    min_ratio: float | None = None  # of the baseline's CPU rate
    min_rate: float | None = None  # records per CPU second
    before: str | None = None  # the stage as it was before its last speed change, measured alongside


# validate_tables before items: it cuts each Z30 part's holdings links, as in the DAG; fulfillment
# after items: it reads the items' index.
PLAN = (
    Row("extract_seq", before="extract_seq-before"),
    Row("bibs", "pymarc-bibs", min_ratio=0.5),
    Row("holdings", "pymarc-holdings"),
    Row("validate_tables", before="validate_tables-before"),
    Row("items", "pyarrow-z30", min_rate=500_000, before="items-before"),
    Row("patrons", "pyarrow-z303-z308", min_rate=500_000, before="patrons-before"),
    Row("fulfillment", before="fulfillment-before"),
)


def run_child(stage: str, lib: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", stage, "--library", str(lib)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise SystemExit(f"{stage} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best of N: the least CPU (and least wall), the highest peak RSS."""
    top = min(runs, key=lambda r: r["cpu"])
    return {**top, "wall": min(r["wall"] for r in runs), "rss_mb": max(r["rss_mb"] for r in runs)}


def rate(r: dict[str, Any], key: str) -> float:
    return float(r["records"] / r[key]) if r[key] else float("inf")


def fmt(x: float) -> str:
    return (
        f"{x / 1e6:.2f}M"
        if x >= 1e6
        else f"{x / 1e3:.0f}k"
        if x >= 1e4
        else f"{x / 1e3:.1f}k"
        if x >= 1e3
        else f"{x:.0f}"
    )


def measure(lib: Path, repeat: int, scale: str) -> dict[str, dict[str, Any]]:
    """Best of ``repeat`` per child; stage and baseline alternate, so that load changes hit both."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in PLAN:
        for _ in range(repeat):
            for name in filter(None, (row.before, row.stage, row.baseline)):
                runs.setdefault(name, []).append(run_child(name, lib))
                print(f"  {scale}: {json.dumps(runs[name][-1])}", file=sys.stderr, flush=True)
    return {name: best(r) for name, r in runs.items()}


def table_row(row: Row, results: dict[str, dict[str, Any]]) -> list[str]:
    r, b = results[row.stage], results.get(row.baseline or "")
    was = results.get(row.before or "")
    ratio = rate(r, "cpu") / rate(b, "cpu") if b else None
    targets, misses = [f"RSS < {RSS_LIMIT_MB:.0f} MB"], ["RSS"] if r["rss_mb"] >= RSS_LIMIT_MB else []
    if row.min_ratio is not None and ratio is not None:
        targets.insert(0, f"≥ {row.min_ratio:.0%} of baseline")
        misses += [f"ratio {ratio:.0%}"] if ratio < row.min_ratio else []
    if row.min_rate is not None:
        targets.insert(0, f"≥ {fmt(row.min_rate)}/s/core")
        misses += [f"{rate(r, 'cpu') / row.min_rate:.1%} of rate"] if rate(r, "cpu") < row.min_rate else []
    return [
        row.stage,
        f"{r['records']:,}",
        fmt(rate(r, "cpu")),
        fmt(rate(r, "wall")),
        f"{r['rss_mb']:.0f}",
        f"{fmt(rate(was, 'cpu'))}, {was['rss_mb']:.0f} MB" if was else "—",
        f"{rate(r, 'cpu') / rate(was, 'cpu'):.2f}×" if was else "—",
        row.baseline or "—",
        fmt(rate(b, "cpu")) if b else "—",
        f"{ratio:.2f}" if ratio is not None else "—",
        "; ".join(targets),
        "NO: " + ", ".join(misses) if misses else "yes",
    ]


def report(scale: str, lib: Path, repeat: int) -> None:
    load_before = os.getloadavg()[0]
    results = measure(lib, repeat, scale)
    counts = json.loads((lib / "summary.json").read_text())["counts"]
    print(f"\n## {scale} ({lib.name}): {', '.join(f'{k} {v:,}' for k, v in counts.items())}")
    print(
        f"best of {repeat}; {os.cpu_count()} CPUs, load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; rec/s = records per second of the child's CPU time "
        "(per core) and of wall time\n"
    )
    lines = [
        [
            "stage",
            "records",
            "rec/s (CPU)",
            "rec/s (wall)",
            "peak RSS MB",
            "before: rec/s (CPU), RSS",
            "speed-up",
            "baseline",
            "baseline rec/s (CPU)",
            "ratio",
            "target",
            "met?",
        ],
        *(table_row(row, results) for row in PLAN),
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    patrons = results["patrons"]
    print(
        f"\npatrons: {patrons['input_rows']:,} Z303-Z308 rows in, "
        f"{fmt(patrons['input_rows'] / patrons['cpu'])} input rows/s (CPU). CPU/wall s: "
        + ", ".join(f"{k} {v['cpu']:.1f}/{v['wall']:.1f}" for k, v in results.items()),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scales", default="small", help="comma-separated demo scales (bnu takes ~10 min to generate)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per stage; CPU rates are the best of N")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--library", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.library)
        return
    for scale in args.scales.split(","):
        report(scale, prepare(scale, args.seed), max(1, args.repeat))


if __name__ == "__main__":
    main()
