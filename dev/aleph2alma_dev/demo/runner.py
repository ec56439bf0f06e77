"""`make demo`: the whole migration on the demo library, through a real Airflow.

Generates the demo Aleph library, starts the embedded stack, triggers each phase's DAG
through Airflow's REST API (answering gates there, as an operator would in the UI), then
collects every run's summary into ``demo-output/summary.json`` and prints a table. Each package
'Ex Libris' loads (what they would receive: the test load's, the cutover's inventory) is copied
to ``demo-output/delivery/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from aleph2alma import state
from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_DESCRIPTION, ALMA_POOL_SLOTS
from aleph2alma.runs import CUTOVER_DAG, FIX_CYCLE_DAG, PHASE_CHILDREN, TEST_LOAD_DAG, ChildStep, RunRef
from aleph2alma.storage import ArtifactStore, parse_s3_uri
from aleph2alma_dev.airflow_api import AirflowClient
from aleph2alma_dev.devstack import BUCKET, PROJECT_ROOT, EmbeddedStack

MIGRATION_ID = "demo"


def stack_for(data_dir: Path, **kwargs: Any) -> EmbeddedStack:
    """The embedded stack wired to a generated demo library."""
    aleph_db = {
        "conn_type": "generic",
        "extra": {"sqlalchemy_url": f"sqlite:///{data_dir / 'replica.sqlite'}"},
    }
    env = {
        "AIRFLOW_CONN_ALEPH_DB": json.dumps(aleph_db),
        "AIRFLOW_VAR_ALEPH2ALMA_ALEPHSEQ_LANDING": (data_dir / "alephseq").as_uri(),
    }
    return EmbeddedStack(extra_env=env, **kwargs)


def run_summary(
    client: AirflowClient, store: ArtifactStore, dag_id: str, run_id: str, migration_id: str = MIGRATION_ID
) -> dict[str, Any]:
    """A finished run's state and what it recorded in ``run_summary.json`` (stages, manifests, reports)."""
    state = client.run_state(dag_id, run_id)
    summary: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "state": state, "stages": []}
    key = f"{migration_id}/reports/{dag_id}/{run_id}/run_summary.json"
    if store.exists(key):
        recorded = json.loads(store.get_bytes(key))
        summary.update({k: v for k, v in recorded.items() if k not in ("migration_id", "dag_id", "run_id")})
    if state != "success":
        summary["failed_tasks"] = client.failed_tasks(dag_id, run_id)
    return summary


def audit_result(client: AirflowClient, dag_id: str, run_id: str) -> dict[str, Any]:
    """The accounting audit of a run (``aleph2alma.audit``, every phase DAG's closing task): its
    task state and what it returned (status, runs, manifests, lines, gaps, the report's URI)."""
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}
    result = client.xcom(dag_id, run_id, "audit") if states.get("audit") == "success" else {}
    return {"task_state": states.get("audit"), **(result or {})}


def run_dag(
    client: AirflowClient,
    store: ArtifactStore,
    dag_id: str,
    conf: dict[str, Any],
    timeout: float = 1800,
    on_gate: Any = None,
) -> dict[str, Any]:
    """Trigger one DAG run, wait for it (answering gates with ``on_gate``), and return its summary."""
    client.wait_for_dag(dag_id)
    run_id = f"demo__{dag_id}__{time.strftime('%Y%m%dT%H%M%S')}"
    client.trigger(dag_id, run_id, conf)
    client.wait(dag_id, run_id, timeout=timeout, on_gate=on_gate)
    return run_summary(client, store, dag_id, run_id, conf.get("migration_id", MIGRATION_ID))


def copy_delivery(store: ArtifactStore, package_uri: str, out: Path) -> Path:
    """A delivered package, as Ex Libris receives it, under ``out/delivery/``: the zip and its members
    beside it (the test load's, then the cutover's inventory package).

    The embedded S3 keeps nothing once stopped; a newcomer opens this copy.
    """
    bucket, key = parse_s3_uri(package_uri)
    delivery = out / "delivery"
    delivery.mkdir(parents=True, exist_ok=True)
    package = delivery / PurePosixPath(key).name
    store.client.download_file(bucket, key, str(package))
    shutil.rmtree(delivery / package.stem, ignore_errors=True)
    with zipfile.ZipFile(package) as archive:
        archive.extractall(delivery / package.stem)
    return package


LOADED_GATES = {
    "test_environment_loaded": ("deliver", "package"),
    "cutover_environment_accepted": ("deliver_inventory", "package_inventory"),
}
"""Gates answered once 'Ex Libris' has loaded a delivery → (the delivering task, the package task)."""


def delivered_package(
    client: AirflowClient, dag_id: str, run_id: str, deliver: str = "deliver", package: str = "package"
) -> str:
    """The s3:// URI of the package 'Ex Libris' loads.

    Delivery mode generic: the copy ``deliver`` put in S3. Mode autoextract (``deliver`` skipped):
    the AutoExtract STAND-IN delivered placeholders, not records, so the emulator loads the run's
    own package instead, built from the same Aleph library.
    """
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances(dag_id, run_id)}
    if states.get(deliver) == "skipped":
        print("  AutoExtract (STAND-IN) delivered placeholders; 'Ex Libris' loads the run's own package")
        return str(client.xcom(dag_id, run_id, package)["uri"])
    delivered = client.xcom(dag_id, run_id, deliver)
    to_s3 = next(d for d in delivered if d["target"].startswith("s3://"))
    return f"s3://{parse_s3_uri(to_s3['target'] + '/')[0]}/{to_s3['remote_path']}"


def exlibris_gate(
    client: AirflowClient,
    store: ArtifactStore,
    stack: EmbeddedStack,
    out: Path | None = None,
    *,
    go: bool = True,
    before: dict[str, Any] | None = None,
) -> Any:
    """Answer every gate as the operator does: "test environment loaded" and "cutover environment
    accepted" once 'Ex Libris' (the emulator) has loaded the delivery, with its statistics workbook;
    "go live?" with Go (``go``) or No-Go; any other gate with Approve. ``before``: task id → what
    happens in Aleph just before that gate is answered (a test's freeze violation).

    With ``out``, the delivered package is also copied to ``out/delivery/`` (``make demo``).
    """
    from aleph2alma_dev.demo.exlibris import load_delivery

    def on_gate(ti: dict[str, Any]) -> None:
        dag_id, run_id, task_id = ti["dag_id"], ti["dag_run_id"], ti["task_id"]
        if task_id in (before or {}):
            (before or {})[task_id]()
        if task_id not in LOADED_GATES:
            choice = "Reject" if task_id == "go_no_go" and not go else "Approve"
            print(f"  answering {dag_id}.{task_id}: {choice}")
            client.answer(dag_id, run_id, task_id, [choice])
            return
        package_uri = delivered_package(client, dag_id, run_id, *LOADED_GATES[task_id])
        workbook = load_delivery(
            store, package_uri, stack.alma_url, f"{MIGRATION_ID}/exlibris/{run_id}/statistics.xlsx"
        )
        print(f"  'Ex Libris' loaded {package_uri} into the Alma API emulator; statistics: {workbook}")
        if out is not None:
            print(f"  the delivered package is copied to {copy_delivery(store, package_uri, out)}")
        print(f"  answering {task_id}: Approve")
        client.answer(dag_id, run_id, task_id, ["Approve"], {"statistics_workbook_uri": workbook})

    return on_gate


def post_go_live(
    client: AirflowClient,
    store: ArtifactStore,
    on_gate: Any,
    final: RunRef,
    scale: str,
    seed: int,
    generated: dict[str, Any],
) -> dict[str, Any]:
    """After go-live on the final run's snapshot (the cutover's; the test load's if the cutover did not
    go live): the demo desks' offline circulation file uploaded to S3 (what a librarian does), then
    migration_post_go_live with the decommission gate answered."""
    from datetime import date

    from aleph2alma.runs import POST_GO_LIVE_DAG
    from aleph2alma_dev.demo.offline_circ import offline_circulation

    as_of = date.fromisoformat(generated["as_of"])
    key = f"{MIGRATION_ID}/offline-circulation/desks.csv"
    store.put_bytes(key, offline_circulation(scale, seed, as_of).data, content_type="text/csv")
    print(f"Running {POST_GO_LIVE_DAG} (offline circulation → worklists → reconciliation → archive → gate) …")
    conf = {
        "migration_id": MIGRATION_ID,
        "final_run": str(final),
        "offline_circulation_files": [store.uri(key)],
        "as_of": generated["as_of"],
    }
    return run_dag(client, store, POST_GO_LIVE_DAG, conf, on_gate=on_gate)


def _config_copy(root: Path) -> Path:
    """The demo's configuration, copied: the cutover edits its form, as the librarian does."""
    from aleph2alma.settings import CONFIG_ROOT

    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(CONFIG_ROOT, root)
    return root


def cutover(
    client: AirflowClient, store: ArtifactStore, on_gate: Any, config_root: Path, generated: dict[str, Any]
) -> list[dict[str, Any]]:
    """The cutover after the signed-off fix cycle: the librarian first maps the codes the test load
    left unmapped (the preflight refuses to freeze otherwise), then every gate is answered — the
    freezes, the cutover environment (after 'Ex Libris' loaded the inventory), and Go."""
    from aleph2alma.alma.form import write_form
    from aleph2alma_dev.demo.form import CUTOVER_MAPPINGS, cutover_form

    added = sum(len(rows) for rows in CUTOVER_MAPPINGS.values())
    write_form(cutover_form(), config_root / MIGRATION_ID / "form")
    print(
        f"The librarian adds {added} mappings to the form for the cutover (codes the test load left unmapped)"
    )
    print(f"Running {CUTOVER_DAG} (preflight → freezes → inventory and fulfillment loads → go / no-go) …")
    conf = {"migration_id": MIGRATION_ID, "as_of": generated["as_of"], "fulfillment_by": "api"}
    run = run_dag(client, store, CUTOVER_DAG, conf, timeout=3600, on_gate=on_gate)
    cutover_run = RunRef(CUTOVER_DAG, run["run_id"])
    order = (
        ChildStep.INVENTORY_EXTRACT,
        ChildStep.INVENTORY_TRANSFORM,
        ChildStep.EXTRACT,
        ChildStep.TRANSFORM,
    )
    children = [cutover_run.child(step) for step in order]
    return [*(run_summary(client, store, c.dag_id, c.run_id) for c in children), run]


def print_table(runs: list[dict[str, Any]]) -> None:
    for run in runs:
        print(f"\n{run['dag_id']}  {run['run_id']}  → {run['state'].upper()}")
        if run.get("failed_tasks"):
            print(f"  failed tasks: {', '.join(run['failed_tasks'])}")
        print(f"  {'stage':<8} {'entity':<9} {'in':>8} {'out':>8} {'rejected':>8}  manifest")
        for stage in run["stages"]:
            records_in = stage.get("records_in", stage["records"])
            print(
                f"  {stage['stage']:<8} {stage['entity']:<9} {records_in:>8,} {stage['records']:>8,} "
                f"{stage.get('rejected', 0):>8,}  {stage['manifest']}"
            )
        if "reconciliation" in run:
            rec = run["reconciliation"]
            print(
                f"  reconciliation: {'every record accounted for' if rec['all_accounted'] else 'ATTENTION'}  "
                f"{json.dumps(rec['totals'], ensure_ascii=False)}"
            )
        if "diff" in run:
            previous = (run["diff"]["previous"] or {}).get("run_id", "(no earlier iteration)")
            print(f"  iteration diff vs {previous}: {json.dumps(run['diff']['totals'])}")
        if "offline_circulation" in run and run["offline_circulation"]:
            offline = run["offline_circulation"]
            print(
                f"  offline circulation: {offline['records_in']} read, {offline['records_out']} in Alma, "
                f"{offline['rejected']} rejected {json.dumps(offline['rejected_by_reason'])}"
            )
        if "freeze_windows" in run:
            windows = run["freeze_windows"]
            print(
                "  freeze windows (approval → delivered): "
                + ", ".join(
                    f"{name.replace('_', ' ')} {windows[name]['seconds']:,.0f} s"
                    for name in ("technical_services", "fulfillment")
                )
            )
        if "freeze_violations" in run:
            print(f"  freeze violations: {run['freeze_violations']['total']}")
        if "go_no_go" in run:
            decided = run["go_no_go"]
            print(
                f"  go / no-go: {decided['decision'].upper()} by {decided['answered_by']} "
                f"at {decided['answered_at']}"
            )
        if "checklist" in run:
            checklist = run["checklist"]
            print(f"  decommission checklist: {checklist['status']}  {checklist['report_html']}")
        if "validation" in run:
            validation = run["validation"]
            print(
                f"  validation: {validation['status']}  "
                + ", ".join(f"{rule} {n}" for rule, n in sorted(validation["by_rule"].items()))
            )


def save_reports(store: ArtifactStore, runs: list[dict[str, Any]], out: Path) -> None:
    """Copy each run's reports out of the embedded S3 (which keeps nothing once stopped)."""
    for run in runs:
        prefix = f"{MIGRATION_ID}/reports/{run['dag_id']}/{run['run_id']}/"
        for key in store.list_keys(prefix):
            store.download(key, out / "reports" / run["dag_id"] / key.removeprefix(prefix))


BUCKET_SNAPSHOT = "bucket"
"""``<out>/bucket/``: what the control room reads of the demo's S3 bucket (``state/`` and ``reports/``),
for ``make airflow`` to load back into its fresh S3 endpoint (which keeps nothing once stopped)."""


def save_bucket(store: ArtifactStore, out: Path, migration_id: str = MIGRATION_ID) -> int:
    """Copy the migration's ``state/`` and ``reports/`` objects to ``out/bucket/<key>``; how many."""
    target = out / BUCKET_SNAPSHOT
    shutil.rmtree(target, ignore_errors=True)
    keys = [k for prefix in ("state/", "reports/") for k in store.list_keys(f"{migration_id}/{prefix}")]
    for key in keys:
        store.download(key, target / key)
    return len(keys)


def restore_bucket(stack: EmbeddedStack, out: Path) -> int:
    """Load a demo's saved objects (``save_bucket``) into the stack's bucket; how many (0: none saved)."""
    saved = out / BUCKET_SNAPSHOT
    files = sorted(p for p in saved.rglob("*") if p.is_file()) if saved.is_dir() else []
    client = stack.s3_client()
    for path in files:
        client.upload_file(str(path), BUCKET, path.relative_to(saved).as_posix())
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny", choices=["tiny", "small", "bnu"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "demo-output")
    parser.add_argument("--data", type=Path, default=PROJECT_ROOT / "demo-data")
    parser.add_argument(
        "--autoextract",
        action="store_true",
        help="deliver through Ex Libris' AutoExtract steps over SSH, against a local STAND-IN "
        "for the Aleph server and for AutoExtract (delivery mode autoextract)",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stands_in:
        extra_env: dict[str, str] = {}
        if args.autoextract:
            extra_env = _autoextract_stand_in(stands_in, args.data)
        return _demo(args, extra_env)


def _autoextract_stand_in(stands_in: contextlib.ExitStack, data: Path) -> dict[str, str]:
    from aleph2alma_dev.demo.autoextract_demo import config_for, stack_env
    from aleph2alma_dev.ssh_standin import AlephShellStandin

    server = stands_in.enter_context(AlephShellStandin(data / "aleph-server-standin"))
    print(f"Aleph server STAND-IN (SSH) on 127.0.0.1:{server.port}, AutoExtract STAND-IN in {server.root}")
    return stack_env(server, config_for(server, data / "config", MIGRATION_ID))


def _demo(args: argparse.Namespace, extra_env: dict[str, str]) -> int:

    from aleph2alma_dev.demo.generator import generate

    print(f"Generating the demo Aleph library ({args.scale}, seed {args.seed}) in {args.data} …")
    generated = generate(args.data, scale=args.scale, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "delivery", ignore_errors=True)  # this demo's deliveries only
    runs: list[dict[str, Any]] = []
    config_root = Path(extra_env.get("ALEPH2ALMA_CONFIG_ROOT") or _config_copy(args.data / "config"))
    print("Starting the embedded stack (S3 endpoint + Airflow standalone) …")
    stack = stack_for(args.data)
    stack.extra_env.update({"ALEPH2ALMA_CONFIG_ROOT": str(config_root), **extra_env})
    with stack:
        client, store = stack.airflow_client(), stack.artifact_store()
        on_gate = exlibris_gate(client, store, stack, args.out)
        client.ensure_pool(ALMA_POOL, ALMA_POOL_SLOTS, ALMA_POOL_DESCRIPTION)
        print("Running migration_test_load (extract → transform → package → deliver → gate → reconcile) …")
        # Patron expiry is judged as of the day the demo library was generated for.
        conf = {"migration_id": MIGRATION_ID, "as_of": generated["as_of"], "api_load": True}
        test_load = run_dag(client, store, "migration_test_load", conf, on_gate=on_gate)
        test_load_run = RunRef(TEST_LOAD_DAG, test_load["run_id"])
        for step in PHASE_CHILDREN:
            child = test_load_run.child(step)
            runs.append(run_summary(client, store, child.dag_id, child.run_id))
        runs.append(test_load)
        if test_load["state"] == "success":
            print("Running migration_fix_cycle iteration 1 (fix rules → transform → diff → sign-off) …")
            conf = {
                "migration_id": MIGRATION_ID,
                "iteration": 1,
                "as_of": generated["as_of"],
                "extract_run_id": test_load_run.child(ChildStep.EXTRACT).run_id,
                "previous_transform_run_id": test_load_run.child(ChildStep.TRANSFORM).run_id,
            }
            fix_cycle = run_dag(client, store, "migration_fix_cycle", conf, on_gate=on_gate)
            transform = RunRef(FIX_CYCLE_DAG, fix_cycle["run_id"]).child(ChildStep.TRANSFORM)
            runs.append(run_summary(client, store, transform.dag_id, transform.run_id))
            runs.append(fix_cycle)
        final = test_load_run
        if runs[-1]["state"] == "success" and runs[-1]["dag_id"] == FIX_CYCLE_DAG:
            runs += cutover(client, store, on_gate, config_root, generated)
            if runs[-1]["state"] == "success":
                final = RunRef(CUTOVER_DAG, runs[-1]["run_id"])
        if test_load["state"] == "success":
            runs.append(post_go_live(client, store, on_gate, final, args.scale, args.seed, generated))
        go_live = state.go_live(store, MIGRATION_ID)
        save_reports(store, runs, args.out)
        saved = save_bucket(store, args.out)
    summary = {
        "migration_id": MIGRATION_ID,
        "generated": {k: generated[k] for k in ("scale", "seed", "counts") if k in generated},
        "runs": runs,
        "go_live": go_live,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print_table(runs)
    print(
        f"\nSummary written to {args.out / 'summary.json'}; reports copied to {args.out / 'reports'}/; "
        f"the packages 'Ex Libris' loaded to {args.out / 'delivery'}/"
    )
    last = runs[-1]
    status = args.out / "reports" / last["dag_id"] / "status" / "status.en.html"
    print(
        f"Status report for the project lead: {status} (and .zh.html, .png)\n"
        f"The control room: `make airflow` loads the {saved} objects kept in {args.out / BUCKET_SNAPSHOT}/ "
        "back into S3; then open Airflow's UI → Migration control room"
    )
    return 0 if all(r["state"] == "success" for r in runs) else 1
