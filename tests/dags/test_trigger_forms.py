"""Every trigger form and every approval gate opens ready to submit, and still validates what is typed.

Airflow 3's UI (``isParamRequired``: a field is required when its schema has a ``type`` that does
not admit ``"null"``) disables the Trigger button, or a gate's Approve and Reject, while a required
field is null or "". Optional fields therefore admit null, and the form sends null for a field the
operator cleared: tasks must read those as "" or []. tests/e2e/test_ui_browser.py checks the same
in a real browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS_DIR))


def ui_required(schema: dict[str, Any]) -> bool:
    """The UI's rule (airflow/ui/src/components/FlexibleForm/isParamRequired.tsx, Airflow 3.3)."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def forms(dagbag) -> list[tuple[str, str, dict[str, dict[str, Any]]]]:
    """(dag id, form, {field: serialized param}) for every trigger form and every gate with fields."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    found = []
    for dag in dagbag.dags.values():
        fields = {name: dag.params.get_param(name).serialize() for name in dag.params}
        found.append((dag.dag_id, "trigger form", fields))
        for task in dag.tasks:
            if isinstance(task, HITLOperator):
                found.append((dag.dag_id, task.task_id, task.serialized_params))
    return found


def test_every_form_opens_with_nothing_required_left_empty(dagbag) -> None:
    checked = 0
    for dag_id, form, fields in forms(dagbag):
        for name, field in fields.items():
            checked += 1
            if ui_required(field["schema"]):
                assert field["value"] not in (None, ""), (
                    f"{dag_id} {form}: {name!r} is required in the UI (type {field['schema']['type']!r}) "
                    "and empty, so the form opens with its button disabled: admit null or give a default"
                )
    assert checked >= 15, checked


def test_the_gate_with_a_workbook_field_is_among_the_forms(dagbag) -> None:
    gates = {(dag_id, form): fields for dag_id, form, fields in forms(dagbag) if form != "trigger form"}
    workbook = gates[("migration_test_load", "test_environment_loaded")]["statistics_workbook_uri"]
    assert not ui_required(workbook["schema"]) and workbook["value"] == ""


def test_optional_fields_accept_what_the_form_sends_when_left_empty(dagbag) -> None:
    from airflow.sdk import Param

    optional = 0
    for dag_id, form, fields in forms(dagbag):
        for name, field in fields.items():
            if ui_required(field["schema"]):
                continue
            optional += 1
            param = Param(field["value"], **field["schema"])
            empty = [] if "array" in field["schema"]["type"] else ""
            for value in (None, empty):
                assert param.resolve(value) == value, f"{dag_id} {form}: {name} = {value!r}"
    assert optional >= 8, optional


def _param(dagbag, dag_id: str, name: str, gate: str | None = None):
    from airflow.sdk import Param

    if gate is None:
        return dagbag.dags[dag_id].params.get_param(name)
    field = dagbag.dags[dag_id].get_task(gate).serialized_params[name]
    return Param(field["value"], **field["schema"])


@pytest.mark.parametrize(
    ("dag_id", "name", "gate", "good", "bad"),
    [
        (
            "migration_transform",
            "as_of",
            None,
            ["2026-01-31", "2024-02-29"],
            ["31/01/2026", "2026-13-01", "2026-1-5"],
        ),
        ("migration_test_load", "as_of", None, ["2026-12-31"], ["2026-12-32", "tomorrow"]),
        ("migration_fix_cycle", "migration_id", None, ["bnu", "demo_2"], ["", "a b", "../etc"]),
        (
            "migration_extract",
            "alephseq_landing",
            None,
            ["file:///data/alephseq", "s3://b/p", "sftp://aleph/exports"],
            ["/data/alephseq", "http://host/x", "s3://"],
        ),
        ("migration_extract", "entities", None, [["bibs"], ["items", "patrons"]], [[], ["bibs", "bogus"]]),
        (
            "migration_test_load",
            "delivery_targets",
            None,
            [["sftp://exl_mft/incoming"], ["s3://b/p", "sftp://x/in"]],
            [["ftp://host/in"], ["s3:// b"]],
        ),
        (
            "migration_test_load",
            "statistics_workbook_uri",
            "test_environment_loaded",
            ["s3://bucket/exlibris/statistics.xlsx"],
            ["http://bucket/statistics.xlsx", "s3://bucket", "s3://bucket/", "statistics.xlsx"],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_what_the_form_validates(
    dagbag, dag_id: str, name: str, gate: str | None, good: list, bad: list
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    param = _param(dagbag, dag_id, name, gate)
    for value in good:
        assert param.resolve(value) == value
    for value in bad:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_child_runs_get_an_empty_as_of_not_none(dagbag) -> None:
    """A cleared as-of reaches the child transform as "" (Jinja renders None as "None")."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    transform_as_of = dagbag.dags["migration_transform"].params.get_param("as_of")
    steps = [
        (dag, t)
        for dag in dagbag.dags.values()
        for t in dag.tasks
        if isinstance(t, TriggerDagRunOperator) and "as_of" in (t.conf or {})
    ]
    assert {dag.dag_id for dag, _ in steps} >= {"migration_test_load", "migration_fix_cycle"}
    for dag, step in steps:
        template = dag.get_template_env().from_string(step.conf["as_of"])
        for given, expected in ((None, ""), ("", ""), ("2026-11-01", "2026-11-01")):
            rendered = template.render(params={"as_of": given})
            assert rendered == expected, f"{dag.dag_id}.{step.task_id}: as_of {given!r} → {rendered!r}"
            assert transform_as_of.resolve(rendered) == expected


def test_tasks_read_an_empty_field_as_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import date, datetime
    from types import SimpleNamespace

    from aleph2alma import dagkit

    given = {"landing": None, "run": "  ", "targets": None, "some": ["s3://b/p", "", " "], "as_of": None}
    monkeypatch.setattr(dagkit, "params", lambda: given)
    assert dagkit.text_param("landing") == "" and dagkit.text_param("run") == ""
    assert dagkit.list_param("targets") == [] and dagkit.list_param("some") == ["s3://b/p"]
    run = SimpleNamespace(logical_date=None, run_after=datetime(2026, 11, 2, 3, 4))
    assert dagkit._as_of({"params": given, "dag_run": run}) == date(2026, 11, 2)
    assert dagkit._as_of({"params": {"as_of": "2026-10-31"}, "dag_run": run}) == date(2026, 10, 31)
