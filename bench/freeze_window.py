"""The cutover's freeze windows, measured on the DAG run, beside the same work run on its own.

    .venv/bin/python bench/freeze_window.py [--scales small,bnu] [--seed 1]

Per scale, against a real embedded stack (Airflow standalone + S3 endpoint + Alma API emulator)
and the demo library of that scale (generated once, cached under ``bench/out/<scale>-seed<N>/``):

1. **baseline**: ``migration_extract`` and then ``migration_transform`` of it, each as its own DAG
   run with no gate: the fastest the extract → transform work goes through this Airflow;
2. ``migration_fix_cycle`` on that extract, signed off (the cutover needs a baseline; not timed);
3. ``migration_cutover`` with every gate answered as soon as it opens (the form first completed
   as the librarian does before the cutover). The run summary's freeze windows are the measure:
   each freeze gate's approval → its delivery (technical services: inventory extract → fix rules →
   transform → package → deliver; fulfillment: the final snapshot's extract → fix rules →
   transform → package → patrons, loans, requests and fees through the emulated Alma API).

The table gives each window, the baseline (extract + transform DAG runs), the window's records per
second, and each window over the baseline. The goal at BNU scale (1.5M bibs, 4.8M items) on 2 cores
is the technical-services window within 30 minutes. The API load in the fulfillment window runs
at the emulator's latency and limit (see ``bench/alma_api.py``), not Alma's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
MIGRATION = "demo"


def library(scale: str, seed: int) -> Path:
    from aleph2alma_dev.demo.generator import generate

    lib = OUT / f"{scale}-seed{seed}"
    if not (lib / "summary.json").exists():
        print(f"generating the {scale} library (seed {seed}) under {lib} …", flush=True)
        generate(lib, scale=scale, seed=seed)
    return lib


def config_with_cutover_form(root: Path) -> Path:
    from aleph2alma.alma.form import write_form
    from aleph2alma.settings import CONFIG_ROOT
    from aleph2alma_dev.demo.form import cutover_form

    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(CONFIG_ROOT, root)
    write_form(cutover_form(), root / MIGRATION / "form")
    return root


def run_seconds(client: Any, dag_id: str, run_id: str) -> float:
    """The DAG run's wall time: its first task's start to its last task's end."""
    tis = client.task_instances(dag_id, run_id)
    starts = [datetime.fromisoformat(t["start_date"]) for t in tis if t.get("start_date")]
    ends = [datetime.fromisoformat(t["end_date"]) for t in tis if t.get("end_date")]
    return (max(ends) - min(starts)).total_seconds()


def measure(scale: str, seed: int) -> dict[str, Any]:
    from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_DESCRIPTION, ALMA_POOL_SLOTS
    from aleph2alma.runs import CUTOVER_DAG, EXTRACT_DAG, TRANSFORM_DAG
    from aleph2alma_dev.demo.runner import exlibris_gate, run_dag, stack_for
    from aleph2alma_dev.devstack import free_port

    lib = library(scale, seed)
    generated = json.loads((lib / "summary.json").read_text())
    config = config_with_cutover_form(OUT / f"freeze-config-{scale}")
    stack = stack_for(lib, state_dir=OUT / f"freeze-stack-{scale}", api_port=free_port())
    stack.extra_env["ALEPH2ALMA_CONFIG_ROOT"] = str(config)
    hours = 6 * 3600
    with stack:
        client, store = stack.airflow_client(), stack.artifact_store()
        client.ensure_pool(ALMA_POOL, ALMA_POOL_SLOTS, ALMA_POOL_DESCRIPTION)
        on_gate = exlibris_gate(client, store, stack)
        conf = {"migration_id": MIGRATION, "as_of": generated["as_of"]}
        print(f"[{scale}] baseline: {EXTRACT_DAG} …", flush=True)
        extract = run_dag(client, store, EXTRACT_DAG, {"migration_id": MIGRATION}, timeout=hours)
        print(f"[{scale}] baseline: {TRANSFORM_DAG} …", flush=True)
        transform = run_dag(
            client, store, TRANSFORM_DAG, {**conf, "extract_run_id": extract["run_id"]}, timeout=hours
        )
        print(f"[{scale}] fix cycle, signed off (not timed) …", flush=True)
        fix_conf = {**conf, "iteration": 1, "extract_run_id": extract["run_id"]}
        fix_cycle = run_dag(client, store, "migration_fix_cycle", fix_conf, timeout=hours, on_gate=on_gate)
        print(f"[{scale}] {CUTOVER_DAG} …", flush=True)
        started = time.monotonic()
        cutover = run_dag(
            client, store, CUTOVER_DAG, {**conf, "fulfillment_by": "api"}, timeout=hours, on_gate=on_gate
        )
        runs = {"extract": extract, "transform": transform, "fix_cycle": fix_cycle, "cutover": cutover}
        failed = {name: r.get("failed_tasks") for name, r in runs.items() if r["state"] != "success"}
        if failed:
            raise SystemExit(f"[{scale}] runs did not succeed: {failed}")
        return {
            "scale": scale,
            "records": sum(generated["counts"].values()),
            "bibs": generated["counts"]["bibs"],
            "items": generated["counts"]["items"],
            "baseline_s": run_seconds(client, EXTRACT_DAG, extract["run_id"])
            + run_seconds(client, TRANSFORM_DAG, transform["run_id"]),
            "windows": cutover["freeze_windows"],
            "cutover_s": time.monotonic() - started,
        }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'scale':<6} {'bibs':>9} {'items':>9} {'baseline s':>11} {'TS window s':>12} {'× base':>7} "
        f"{'rec/s':>8} {'ful. window s':>14} {'× base':>7} {'cutover run s':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ts, ful = r["windows"]["technical_services"]["seconds"], r["windows"]["fulfillment"]["seconds"]
        lines.append(
            f"{r['scale']:<6} {r['bibs']:>9,} {r['items']:>9,} {r['baseline_s']:>11,.0f} {ts:>12,.0f} "
            f"{ts / r['baseline_s']:>7.2f} {r['records'] / ts:>8,.0f} {ful:>14,.0f} "
            f"{ful / r['baseline_s']:>7.2f} {r['cutover_s']:>14,.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="small")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rows = [measure(scale, args.seed) for scale in args.scales.split(",")]
    print(f"\ncores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at the end")
    print(table(rows))
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
