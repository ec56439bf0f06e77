"""Nightly delta throughput beside the full extract's, measured in the same run (see README.md).

    .venv/bin/python bench/delta.py [--scale small] [--seed 1] [--change 0.01]

Setup (not measured): the demo library of ``--scale`` (generated once and cached under
``bench/out/<scale>-seed<N>/``, as bench/transform.py does) is copied to
``bench/out/delta-<scale>-seed<N>/``, where a local-folder store (``storage_local``) stands in
for S3. Measured, each step in its own child process (``--child STEP --work DIR``) that prints
one JSON line (records, wall and CPU seconds of the step, peak RSS):

1. ``extract``: a full extract of every entity (``pipeline.extract``, the DAG's part sizes);
2. ``first night``: the first nightly delta, compared with that extract (whose raw parts it
   reads back and hashes);
3. a night's changes are made (not measured): ``--change`` of the items edited (update date
   moved) and the other changes listed in ``CHANGES``;
4. ``night``: the steady-state night, from the first night's baseline, Z30/Z303 by update date;
5. ``night, every row hashed``: the same window with ``by_update_date`` off.

The rate of each is the library's records (ALEPHSEQ records + every Z-table row) per CPU second
of the step: how fast the library is covered. The nights also list how many records they found.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
MIGRATION = "demo"
PART_ROWS, PART_BYTES, DB_CHUNK_ROWS = 250_000, 64 * 2**20, 50_000  # MigrationSettings' defaults
AS_OF = date(2026, 11, 1)  # the demo library's snapshot day
FIRST_NIGHT = datetime(2026, 11, 1, 18, 0, tzinfo=UTC)  # 02:00 on 2 November in Shanghai
NIGHT = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)
NIGHT_DAY = 20261102  # the Shanghai day the night's changes were made
CHANGES = {
    "items inserted": 50,
    "items deleted": 50,
    "loans returned": 50,
    "bibs edited": 100,
    "holdings edited": 20,
}


# --- setup (not measured) -------------------------------------------------------------------


def prepare(scale: str, seed: int) -> Path:
    """A fresh copy of the cached demo library of ``scale``, with an empty store."""
    from aleph2alma_dev.demo.generator import generate

    cached = OUT / f"{scale}-seed{seed}"
    if not (cached / "summary.json").exists():
        print(f"generating the {scale} library (seed {seed}) under {cached} …", flush=True)
        generate(cached, scale=scale, seed=seed)
    work = OUT / f"delta-{scale}-seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "library" / "alephseq").mkdir(parents=True)
    shutil.copy(cached / "replica.sqlite", work / "library" / "replica.sqlite")
    shutil.copy(cached / "summary.json", work / "library" / "summary.json")
    for export in (cached / "alephseq").iterdir():
        shutil.copy(export, work / "library" / "alephseq" / export.name)
    return work


def make_changes(library: Path, share: float) -> dict[str, int]:
    """A night's worth of changes, as Aleph's clients would make them (see ``CHANGES``)."""
    made: dict[str, int] = {}
    with sqlite3.connect(library / "replica.sqlite") as db:
        items = [k for (k,) in db.execute("SELECT z30_rec_key FROM z30 ORDER BY z30_rec_key")]
        edited = items[:: max(1, int(1 / share))]
        db.executemany(
            "UPDATE z30 SET z30_note_internal = ?, z30_update_date = ? WHERE z30_rec_key = ?",
            [("shelf-read 2026".ljust(200), NIGHT_DAY, k) for k in edited],
        )
        made["items edited"] = len(edited)
        gone = items[1 :: len(items) // CHANGES["items deleted"]][: CHANGES["items deleted"]]
        db.executemany("DELETE FROM z30 WHERE z30_rec_key = ?", [(k,) for k in gone])
        made["items deleted"] = len(gone)
        template = db.execute("SELECT * FROM z30 WHERE z30_rec_key = ?", (items[0],)).fetchone()
        new = [(f"9{n:08d}000010", *template[1:]) for n in range(CHANGES["items inserted"])]
        db.executemany(f"INSERT INTO z30 VALUES ({', '.join('?' * len(template))})", new)
        made["items inserted"] = len(new)
        loans = [k for (k,) in db.execute("SELECT z36_rec_key FROM z36 ORDER BY z36_rec_key")]
        returned = loans[:: max(1, len(loans) // CHANGES["loans returned"])][: CHANGES["loans returned"]]
        db.executemany("DELETE FROM z36 WHERE z36_rec_key = ?", [(k,) for k in returned])
        made["loans returned"] = len(returned)
    made["bibs edited"] = _edit_seq(
        library / "alephseq" / "BNU02.seq", "245", CHANGES["bibs edited"], cat=True
    )
    made["holdings edited"] = _edit_seq(library / "alephseq" / "BNU60.seq", "852", CHANGES["holdings edited"])
    return made


def _edit_seq(path: Path, tag: str, count: int, cat: bool = False) -> int:
    """Append " (rev.)" to ``tag`` of every n-th record; with ``cat``, a CAT line as a save writes."""
    lines = path.read_bytes().splitlines(keepends=True)
    sysnos = sorted({line[:9] for line in lines if line[10:13] == tag.encode()})
    chosen = set(sysnos[:: max(1, len(sysnos) // count)][:count])
    out = []
    for line in lines:
        if line[:9] in chosen and line[10:13] == tag.encode():
            line = line.rstrip(b"\n") + b" (rev.)\n"
        out.append(line)
        if cat and line[:9] in chosen and line[10:13] == b"CAT":
            out.append(line[:18] + f"$$aCATWW01$$b00$$c{NIGHT_DAY}$$lBNU02$$h0930\n".encode())
    path.write_bytes(b"".join(out))
    return len(chosen)


# --- measured steps (one per child process) ----------------------------------------------------


def peak_rss_mb() -> float:
    """The process's peak RSS (VmHWM; ru_maxrss survives exec and would report the parent's)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(step: str, work: Path) -> None:
    from aleph2alma import pipeline
    from aleph2alma import settings as settings_module
    from aleph2alma.aleph.db import create_engine
    from aleph2alma.aleph.landing import LocalLanding
    from aleph2alma.phases.context import PhaseContext
    from aleph2alma.runs import EXTRACT_DAG, NIGHTLY_DELTA_DAG
    from aleph2alma.storage import ArtifactStore, RunScope
    from aleph2alma.storage_local import LocalObjectClient

    library = work / "library"
    settings = replace(
        settings_module.load(MIGRATION),
        part_rows=PART_ROWS,
        part_bytes=PART_BYTES,
        db_chunk_rows=DB_CHUNK_ROWS,
    )
    if step == "hashed":
        settings = replace(settings, nightly=replace(settings.nightly, by_update_date=False))
    store = ArtifactStore(LocalObjectClient(work / "store"), "bench")
    store.ensure_bucket()
    engine = create_engine(f"sqlite:///{library / 'replica.sqlite'}")
    landing = LocalLanding(library / "alephseq")
    ctx = PhaseContext(store, RunScope(MIGRATION, NIGHTLY_DELTA_DAG, step), settings, AS_OF)
    _ = ctx.form, ctx.rules  # loaded before the clock starts, as a task's imports are
    wall, cpu = time.perf_counter(), time.process_time()
    found = 0
    if step == "extract":
        pipeline.extract(replace(ctx, scope=RunScope(MIGRATION, EXTRACT_DAG, "extract")), engine, landing)
    elif step == "first":
        night = pipeline.nightly_delta(ctx, engine, landing, FIRST_NIGHT)
        found = sum(c.extra["new"] + c.extra["changed"] + c.extra["deleted"] for c in night.stages.values())
    else:  # the night after the changes; "hashed" reads the same window without the update dates
        window = {"window_from": FIRST_NIGHT.isoformat()} if step == "hashed" else {}
        night = pipeline.nightly_delta(ctx, engine, landing, NIGHT, **window)
        found = sum(c.extra["new"] + c.extra["changed"] + c.extra["deleted"] for c in night.stages.values())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": peak_rss_mb(), "found": found}))


def run_child(step: str, work: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        ),
    }
    proc = subprocess.run(
        [sys.executable, __file__, "--child", step, "--work", str(work)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- the table ----------------------------------------------------------------------------------

STEPS = [
    ("extract", "full extract (all entities)"),
    ("first", "first night (vs the extract)"),
    ("night", "night (Z30/Z303 by update date)"),
    ("hashed", "night (every row hashed)"),
]


def library_records(library: Path) -> int:
    """ALEPHSEQ records (FMT lines) + every Z-table row: what a night covers."""
    from aleph2alma.aleph.ztables import Z_TABLES

    with sqlite3.connect(library / "replica.sqlite") as db:
        rows = sum(db.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in Z_TABLES)
    exports = (library / "alephseq").glob("*.seq")
    return rows + sum(sum(1 for line in open(p, "rb") if line[10:13] == b"FMT") for p in exports)


def report(scale: str, seed: int, share: float) -> None:
    work = prepare(scale, seed)
    library = work / "library"
    before = library_records(library)
    results = {}
    for step, _ in STEPS[:2]:
        results[step] = run_child(step, work)
    made = make_changes(library, share)
    after = library_records(library)
    results["night"] = run_child("night", work)
    results["hashed"] = run_child("hashed", work)  # the same window again: the watermark stays
    load = os.getloadavg()[0]
    print(
        f"\n## {scale} (seed {seed}): {before:,} records; the night's changes: "
        + ", ".join(f"{k} {v:,}" for k, v in made.items())
        + f"; load {load:.1f}, {os.cpu_count()} cores\n"
    )
    print("| step | records covered | found | wall | CPU | rate (per core) | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    extract_rate = before / results["extract"]["cpu"]
    for step, label in STEPS:
        r = results[step]
        records = before if step in ("extract", "first") else after
        rate = records / r["cpu"]
        versus = "" if step == "extract" else f" ({rate / extract_rate:.1f}× the extract's)"
        found = "—" if step == "extract" else f"{r['found']:,}"
        print(
            f"| {label} | {records:,} | {found} | {r['wall']:.1f} s | {r['cpu']:.1f} s "
            f"| {rate / 1000:,.0f}k rec/s{versus} | {r['rss_mb']:,.0f} MB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", help="demo scale (tiny, small, bnu)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--change", type=float, default=0.01, help="share of the items edited in the night")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work)
    else:
        report(args.scale, args.seed, args.change)


if __name__ == "__main__":
    main()
