"""Every DAG imports fast and cleanly, every task retries, and every task has a timeout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
ALLOWED_TAGS = {"aleph2alma", "extraction", "test-load", "fix-cycle", "cutover", "post-go-live", "delta"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_DIR))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAGs found"


HEAVY = ("pandas", "pyarrow", "pymarc", "numpy", "boto3", "sqlalchemy", "openpyxl", "paramiko", "asyncssh")


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_nothing_heavy_at_parse_time(dag_file: Path) -> None:
    # A fresh interpreter that has imported what the DAG processor has (the DagBag and the SDK):
    # whatever the DAG file adds to that is its own parse-time cost, counted in modules, not seconds.
    code = (
        "import sys, runpy, airflow.sdk, airflow.dag_processing.dagbag\n"
        "before = set(sys.modules)\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=DAGS_DIR.parent
    )
    assert out.returncode == 0, out.stderr[-2000:]
    added = out.stdout.strip().splitlines()[-1].split()
    heavy = sorted({m.split(".")[0] for m in added} & set(HEAVY))
    assert heavy == [], f"{dag_file.name} imports {heavy} at parse time: import them inside the tasks"


def test_phase_steps_wait_deferred_and_fail_fast_on_a_failed_child(dagbag) -> None:
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
    from airflow.sdk import RetryAction
    from airflow.sdk.exceptions import AirflowException

    steps = [t for dag in dagbag.dags.values() for t in dag.tasks if isinstance(t, TriggerDagRunOperator)]
    assert steps, "no DAG runs another phase"
    for step in steps:
        assert step.deferrable and step.wait_for_completion and step.reset_dag_run, step.task_id
        decision = step.retry_policy.evaluate(AirflowException("migration_transform failed"), 1, 3)
        assert decision.action is RetryAction.FAIL, step.task_id
        assert step.retry_policy.evaluate(ConnectionError("api down"), 1, 3).action is RetryAction.DEFAULT


def test_every_task_fails_at_once_on_a_permanent_error(dagbag) -> None:
    from airflow.sdk import RetryAction

    from aleph2alma.errors import ConfigError, PermanentError

    for dag in dagbag.dags.values():
        for t in dag.tasks:
            policy = t.retry_policy
            assert policy is not None, f"{dag.dag_id}.{t.task_id} has no retry policy"
            for error in (ConfigError("bad key in migration.toml"), PermanentError("delivery mismatch")):
                assert policy.evaluate(error, 1, 3).action is RetryAction.FAIL, f"{dag.dag_id}.{t.task_id}"
            assert policy.evaluate(ConnectionError("S3 reset"), 1, 3).action is RetryAction.DEFAULT


def test_every_task_has_an_execution_timeout(dagbag) -> None:
    from aleph2alma.dagkit import LONG_TASK_TIMEOUT, TASK_TIMEOUT

    tasks = {f"{dag.dag_id}.{t.task_id}": t for dag in dagbag.dags.values() for t in dag.tasks}
    assert [name for name, t in tasks.items() if not t.execution_timeout] == []
    assert {t.execution_timeout for t in tasks.values()} == {TASK_TIMEOUT, LONG_TASK_TIMEOUT}
    long = sorted(name for name, t in tasks.items() if t.execution_timeout == LONG_TASK_TIMEOUT)
    assert long == [
        "aleph_nightly_delta.diff_source",
        "migration_cutover.api_load",
        "migration_cutover.autoextract.extract",
        "migration_cutover.autoextract.generate_form",
        "migration_cutover.autoextract.package",
        "migration_cutover.autoextract.transfer",
        "migration_cutover.autoextract.validate_p2e",
        "migration_cutover.changes_since_baseline",
        "migration_cutover.deliver_fulfillment",
        "migration_cutover.deliver_inventory",
        "migration_cutover.fix_extract",
        "migration_cutover.fix_inventory",
        "migration_cutover.freeze_violations",
        "migration_cutover.package_fulfillment",
        "migration_cutover.package_inventory",
        "migration_extract.extract_part",
        "migration_fix_cycle.apply_fixes",
        "migration_post_go_live.archive",
        "migration_post_go_live.offline_circulation",
        "migration_post_go_live.worklists",
        "migration_test_load.api_load",
        "migration_test_load.autoextract.extract",
        "migration_test_load.autoextract.generate_form",
        "migration_test_load.autoextract.package",
        "migration_test_load.autoextract.transfer",
        "migration_test_load.autoextract.validate_p2e",
        "migration_test_load.deliver",
        "migration_test_load.package",
        "migration_transform.bibs.transform",
        "migration_transform.bibs_with_items.embed_items",
        "migration_transform.fulfillment.transform",
        "migration_transform.holdings.transform",
        "migration_transform.items.transform",
        "migration_transform.p2e",
        "migration_transform.patrons.transform",
        "migration_transform.validation.cross_record_rules",
        "migration_transform.validation.report",
    ]


def test_approval_gates_keep_their_execution_timeout_apart_from_the_response_wait(dagbag) -> None:
    """HITLOperator turns an execution_timeout given without a response_timeout into the response
    wait and clears it; a gate keeps it for ``execute`` (its reminder delay is set when it opens)."""
    from aleph2alma.dagkit import TASK_TIMEOUT
    from aleph2alma.gates import ApprovalGate

    gates = [t for dag in dagbag.dags.values() for t in dag.tasks if isinstance(t, ApprovalGate)]
    assert {g.task_id for g in gates} == {
        "test_environment_loaded",
        "sign_off",
        "decommission",
        "technical_services_freeze",
        "cutover_environment_accepted",
        "fulfillment_freeze",
        "go_no_go",
    }
    for gate in gates:
        assert (gate.execution_timeout, gate.response_timeout) == (TASK_TIMEOUT, None), gate.task_id


def test_task_timeouts_are_configurable_where_dags_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from aleph2alma.dagkit import task_timeout
    from aleph2alma.errors import ConfigError

    assert task_timeout("LONG_TASK", 720) == timedelta(hours=12)
    monkeypatch.setenv("ALEPH2ALMA_LONG_TASK_TIMEOUT_MINUTES", "2880")
    assert task_timeout("LONG_TASK", 720) == timedelta(days=2)
    for bad in ("0", "2h", "-5"):
        monkeypatch.setenv("ALEPH2ALMA_LONG_TASK_TIMEOUT_MINUTES", bad)
        with pytest.raises(
            ConfigError, match=f"ALEPH2ALMA_LONG_TASK_TIMEOUT_MINUTES='{bad}' must be a positive"
        ):
            task_timeout("LONG_TASK", 720)


def test_trigger_forms_reject_a_malformed_as_of_date(dagbag) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    forms = [dag.params.get_param("as_of") for dag in dagbag.dags.values() if "as_of" in dag.params]
    assert forms
    for param in forms:
        assert param.resolve("") == "" and param.resolve("2026-01-31") == "2026-01-31"
        with pytest.raises(ParamValidationError, match="does not match"):
            param.resolve("31/01/2026")


class _FakeTI:
    """What the gate bodies pull from XCom: the typed values the upstream tasks return."""

    @staticmethod
    def xcom_pull(task_ids: str):
        from aleph2alma.delivery.package import PackageResult
        from aleph2alma.delivery.transfer import Delivered
        from aleph2alma.refs import IterationDiff
        from aleph2alma.runs import TRANSFORM_DAG, RunRef

        return {
            "package": PackageResult(
                "demo/delivery/p.zip",
                "s3://b/demo/delivery/p.zip",
                123456,
                "ab" * 32,
                [{"name": "bibs_BNU01.mrc", "records": 1500}, {"name": "MANIFEST.json", "records": 0}],
            ),
            "deliver": [
                Delivered("sftp://exl_mft/incoming", "incoming/p.zip", 123456, "ab" * 32, True, "reread")
            ],
            "diff": IterationDiff(
                previous=RunRef(TRANSFORM_DAG, "t1"),
                report_html="s3://b/r/diff.html",
                totals={"fixed": 4, "new": 0, "still_open": 35},
            ),
        }[task_ids]


@pytest.mark.parametrize(
    ("dag_id", "gate", "expected"),
    [
        (
            "migration_test_load",
            "test_environment_loaded",
            [
                "s3://b/demo/delivery/p.zip",
                "123,456 bytes",
                "| `bibs_BNU01.mrc` | 1,500 |",
                "sftp://exl_mft/incoming",
            ],
        ),
        (
            "migration_fix_cycle",
            "sign_off",
            ["`t1`: 4 issues fixed, 0 new", "35 still open", "s3://b/r/diff.html"],
        ),
    ],
)
def test_gate_bodies_show_what_the_operator_decides_on(
    dagbag, dag_id: str, gate: str, expected: list[str]
) -> None:
    dag = dagbag.dags[dag_id]
    body = dag.get_template_env().from_string(dag.get_task(gate).body).render(ti=_FakeTI(), params={})
    for text in expected:
        assert text in body, body
    assert "MANIFEST.json" not in body


@pytest.mark.parametrize("api_load", [True, False])
def test_the_loaded_gate_says_api_loans_get_todays_loan_date(dagbag, api_load: bool) -> None:
    dag = dagbag.dags["migration_test_load"]
    template = dag.get_template_env().from_string(dag.get_task("test_environment_loaded").body)
    body = template.render(ti=_FakeTI(), params={"api_load": api_load})
    assert ("today's date as its\nloan date" in body) is api_load, body


class _AutoExtractTI(_FakeTI):
    """A run in delivery mode autoextract: deliver skipped, AutoExtract's steps staged."""

    @staticmethod
    def xcom_pull(task_ids: str):
        if task_ids == "deliver":
            return None
        if task_ids.startswith("autoextract."):
            step = task_ids.split(".", 1)[1]
            if step == "validate_p2e":
                return None  # a step the site does not run: skipped
            return {
                "step": step,
                "exit_status": 0,
                "outputs": [{"path": f"{step}/out.txt", "bytes": 2048, "sha256": "cd" * 32}],
            }
        return _FakeTI.xcom_pull(task_ids)


def test_the_loaded_gate_names_what_autoextract_produced_when_it_delivered(dagbag) -> None:
    dag = dagbag.dags["migration_test_load"]
    body = dag.get_template_env().from_string(dag.get_task("test_environment_loaded").body)
    text = body.render(ti=_AutoExtractTI(), params={})
    assert "Delivered by Ex Libris' AutoExtract" in text, text
    assert "**extract**: exit 0; `extract/out.txt` (2,048 bytes)" in text, text
    assert "validate_p2e" not in text and "sftp://exl_mft" not in text, text
    assert "not delivered; validation and reconciliation read it): `s3://b/demo/delivery/p.zip`" in text


def test_autoextract_steps_run_in_order_between_the_package_and_the_gate(dagbag) -> None:
    from aleph2alma.settings import AUTOEXTRACT_STEPS

    dag = dagbag.dags["migration_test_load"]
    chain = [dag.get_task(f"autoextract.{step}") for step in AUTOEXTRACT_STEPS]
    assert chain[0].upstream_task_ids == {"package"}
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.upstream_task_ids == {before.task_id}
    assert all(t.trigger_rule == "none_failed" and t.retries > 0 for t in chain)
    gate = dag.get_task("test_environment_loaded")
    assert gate.upstream_task_ids == {"deliver", chain[-1].task_id}
    assert gate.trigger_rule == "none_failed"


class _PostGoLiveTI:
    @staticmethod
    def xcom_pull(task_ids: str):
        from aleph2alma.refs import Reconciliation

        return {
            "final_reconciliation": Reconciliation(
                report_html="s3://b/r/reconciliation.html", all_accounted=True, totals={}, entities={}
            ),
            "worklists": {
                "counts": {"test_patrons": 3, "items_without_barcode": 7},
                "workbook": "s3://b/w.xlsx",
            },
            "archive": {
                "label": "final-r1",
                "objects": 42,
                "bytes": 1234567,
                "storage_class": "STANDARD_IA",
                "retain_until": "2036-11-01",
            },
            "offline_circulation": None,
        }[task_ids]


def test_the_decommission_gate_shows_what_is_being_signed_off(dagbag) -> None:
    dag = dagbag.dags["migration_post_go_live"]
    body = dag.get_template_env().from_string(dag.get_task("decommission").body).render(ti=_PostGoLiveTI())
    for text in (
        "every record accounted for\n— `s3://b/r/reconciliation.html`",
        "test_patrons 3, items_without_barcode 7",
        "`final-r1`: 42 objects (1,234,567 bytes),\nSTANDARD_IA, kept until 2036-11-01",
        "no files in this run",
    ):
        assert text in body, body


def test_every_approval_gate_is_catalogued_and_the_demo_plan_assigns_it(dagbag) -> None:
    """A new gate cannot go unowned: it must be in aleph2alma.plan.catalog (its key node) and a plan
    must name the role that answers it (plan.yaml validation requires every catalogued gate)."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    from aleph2alma.plan.catalog import gate_ids
    from aleph2alma.plan.model import load_plan

    gates = sorted(
        f"{d.dag_id}.{t.task_id}"
        for d in dagbag.dags.values()
        for t in d.tasks
        if isinstance(t, HITLOperator)
    )
    assert gates == sorted(gate_ids())
    plan = load_plan("demo")
    assert plan is not None
    for gate in gates:
        dag_id, task_id = gate.split(".")
        assert plan.gate_assignees(dag_id, task_id), f"{gate}: no users assigned"
