"""The whole first test load as a DAG run, measured: wall time per stage, peak RSS per task, bytes.

    .venv/bin/python bench/test_load.py [--scale small|bnu] [--seed 1] [--no-cutover]
                                        [--executor local|celery] [--workers 2] [--demo-parts]
                                        [--json out.json] [--same-as other-run.json]

Against a real stack (Airflow + S3 endpoint + Alma API emulator, started here) and the demo
library of that scale (generated once, cached under ``bench/out/<scale>-seed<N>/``):

1. ``migration_test_load`` (API load off): extract → transform and validate → package → deliver.
   The "test environment loaded?" gate is answered Reject as soon as it opens: the measure ends
   at the delivery (what follows waits on Ex Libris).
2. unless ``--no-cutover``: ``migration_fix_cycle`` signed off (the cutover needs it; not timed),
   then ``migration_cutover`` from the technical-services freeze (approved at once) to the
   delivery of the final inventory; "cutover environment accepted?" is answered Reject.

The migration runs with the product's part sizes (``MigrationSettings``: 250,000 Z-table rows,
64 MiB of ALEPHSEQ per part), not the demo's small ones (``--demo-parts`` keeps those). A sampler
reads the peak RSS (``VmHWM``) of every task process (``airflow worker -- <task instance id>``)
twice a second. S3 bytes are the bucket's size after the run minus before it. The goals at
``bnu`` on 2 cores (issue 13): the test load within 30 minutes, no task above 1.5 GB.

``--json`` also keeps every file the test load's extract and transform committed (records,
rejected, sha256); ``--same-as`` compares this run's with such a file, so that a run on two
Celery workers can be checked against one on the embedded stack (exit 1 if they differ).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from freeze_window import OUT, config_with_cutover_form, library

MIGRATION = "demo"
GOAL_SECONDS = 30 * 60
RSS_LIMIT_MB = 1500.0
TASK_TITLE = re.compile(rb"^airflow worker -- ([0-9a-f-]{36})")
PART_SIZE_KEYS = ("part_rows", "part_bytes", "db_chunk_rows")
TRANSFORM_GROUPS = (
    "bibs",
    "holdings",
    "validation",
    "items",
    "bibs_with_items",
    "patrons",
    "fulfillment",
    "p2e",
    "audit",
)


class RssSampler(threading.Thread):
    """Peak RSS (MB) per task instance id, read from ``/proc`` every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.peaks, self.loads = interval, dict[str, float](), list[float]()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.loads.append(os.getloadavg()[0])
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                    match = TASK_TITLE.match(title)
                    if match:
                        status = Path(f"/proc/{pid}/status").read_text()
                        hwm = next(
                            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
                        )
                        ti = match.group(1).decode()
                        self.peaks[ti] = max(self.peaks.get(ti, 0.0), hwm / 1024)
                except (OSError, StopIteration):
                    continue  # the process ended between listing and reading

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class Stage:
    name: str
    seconds: float
    tasks: int
    largest: tuple[str, float] = ("—", 0.0)  # task, peak RSS MB
    note: str = ""


@dataclass
class Measure:
    scale: str
    counts: dict[str, int]
    stages: list[Stage] = field(default_factory=list)
    total_s: float = 0.0  # trigger → the run ended (the gate's Reject and the closing tasks included)
    delivered_s: float = 0.0  # the test load's first task → its delivery: what the goal is about
    s3_bytes: int = 0
    load: tuple[float, float] = (0.0, 0.0)  # mean and max of the 1-minute load average
    cutover: list[Stage] = field(default_factory=list)
    ts_window_s: float | None = None
    committed: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    """Every file the test load's extract and transform committed: ``dag/stage/entity`` → file
    name → [records, rejected, sha256]. Run ids are in keys only, so two runs compare as equal."""


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def span(tis: list[dict[str, Any]]) -> float:
    ran = [t for t in tis if t.get("start_date") and t.get("end_date")]
    if not ran:
        return 0.0
    return (max(when(t["end_date"]) for t in ran) - min(when(t["start_date"]) for t in ran)).total_seconds()


def task_name(ti: dict[str, Any]) -> str:
    index = ti.get("map_index", -1)
    return ti["task_id"] if index is None or index < 0 else f"{ti['task_id']}[{index}]"


def stage_of(name: str, tis: list[dict[str, Any]], peaks: dict[str, float]) -> Stage:
    ran = [t for t in tis if t.get("start_date")]
    sized = [(task_name(t), peaks[t["id"]]) for t in ran if t["id"] in peaks]
    return Stage(name, span(ran), len(ran), max(sized, key=lambda s: s[1], default=("—", 0.0)))


def committed_files(store: Any, dag_id: str, run_id: str) -> dict[str, dict[str, list[Any]]]:
    from aleph2alma.storage import MANIFEST_NAME

    prefix = f"{MIGRATION}/runs/{dag_id}/{run_id}/"
    found = {}
    for key in store.list_keys(prefix):
        if key.endswith("/" + MANIFEST_NAME):
            manifest = store.manifest(key)
            stage = key.removeprefix(prefix).removesuffix("/" + MANIFEST_NAME)
            found[f"{dag_id}/{stage}"] = {
                f.key.rsplit("/", 1)[-1]: [f.records, f.rejected, f.sha256] for f in manifest.files
            }
    return found


def compare_committed(mine: dict[str, Any], other: dict[str, Any], name: str) -> tuple[bool, str]:
    """Whether the two runs committed the same files (counts and sha256), and a line saying so."""
    files = sum(len(f) for f in mine.values())
    differ = sorted(
        f"{stage}/{file}"
        for stage in set(mine) | set(other)
        for file in set(mine.get(stage, {})) | set(other.get(stage, {}))
        if mine.get(stage, {}).get(file) != other.get(stage, {}).get(file)
    )
    if not differ:
        return True, f"committed files: {len(mine)} stages, {files:,} files, same counts and sha256 as {name}"
    return False, f"committed files DIFFER from {name} in {len(differ)}: " + ", ".join(differ[:10])


def bucket_bytes(stack: Any) -> int:
    from aleph2alma_dev.devstack import BUCKET

    s3, total = stack.s3_client(), 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def config_for(scale: str, demo_parts: bool) -> Path:
    """The demo configuration (its cutover form completed), with the product's part sizes, and the
    rules' absolute caps lifted: the demo's (``max_count = 100`` invalid UTF-8 bibs) are sized for
    ``small``, and its generator plants errors in proportion (1,503 at ``bnu``, 0.05 %: within
    the rule's 1 %). The benchmark measures the pipeline, not the demo data's error count."""
    root = config_with_cutover_form(OUT / f"test-load-config-{scale}")
    _drop_keys(root / MIGRATION / "rules.toml", ("max_count",))
    if not demo_parts:
        _drop_keys(root / MIGRATION / "migration.toml", PART_SIZE_KEYS)
    return root


def _drop_keys(toml: Path, keys: tuple[str, ...]) -> None:
    lines = toml.read_text().splitlines(keepends=True)
    toml.write_text("".join(line for line in lines if line.split("=")[0].strip() not in keys))


def answer_then_stop(client: Any, store: Any, stack: Any, stop_at: str) -> Any:
    """Every gate approved (as ``exlibris_gate``), but ``stop_at``: Reject, which skips what follows."""
    from aleph2alma_dev.demo.runner import exlibris_gate

    approve = exlibris_gate(client, store, stack)

    def on_gate(ti: dict[str, Any]) -> None:
        if ti["task_id"] == stop_at:
            client.answer(ti["dag_id"], ti["dag_run_id"], stop_at, ["Reject"])
        else:
            approve(ti)

    return on_gate


def test_load(
    client: Any, store: Any, stack: Any, sampler: RssSampler, m: Measure, conf: dict[str, Any]
) -> str:
    from aleph2alma.runs import TEST_LOAD_DAG, ChildStep, RunRef
    from aleph2alma_dev.demo.runner import run_dag

    started = time.monotonic()
    on_gate = answer_then_stop(client, store, stack, "test_environment_loaded")
    run = run_dag(
        client, store, TEST_LOAD_DAG, {**conf, "api_load": False}, timeout=6 * 3600, on_gate=on_gate
    )
    m.total_s = time.monotonic() - started
    parent = RunRef(TEST_LOAD_DAG, run["run_id"])
    extract, transform = parent.child(ChildStep.EXTRACT), parent.child(ChildStep.TRANSFORM)
    for ref in (extract, transform):
        if client.run_state(ref.dag_id, ref.run_id) != "success":
            raise SystemExit(f"{ref} did not succeed: {client.failed_tasks(ref.dag_id, ref.run_id)}")
    own = client.task_instances(TEST_LOAD_DAG, run["run_id"])
    if not any(t["task_id"] == "deliver" and t["state"] == "success" for t in own):
        raise SystemExit(f"the test load did not deliver: {run.get('failed_tasks')}")
    for ref in (extract, transform):
        m.committed |= committed_files(store, ref.dag_id, ref.run_id)
    m.stages.append(stage_of("extract", client.task_instances(extract.dag_id, extract.run_id), sampler.peaks))
    tis = client.task_instances(transform.dag_id, transform.run_id)
    m.stages.append(stage_of("transform + validate", tis, sampler.peaks))
    for group in TRANSFORM_GROUPS:
        grouped = [t for t in tis if t["task_id"] == group or t["task_id"].startswith(group + ".")]
        if any(t.get("start_date") for t in grouped):
            m.stages.append(stage_of(f"  {group}", grouped, sampler.peaks))
    for task_id in ("package", "deliver"):
        m.stages.append(stage_of(task_id, [t for t in own if t["task_id"] == task_id], sampler.peaks))
    deliver_end = max(when(t["end_date"]) for t in own if t["task_id"] == "deliver")
    first = min(when(t["start_date"]) for t in own if t.get("start_date"))
    m.delivered_s = (deliver_end - first).total_seconds()
    m.stages.append(Stage("test load, first task → delivered", m.delivered_s, 0))
    return str(run["run_id"])


def cutover(
    client: Any, store: Any, stack: Any, sampler: RssSampler, m: Measure, conf: dict[str, Any], test_run: str
) -> None:
    from aleph2alma.runs import CUTOVER_DAG, FIX_CYCLE_DAG, TEST_LOAD_DAG, ChildStep, RunRef
    from aleph2alma_dev.demo.runner import exlibris_gate, run_dag

    parent = RunRef(TEST_LOAD_DAG, test_run)
    fix_conf = {
        **conf,
        "iteration": 1,
        "extract_run_id": parent.child(ChildStep.EXTRACT).run_id,
        "previous_transform_run_id": parent.child(ChildStep.TRANSFORM).run_id,
    }
    print(f"[{m.scale}] {FIX_CYCLE_DAG}, signed off (the cutover needs it; not timed) …", flush=True)
    fixed = run_dag(
        client, store, FIX_CYCLE_DAG, fix_conf, timeout=6 * 3600, on_gate=exlibris_gate(client, store, stack)
    )
    if fixed["state"] != "success":
        raise SystemExit(f"the fix cycle did not succeed: {fixed.get('failed_tasks')}")
    print(f"[{m.scale}] {CUTOVER_DAG}: technical-services freeze → inventory delivered …", flush=True)
    on_gate = answer_then_stop(client, store, stack, "cutover_environment_accepted")
    run = run_dag(
        client, store, CUTOVER_DAG, {**conf, "fulfillment_by": "files"}, timeout=6 * 3600, on_gate=on_gate
    )
    tis = client.task_instances(CUTOVER_DAG, run["run_id"])
    done = {t["task_id"]: t for t in tis if t.get("end_date")}
    if "deliver_inventory" not in done or done["deliver_inventory"]["state"] != "success":
        raise SystemExit(f"the cutover did not deliver its inventory: {run.get('failed_tasks')}")
    freeze = when(done["technical_services_freeze"]["end_date"])
    window = [
        t
        for t in tis
        if t.get("start_date")
        and freeze <= when(t["start_date"])
        and when(t["end_date"]) <= when(done["deliver_inventory"]["end_date"])
    ]
    for ref in (
        RunRef(CUTOVER_DAG, run["run_id"]).child(step)
        for step in (ChildStep.INVENTORY_EXTRACT, ChildStep.INVENTORY_TRANSFORM)
    ):
        m.cutover.append(stage_of(ref.dag_id, client.task_instances(ref.dag_id, ref.run_id), sampler.peaks))
    m.cutover.append(stage_of("cutover's own tasks in the window", window, sampler.peaks))
    m.ts_window_s = (when(done["deliver_inventory"]["end_date"]) - freeze).total_seconds()


def measure(args: argparse.Namespace) -> Measure:
    from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_DESCRIPTION, ALMA_POOL_SLOTS
    from aleph2alma_dev.demo.runner import stack_for
    from aleph2alma_dev.devstack import free_port

    lib = library(args.scale, args.seed)
    generated = json.loads((lib / "summary.json").read_text())
    config = config_for(args.scale, args.demo_parts)
    state_dir = OUT / f"test-load-stack-{args.scale}-{args.executor}"
    shutil.rmtree(state_dir, ignore_errors=True)
    options: dict[str, Any] = {"state_dir": state_dir, "api_port": free_port()}
    if args.executor == "celery":
        options.update(executor="celery", workers=args.workers)
    stack = stack_for(lib, **options)
    stack.extra_env["ALEPH2ALMA_CONFIG_ROOT"] = str(config)
    m = Measure(args.scale, generated["counts"])
    sampler = RssSampler()
    with stack:
        client, store = stack.airflow_client(), stack.artifact_store()
        client.ensure_pool(ALMA_POOL, ALMA_POOL_SLOTS, ALMA_POOL_DESCRIPTION)
        conf = {"migration_id": MIGRATION, "as_of": generated["as_of"]}
        before = bucket_bytes(stack)
        sampler.start()
        print(f"[{args.scale}] migration_test_load → delivered …", flush=True)
        try:
            run_id = test_load(client, store, stack, sampler, m, conf)
            m.s3_bytes = bucket_bytes(stack) - before
            if not args.no_cutover:
                cutover(client, store, stack, sampler, m, conf, run_id)
        finally:
            sampler.stop()
        m.load = (sum(sampler.loads) / max(1, len(sampler.loads)), max(sampler.loads, default=0.0))
    return m


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def table(m: Measure, args: argparse.Namespace) -> str:
    head = f"| {'stage':<36} | {'wall m:s':>8} | {'tasks':>5} | {'largest task (peak RSS MB)':<44} |"
    rule = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"

    def row(s: Stage) -> str:
        big = f"{s.largest[0]} ({s.largest[1]:,.0f})" if s.largest[1] else "—"
        return f"| {s.name:<36} | {minutes(s.seconds):>8} | {s.tasks or '':>5} | {big:<44} |"

    peak = max((s.largest for s in m.stages + m.cutover), key=lambda x: x[1])
    lines = [
        f"## {m.scale}: " + ", ".join(f"{k} {v:,}" for k, v in m.counts.items()),
        f"executor {args.executor}"
        + (f", {args.workers} workers" if args.executor == "celery" else "")
        + f"; {os.cpu_count()} cores; load average {m.load[0]:.1f} mean, {m.load[1]:.1f} max; "
        + ("demo part sizes" if args.demo_parts else "product part sizes"),
        "",
        head,
        rule,
        *(row(s) for s in m.stages),
        "",
        f"test load, first task → delivered: {minutes(m.delivered_s)} "
        + f"(goal at bnu ≤ {minutes(GOAL_SECONDS)}: "
        + ("met" if m.delivered_s <= GOAL_SECONDS else "NOT met")
        + f"); trigger → run ended {minutes(m.total_s)}",
        f"largest task: {peak[0]} at {peak[1]:,.0f} MB (goal < {RSS_LIMIT_MB:,.0f} MB: "
        + ("met" if peak[1] < RSS_LIMIT_MB else "NOT met")
        + ")",
        f"S3 bytes written by the test load: {m.s3_bytes:,} ({m.s3_bytes / 2**30:.2f} GiB)",
    ]
    if m.ts_window_s is not None:
        lines += ["", "cutover, technical-services freeze → inventory delivered:", "", head, rule]
        lines += [row(s) for s in m.cutover]
        lines += ["", f"technical-services freeze window: {minutes(m.ts_window_s)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["tiny", "small", "bnu"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-cutover", action="store_true", help="the test load only")
    parser.add_argument("--executor", default="local", choices=["local", "celery"])
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (--executor celery)")
    parser.add_argument("--demo-parts", action="store_true", help="the demo's small part sizes")
    parser.add_argument("--json", type=Path, help="also write the measures here (and the committed files)")
    parser.add_argument(
        "--same-as",
        type=Path,
        help="another run's --json: say whether this run committed the same files (counts, sha256)",
    )
    args = parser.parse_args(argv)
    # SIGTERM (timeout, kill) unwinds like Ctrl-C: the stack's processes are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    m = measure(args)
    print(table(m, args), flush=True)
    same = True
    if args.same_as:
        same, verdict = compare_committed(
            m.committed, json.loads(args.same_as.read_text())["committed"], str(args.same_as)
        )
        print(verdict, flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    **m.__dict__,
                },
                default=lambda o: o.__dict__,
                indent=2,
            )
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
