"""``aleph2alma-dev demo generate``: a synthetic Aleph library shaped like BNU's, with known faults.

Writes, under ``out_dir``:

- ``alephseq/<BIB library file>`` for the CNMARC (Chinese) and MARC 21 (Western) BIB
  libraries and ``alephseq/<hol_file>`` for the HOL library, as Aleph exports them;
- the Aleph replica database (``db_url``, default ``sqlite:///<out_dir>/replica.sqlite``)
  with the Z-tables of the ADM and USR libraries;
- ``ground_truth.jsonl``: one line per seeded defect, ``{"entity", "record_id", "defect"}``;
- ``summary.json``: scale, seed, as_of, counts per entity and table, defects, paths.

The output depends only on (scale, seed, as_of, settings): no clock, no global random.
Structure is planned once (``plan.py``); the ALEPHSEQ files and the database are then
written independently: in parallel worker processes (``worker.py``) at the larger scales.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

import aleph2alma
import aleph2alma_dev
from aleph2alma import settings as settings_module
from aleph2alma.settings import BibLibrary, MigrationSettings
from aleph2alma_dev.demo import replica, rows
from aleph2alma_dev.demo.defects import DEFECT_RATES, defect_names
from aleph2alma_dev.demo.plan import SCALES, Plan, Scale, build_plan, save_plan
from aleph2alma_dev.demo.worker import run_task

__all__ = ["SCALES", "Scale", "generate", "DEFECT_RATES", "GeneratorError"]

log = logging.getLogger(__name__)

PARALLEL_FROM_BIBS = 50_000  # below this, one process is faster than starting workers
GROUND_TRUTH = "ground_truth.jsonl"
SUMMARY = "summary.json"


class GeneratorError(ValueError):
    """The demo library cannot be generated as asked (unknown scale, unsuitable settings)."""


def _bib_libraries(settings: MigrationSettings) -> tuple[BibLibrary, BibLibrary]:
    """(Chinese CNMARC library, Western MARC 21 library) from the settings."""
    by_flavour = {lib.flavour: lib for lib in reversed(settings.bib_libraries)}
    if set(by_flavour) != {"CNMARC", "MARC21"}:
        raise GeneratorError(
            "the demo library needs one CNMARC and one MARC21 BIB library in the settings; got "
            + ", ".join(f"{lib.code} ({lib.flavour})" for lib in settings.bib_libraries)
        )
    return by_flavour["CNMARC"], by_flavour["MARC21"]


def _file(lib: BibLibrary) -> str:
    return lib.file or f"{lib.code}.seq"


def _run_in_subprocess(plan_path: Path, task: dict[str, Any]) -> dict[str, Any]:
    # Both packages' roots (include/ and dev/), so the worker imports the same code as this process.
    inits = (aleph2alma.__file__, aleph2alma_dev.__file__)
    roots = dict.fromkeys(str(Path(init).resolve().parents[1]) for init in inits)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [*roots, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "aleph2alma_dev.demo.worker", str(plan_path), json.dumps(task)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise GeneratorError(
            f"demo worker for {task['kind']} {task['code']} failed (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _run_tasks(plan: Plan, tasks: list[dict[str, Any]], out_dir: Path) -> list[dict[str, Any]]:
    """Run the independent parts: in worker processes at the larger scales, else in-process."""
    workers = min(len(tasks), os.cpu_count() or 1)
    if len(plan.bib_lib) < PARALLEL_FROM_BIBS or workers < 2:
        return [run_task(plan, task) for task in tasks]
    plan_path = out_dir / ".plan.npz"
    save_plan(plan, plan_path)
    try:
        with ThreadPoolExecutor(workers) as pool:  # threads only wait: the work is in subprocesses
            return list(pool.map(lambda task: _run_in_subprocess(plan_path, task), tasks))
    finally:
        plan_path.unlink(missing_ok=True)


def _ground_truth(plan: Plan, chi: str, wes: str, hol_library: str) -> Iterator[dict[str, str]]:
    """One line per defect record, by entity, defect and record id."""

    def lines(entity: str, codes_: np.ndarray, record_id: Callable[[int], str]) -> Iterator[dict[str, str]]:
        names = defect_names(entity)
        found = sorted((names[int(codes_[i]) - 1], record_id(int(i))) for i in np.flatnonzero(codes_))
        for defect, rid in found:
            yield {"entity": entity, "record_id": rid, "defect": defect}

    libs = (chi, wes)
    yield from lines(
        "bibs", plan.bib_defect, lambda b: f"{libs[int(plan.bib_lib[b])]}:{int(plan.bib_sysno[b]):09d}"
    )
    yield from lines("holdings", plan.hol_defect, lambda h: f"{hol_library}:{int(plan.hol_sysno[h]):09d}")
    yield from lines(
        "items", plan.item_defect, lambda i: rows.item_key(int(plan.item_adm[i]), int(plan.item_seq[i]))
    )
    yield from lines("patrons", plan.pat_defect, rows.patron_key)
    loan_keys, request_keys, fine_keys = rows.loan_keys(plan), rows.request_keys(plan), rows.fine_keys(plan)
    yield from lines("loans", plan.loan_defect, lambda n: loan_keys[n])
    yield from lines("requests", plan.req_defect, lambda n: request_keys[n])
    yield from lines("fines", plan.fine_defect, lambda n: fine_keys[n][0])


def generate(
    out_dir: Path,
    *,
    scale: str = "tiny",
    seed: int = 1,
    db_url: str | None = None,
    settings: MigrationSettings | None = None,
    as_of: date = date(2026, 11, 1),
) -> dict[str, Any]:
    """Generate the demo library under ``out_dir``; returns the summary (also ``summary.json``).

    ``settings`` defaults to the ``demo`` migration (BNU01 CNMARC, BNU02 MARC 21, BNU60, BNU50).
    ``as_of`` is the day the snapshot is taken: loans, expiries and dates are relative to it.
    """
    if scale not in SCALES:
        raise GeneratorError(f"unknown scale {scale!r}; known scales: {', '.join(SCALES)}")
    settings = settings or settings_module.load("demo")
    chi, wes = _bib_libraries(settings)
    out_dir = Path(out_dir)
    seq_dir = out_dir / "alephseq"
    seq_dir.mkdir(parents=True, exist_ok=True)
    db_url = db_url or replica.default_url(out_dir)
    replica.check_target(db_url, settings.schemas)
    libraries = (chi.code, wes.code)

    started = time.perf_counter()
    plan = build_plan(SCALES[scale], seed, as_of)
    log.info(
        "planned %s library (seed %s) in %.1fs, %.0f MB of arrays",
        scale,
        seed,
        time.perf_counter() - started,
        plan.nbytes() / 2**20,
    )
    tasks: list[dict[str, Any]] = [  # longest first: the database, then the largest file
        {
            "kind": "db",
            "code": settings.adm_library,
            "db_url": db_url,
            "schemas": dict(settings.schemas),
            "libraries": libraries,
        },
        {"kind": "bibs", "code": chi.code, "lib": 0, "cnmarc": True, "path": str(seq_dir / _file(chi))},
        {"kind": "bibs", "code": wes.code, "lib": 1, "cnmarc": False, "path": str(seq_dir / _file(wes))},
        {
            "kind": "holdings",
            "code": settings.hol_library,
            "libraries": libraries,
            "path": str(seq_dir / settings.hol_file),
        },
    ]
    results = _run_tasks(plan, tasks, out_dir)
    for r in results:
        log.info("wrote %s in %.1fs (%.1fs CPU)", r["name"], r["seconds"], r["cpu_seconds"])
    table_counts: dict[str, int] = results[0]["result"]

    truth = list(_ground_truth(plan, chi.code, wes.code, settings.hol_library))
    with open(out_dir / GROUND_TRUTH, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in truth)
    defects: dict[str, dict[str, int]] = {
        entity: dict.fromkeys(names, 0) for entity, names in DEFECT_RATES.items()
    }
    for line in truth:
        defects[line["entity"]][line["defect"]] += 1

    s = SCALES[scale]
    electronic = Counter(libraries[int(lib)] for lib in plan.bib_lib[plan.bib_e].tolist())
    summary: dict[str, Any] = {
        "scale": scale,
        "seed": seed,
        "as_of": as_of.isoformat(),
        "counts": {
            "bibs": len(plan.bib_lib),
            "holdings": len(plan.hol_sysno),
            "items": len(plan.item_hol),
            "patrons": len(plan.pat_status),
            "loans": len(plan.loan_item),
            "requests": len(plan.req_item),
            "fines": len(plan.fine_patron),
            "orders": len(plan.order_adm),
            "vendors": s.vendors,
            "budgets": s.budgets,
        },
        "bibs_by_library": {code: int((plan.bib_lib == i).sum()) for i, code in enumerate(libraries)},
        "electronic_bibs": {code: electronic.get(code, 0) for code in libraries},
        "adm_records": len(plan.adm_bib),
        "tables": table_counts,
        "defects": defects,
        "defect_records": len(truth),
        "files": {
            chi.code: f"alephseq/{_file(chi)}",
            wes.code: f"alephseq/{_file(wes)}",
            settings.hol_library: f"alephseq/{settings.hol_file}",
            "ground_truth": GROUND_TRUTH,
            "summary": SUMMARY,
        },
        "db_url": db_url,
        "schemas": dict(settings.schemas),
    }
    (out_dir / SUMMARY).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    log.info(
        "demo library %s (seed %s) generated in %.1fs under %s",
        scale,
        seed,
        time.perf_counter() - started,
        out_dir,
    )
    return summary
