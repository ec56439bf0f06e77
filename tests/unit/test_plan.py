"""The migration plan (plan.yaml): validation naming the bad key, gate owners, actuals, the status
view and its report."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from aleph2alma.plan import actuals, catalog
from aleph2alma.plan.actuals import NodeActual, RunEnded
from aleph2alma.plan.catalog import GATES, KeyNode
from aleph2alma.plan.gate_owners import gate_brief, record_answered, record_opened
from aleph2alma.plan.model import PlanError, load_plan, parse_plan, plan_path
from aleph2alma.plan.report import phase_run_ended, render
from aleph2alma.plan.status import OpenGate, RunInfo, build
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.storage_local import LocalObjectClient

DEMO_PLAN = plan_path("demo")


def demo_data() -> dict[str, Any]:
    return yaml.safe_load(DEMO_PLAN.read_text(encoding="utf-8"))


def parse(data: dict[str, Any]) -> Any:
    return parse_plan(yaml.safe_dump(data, allow_unicode=True), "demo", "plan.yaml")


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(LocalObjectClient(tmp_path / "s3"), "artifacts")


def test_the_demo_plan_loads_and_assigns_every_gate() -> None:
    plan = load_plan("demo")
    assert plan is not None
    for gate in GATES:
        assert plan.gate_assignees(gate.dag_id, gate.task_id), gate.gate_id


def test_a_migration_without_a_plan_has_none(tmp_path: Path) -> None:
    assert load_plan("demo", root=tmp_path) is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["phases"].pop("cutover"), "plan.yaml: phases.cutover: required key missing"),
        (lambda d: d["key_nodes"].pop("go_live"), "plan.yaml: key_nodes.go_live: required key missing"),
        (lambda d: d["key_nodes"].update(go_live_party="2027-01-09"), "key_nodes.go_live_party"),
        (lambda d: d.update(deadline="2027-01-01"), "plan.yaml: deadline: unknown key"),
        (lambda d: d["phases"]["test_load"].update(end="2026-01-01"), "phases.test_load: "),
        (lambda d: d["key_nodes"].update(go_live="next spring"), "plan.yaml: key_nodes.go_live: "),
        (
            lambda d: d["gates"].update({"migration_cutover.go_no_go": "lead"}),
            "plan.yaml: gates.migration_cutover.go_no_go: unknown role 'lead'",
        ),
        (
            lambda d: d["gates"].pop("migration_fix_cycle.sign_off"),
            "plan.yaml: gates.migration_fix_cycle.sign_off: required key missing",
        ),
        (lambda d: d["gates"].update({"migration_cutover.party": "project_lead"}), "not an approval gate"),
        (lambda d: d["roles"]["circulation"].update(users=[]), "roles.circulation.users"),
        (lambda d: d["roles"]["circulation"]["users"][0].pop("id"), "roles.circulation.users[1].id"),
        (lambda d: d.update(timezone="Beijing"), "plan.yaml: timezone: unknown time zone 'Beijing'"),
        (lambda d: d.update(migration="bnu"), "plan.yaml: migration: 'bnu' is not this folder's"),
        (lambda d: d["data_owners"].update(serials="cataloguing"), "data_owners.serials: not an entity"),
        (lambda d: d.update(escalation_roles=["dean"]), "escalation_roles: unknown role 'dean'"),
    ],
)
def test_a_malformed_plan_names_the_bad_key(change: Any, named: str) -> None:
    data = demo_data()
    change(data)
    with pytest.raises(PlanError) as raised:
        parse(data)
    assert named in str(raised.value), str(raised.value)


def test_a_plan_that_is_not_yaml_says_where() -> None:
    with pytest.raises(PlanError, match=r"plan.yaml: not valid YAML \(line 2, column 9\)"):
        parse_plan("migration: demo\nphases: : x\n", "demo")


def test_gate_assignment_follows_the_plan() -> None:
    plan = parse(demo_data())
    by_gate = {g.gate_id: [u.id for u in plan.gate_assignees(g.dag_id, g.task_id)] for g in GATES}
    assert by_gate["migration_cutover.fulfillment_freeze"] == ["chen.jing", "admin"]
    assert by_gate["migration_fix_cycle.sign_off"] == ["wang.fang", "admin"]
    assert by_gate["migration_cutover.go_no_go"] == ["admin"]  # the lead's own gate: once
    data = demo_data()
    data["escalation_roles"] = []
    alone = parse(data)
    assert [u.id for u in alone.gate_assignees("migration_cutover", "fulfillment_freeze")] == ["chen.jing"]
    assert alone.gate_assignees("alert_probe", "sign_off") == []  # not a catalogued gate


def test_the_gate_body_names_its_key_node_planned_day_and_owners() -> None:
    plan = parse(demo_data())
    gate = catalog.gate_spec("migration_cutover", "fulfillment_freeze")
    assert gate is not None
    brief = gate_brief(plan, gate)
    assert "Fulfillment freeze / 流通冻结" in brief
    assert "2027-01-04" in brief
    assert "Circulation / 流通" in brief and "陈静 Chen Jing" in brief


def test_a_gate_records_what_its_opening_reaches_and_its_answer(store: ArtifactStore) -> None:
    gate = catalog.gate_spec("migration_test_load", "test_environment_loaded")
    assert gate is not None
    opened = datetime(2026, 5, 8, 2, 0, tzinfo=UTC)
    record_opened(store, "demo", gate, "run1", opened)
    answer = {
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": "li.na", "name": "李娜 Li Na"},
        "responded_at": "2026-06-20T01:30:00+00:00",
    }
    record_answered(store, "demo", gate, "run1", answer)
    found = {a.node: a for a in actuals.node_actuals(store, "demo")}
    assert found["test_load_delivered"].at == opened and found["migration_form_due"].outcome == "reached"
    received = found["test_environment_received"]
    assert (received.at, received.by_id, received.outcome) == (
        datetime(2026, 6, 20, 1, 30, tzinfo=UTC),
        "li.na",
        "approved",
    )


def test_a_rejected_gate_is_recorded_but_reaches_nothing(store: ArtifactStore) -> None:
    gate = catalog.gate_spec("migration_fix_cycle", "sign_off")
    assert gate is not None
    answer = {"chosen_options": ["Reject"], "responded_by_user": {"id": "wang.fang"}, "responded_at": None}
    record_answered(store, "demo", gate, "it1", answer)
    recorded = actuals.node_actuals(store, "demo")
    assert [a.outcome for a in recorded] == ["rejected"]
    assert actuals.reached_at(recorded, KeyNode.FIX_CYCLE_SIGN_OFF) is None


def test_go_no_go_is_recorded_by_the_decision_not_the_gate(store: ArtifactStore) -> None:
    gate = catalog.gate_spec("migration_cutover", "go_no_go")
    assert gate is not None
    assert record_answered(store, "demo", gate, "c1", {"chosen_options": ["Approve"]}) is None


def test_the_latest_sign_off_counts_the_first_delivery_counts() -> None:
    def at(day: int, node: str, run: str) -> NodeActual:
        return NodeActual(node, datetime(2026, 9, day, tzinfo=UTC), "approved", "d", run, "t")

    events = [at(1, "fix_cycle_sign_off", "a"), at(9, "fix_cycle_sign_off", "b"), at(2, "go_live", "c")]
    events += [at(3, "go_live", "d")]
    assert actuals.reached_at(events, "fix_cycle_sign_off").run_id == "b"  # type: ignore[union-attr]
    assert actuals.reached_at(events, "go_live").run_id == "c"  # type: ignore[union-attr]


def _room_data(store: ArtifactStore) -> None:
    """A test load reconciled, two fix-cycle iterations, and their runs recorded as ended."""
    put = store.put_bytes
    tl = RunScope("demo", "migration_test_load", "tl1")
    entities = {
        "bibs": {"source": 100, "delivered": 98, "rejected": 2, "in_alma": 98},
        "items": {"source": 300, "delivered": 299, "rejected": 1, "in_alma": 297},
    }
    put(tl.report_prefix() + "run_summary.json", _json({"reconciliation": {"entities": entities}}))
    tl_transform = RunScope("demo", "migration_transform", "tl1__transform")
    tl_rules = {"missing_title": {"severity": "FIX", "count": 55}}
    put(tl_transform.report_prefix() + "validation/report.json", _json({"rules": tl_rules}))
    for i, (run, missing, fixed) in enumerate((("fc1", 40, 0), ("fc2", 12, 28)), start=1):
        transform = RunScope("demo", "migration_transform", f"{run}__transform")
        rules = {
            "missing_title": {"severity": "FIX", "count": missing},
            "note": {"severity": "INFO", "count": 5},
        }
        put(transform.report_prefix() + "validation/report.json", _json({"rules": rules}))
        diff = {"rules": {"missing_title": {"entity": "bibs", "fixed": fixed}}}
        put(
            RunScope("demo", "migration_fix_cycle", run).report_prefix() + "iteration_diff/diff.json",
            _json(diff),
        )
        started = datetime(2026, 7, i, 1, tzinfo=UTC)
        actuals.record_run_end(
            store, "demo", RunEnded("migration_fix_cycle", run, started, started, "success", {"iteration": i})
        )
    started = datetime(2026, 6, 1, 1, tzinfo=UTC)
    actuals.record_run_end(store, "demo", RunEnded("migration_test_load", "tl1", started, started, "success"))
    answer = {
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": "li.na"},
        "responded_at": "2026-06-22T02:00:00+00:00",
    }
    gate = catalog.gate_spec("migration_test_load", "test_environment_loaded")
    assert gate is not None
    record_answered(store, "demo", gate, "tl1", answer)


def _json(body: Any) -> bytes:
    import json

    return json.dumps(body).encode("utf-8")


def test_the_status_view_puts_the_plan_against_what_the_runs_recorded(store: ArtifactStore) -> None:
    _room_data(store)
    plan = parse(demo_data())
    room = build(store, "demo", plan, date(2026, 10, 10))
    phases = {p.key: p for p in room.phases}
    assert phases["test_load"].actual_start == date(2026, 6, 1)
    assert phases["test_load"].actual_end == date(2026, 6, 22)  # Shanghai's day of 02:00 UTC
    assert phases["test_load"].slip_days == -4  # planned end 2026-06-26
    assert phases["fix_cycles"].status == "in_progress" and phases["fix_cycles"].slip_days == 10
    nodes = {n.key: n for n in room.nodes}
    assert (
        nodes["test_environment_received"].status == "late"
        and nodes["test_environment_received"].slip_days == 3
    )
    assert nodes["fix_cycle_sign_off"].status == "overdue" and nodes["fix_cycle_sign_off"].slip_days == 15
    assert nodes["go_live"].status == "open"
    assert [(c.entity, c.source, c.delivered, c.rejected, c.in_alma) for c in room.counts] == [
        ("bibs", 100, 98, 2, 98),
        ("items", 300, 299, 1, 297),
    ]
    assert room.fix_trend.iterations == ["0", "1", "2"]  # 0: the test load the fix cycles start from
    assert room.fix_trend.rules == {"missing_title": ("FIX", [55, 40, 12])}  # INFO rules left out
    effort = {e.role: (e.gates_answered, e.issues_fixed) for e in room.effort}
    assert effort["systems_librarian"] == (1, 0) and effort["cataloguing"] == (0, 28)


class FakeAirflow:
    def latest_runs(self, dag_id: str, limit: int) -> list[RunInfo]:
        if dag_id == "migration_cutover":
            return [RunInfo(dag_id, "c1", "running", datetime(2026, 10, 9, tzinfo=UTC))]
        if dag_id == "aleph_nightly_delta":
            return [RunInfo(dag_id, "n1", "failed", datetime(2026, 10, 9, tzinfo=UTC))]
        return []

    def open_gates(self) -> list[OpenGate]:
        return [OpenGate("migration_cutover", "c1", "technical_services_freeze", "TS?", ("王芳",), None)]


def test_the_page_shows_live_runs_and_open_gates_with_their_role(store: ArtifactStore) -> None:
    from aleph2alma.plan.report import PageLinks

    _room_data(store)
    plan = parse(demo_data())
    room = build(store, "demo", plan, date(2026, 10, 10), FakeAirflow())
    assert room.live and room.open_gates[0].role == "cataloguing"
    assert [r.run_id for r in room.night_failures] == ["n1"]
    assert {p.key: p.status for p in room.phases}["cutover"] == "in_progress"
    links = PageLinks(
        url=lambda **kw: "?" + "&".join(f"{k}={v}" for k, v in kw.items()),
        run_url=lambda r: f"/dags/{r.dag_id}/runs/{r.run_id}",
        gate_url=lambda g: f"/dags/{g.dag_id}/runs/{g.run_id}/tasks/{g.task_id}/required_actions",
        migrations=["demo"],
    )
    zh = render(room, "zh", plan, links)
    assert "迁移控制台" in zh and "技术服务冻结已生效？" in zh and "编目" in zh
    assert "/tasks/technical_services_freeze/required_actions" in zh
    en = render(room, "en", plan, links)
    assert "Migration control room" in en and "<svg" in en and "Technical-services freeze in effect?" in en
    assert 'id="slipped"' in en and "Test environment received (+3)" in en


def test_a_phase_run_leaves_its_end_and_a_status_report(store: ArtifactStore) -> None:
    _room_data(store)
    scope = RunScope("demo", "migration_fix_cycle", "fc3")
    started, ended = datetime(2026, 10, 1, 1, tzinfo=UTC), datetime(2026, 10, 1, 3, tzinfo=UTC)
    written = phase_run_ended(store, scope, started, ended, {"iteration": 3})
    assert [r.run_id for r in actuals.runs_ended(store, "demo")][-1] == "fc3"
    html = store.get_bytes(
        store.key_of(written["status.en.html"])
        if hasattr(store, "key_of")
        else scope.report_prefix() + "status/status.en.html"
    ).decode("utf-8")
    assert "Migration status" in html and "migration_fix_cycle/fc3" in html and "<script" not in html
    png = store.get_bytes(scope.report_prefix() + "status/status.en.png")
    assert png.startswith(b"\x89PNG")
    assert "迁移状态报告" in store.get_bytes(scope.report_prefix() + "status/status.zh.html").decode("utf-8")


def test_the_plugin_links_the_page_the_app_serves() -> None:
    import importlib.util

    from aleph2alma.plan.web import PAGE_PATH

    path = Path(__file__).resolve().parents[2] / "plugins" / "aleph2alma_control_room.py"
    spec = importlib.util.spec_from_file_location("aleph2alma_control_room", path)
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    assert plugin.PAGE_PATH == PAGE_PATH
    view = plugin.ControlRoomPlugin.external_views[0]
    assert view["href"] == f"aleph2alma/{PAGE_PATH}" and not view["href"].startswith("/")


def test_a_page_that_cannot_be_built_says_why_in_one_line() -> None:
    from aleph2alma.plan.web import error_page

    shown = error_page(PlanError("plan.yaml: gates.migration_cutover.go_no_go: unknown role 'lead'"))
    assert "configuration has a problem" in shown and "unknown role &#x27;lead&#x27;" in shown
    assert "Traceback" not in shown


def test_a_gate_reminder_goes_to_the_plan_users_with_their_e_mail() -> None:
    from types import SimpleNamespace

    from aleph2alma.alerts import AlertSettings
    from aleph2alma.notify import gate_assignees

    plan = parse(demo_data())
    ti = SimpleNamespace(dag_id="migration_cutover", task_id="fulfillment_freeze")
    planned = plan.gate_assignees(ti.dag_id, ti.task_id)
    reminded = gate_assignees(None, AlertSettings(), ti, planned)
    assert [(a.id, a.address()) for a in reminded] == [
        ("chen.jing", "chen.jing@library.example"),
        ("admin", ""),
    ]
    # assigned by id alone (as a resumed gate's task knows them): the plan gives the address
    by_id = gate_assignees([{"id": "chen.jing", "name": "chen.jing"}], AlertSettings(), ti, planned)
    assert by_id[0].address() == "chen.jing@library.example"
