"""The Airflow UI in a real browser: Debian's chromium driven by Playwright (nothing downloaded).

On the session's embedded stack: log in as the stack's admin, answer an approval gate on its
*Required actions* page (Approve enabled with the optional workbook URI left empty), then open
each DAG's trigger form, submit it with its defaults, and see the run start — in the page and
through the REST API (a run triggered by the UI, by admin, with the defaults as its conf).

Screenshots go to ``test-artifacts/ui-browser/`` (git-ignored; the path is printed). Other
e2e modules trigger runs on the same stack and every DAG allows one active run: a run started
here may queue behind theirs, so the test waits for states, never for fixed times, and stops the
runs it started once they have been seen running (each would otherwise run on, or wait at its
gate, holding its DAG's only slot).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aleph2alma_dev.airflow_api import GATE_SETTLE_SECONDS, AirflowApiError, AirflowClient
from aleph2alma_dev.devstack import ADMIN_USER, PROJECT_ROOT, EmbeddedStack

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As this machine's probe starts it: no sandbox (root), no GPU, and nothing that calls home
# (the network is closed: background requests would fail, many at a time).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = PROJECT_ROOT / "test-artifacts" / "ui-browser"
UI_TIMEOUT_MS = 60_000  # one page or dialog on a loaded 2-core machine
START_TIMEOUT = 900  # a run may queue behind another module's run of the same DAG
# Every DAG of the project (each file is named after its DAG), scheduled ones included.
FORMS = sorted(p.stem for p in (PROJECT_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
CHILD_DAGS = ("migration_extract", "migration_transform")
UNFINISHED_TI = {"queued", "scheduled", "running", "deferred", "up_for_retry", "restarting", "awaiting_input"}


def wait_until(what: str, check: Any, timeout: float, poll: float = 1.0) -> Any:
    """``check()``'s first truthy value, polled; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s (last: {value!r})")
        time.sleep(poll)


@pytest.fixture(scope="module")
def shots() -> Path:
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    print(f"\nbrowser screenshots: {SHOTS}")
    return SHOTS


@pytest.fixture(scope="module")
def page(airflow_stack: EmbeddedStack, shots: Path) -> Iterator[Any]:
    """A chromium page logged in to the stack's UI as its admin."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM}: `make browser` installs Debian's chromium (or set CHROMIUM)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        try:
            tab = context.new_page()
            tab.goto(f"{airflow_stack.api_url}/")
            tab.get_by_label("Username").fill(ADMIN_USER)
            tab.get_by_label("Password").fill(airflow_stack.admin_password())
            tab.screenshot(path=shots / "00_login.png")
            tab.get_by_role("button", name="Sign in").click()
            tab.wait_for_url(f"{airflow_stack.api_url}/")
            expect(tab.get_by_role("heading", name="Welcome")).to_be_visible()
            tab.screenshot(path=shots / "01_home.png")
            yield tab
        finally:
            context.close()


def stop_run(airflow: AirflowClient, dag_id: str, run_id: str) -> None:
    """Fail a run started here, and the child runs it started, until none of their tasks is active.

    Marking a run failed while the scheduler works on it can meet a row lock and answer 500
    (*Database error*, seen in CI on PostgreSQL): that attempt counts as not yet stopped and
    is made again at the next poll; the last refusal is named if the run never stops. A run
    marked failed can still hold a task Airflow left unfinished (in CI, a fix-cycle run kept one
    for 300 s): once its run is failed, such a task is marked failed itself, and the tasks still
    unfinished at the end are named."""
    runs = [(dag_id, run_id)]
    refused: list[str] = []
    unfinished: list[str] = []

    def patch(path: str, body: dict[str, str]) -> None:
        try:
            airflow._call("PATCH", path, json=body)
        except AirflowApiError as error:
            refused.append(str(error))

    def settled() -> bool:
        for child_dag in CHILD_DAGS:
            found = airflow._call("GET", f"/dags/{child_dag}/dagRuns", params={"limit": 100})["dag_runs"]
            for child in found:
                if (
                    child["dag_run_id"].startswith(f"{run_id}__")
                    and (child_dag, child["dag_run_id"]) not in runs
                ):
                    runs.append((child_dag, child["dag_run_id"]))
        unfinished.clear()
        for dag, run in runs:
            if airflow.run_state(dag, run) not in ("success", "failed"):
                patch(f"/dags/{dag}/dagRuns/{run}", {"state": "failed"})
                unfinished.append(f"run {dag} {run}")
                continue
            for ti in airflow.task_instances(dag, run):
                if ti["state"] in UNFINISHED_TI:
                    task = (
                        ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}/{ti['map_index']}"
                    )
                    unfinished.append(f"{dag} {run} {task} {ti['state']}")
                    patch(f"/dags/{dag}/dagRuns/{run}/taskInstances/{task}", {"new_state": "failed"})
        return not unfinished

    try:
        wait_until(f"{dag_id} {run_id} and its children stopped", settled, timeout=300, poll=2)
    except pytest.fail.Exception:
        pytest.fail(
            f"{dag_id} {run_id} not stopped; still unfinished: {unfinished}; "
            f"last refusal: {refused[-1] if refused else None}"
        )


@dataclass(frozen=True)
class Gate:
    """An approval gate of a session run, and what its page must show."""

    fixture: str  # the session fixture whose run asks the gate again
    dag_id: str
    task_id: str
    subject: str
    optional_field: str | None  # a form field that must not block Approve
    shown: str  # text of the gate's body, rendered on its page
    shot: str


GATES = [
    Gate(
        "test_load",
        "migration_test_load",
        "test_environment_loaded",
        "Test environment loaded?",
        "statistics_workbook_uri",
        "Delivered to",
        "1",
    ),
    Gate(
        "post_go_live",
        "migration_post_go_live",
        "decommission",
        "Aleph can be decommissioned?",
        None,
        "every record accounted for",
        "3",
    ),
    Gate(
        "cutover_go",
        "migration_cutover",
        "technical_services_freeze",
        "Technical-services freeze in effect?",
        None,
        "The time you approve is the freeze's start",
        "4",
    ),
    Gate(
        "cutover_go",
        "migration_cutover",
        "cutover_environment_accepted",
        "Cutover environment accepted?",
        "statistics_workbook_uri",
        "Inventory package",
        "5",
    ),
    Gate(
        "cutover_go",
        "migration_cutover",
        "fulfillment_freeze",
        "Fulfillment freeze in effect; offline circulation running?",
        None,
        "loaded through the Alma API",
        "6",
    ),
    Gate("cutover_go", "migration_cutover", "go_no_go", "Go live?", None, "Freeze windows", "7"),
]


@pytest.mark.parametrize("gate", GATES, ids=lambda g: g.task_id)
def test_an_approval_gate_is_answered_in_the_ui(
    page: Any,
    airflow: AirflowClient,
    airflow_stack: EmbeddedStack,
    request: pytest.FixtureRequest,
    gate: Gate,
    shots: Path,
) -> None:
    """A session run asks its gate again (the gate cleared alone: nothing upstream re-runs) and is
    approved on its Required actions page, any optional field left empty."""
    from playwright.sync_api import expect

    run = request.getfixturevalue(gate.fixture)
    dag_id, run_id, task_id = gate.dag_id, run["run_id"], gate.task_id
    assert run["state"] == "success", run.get("failed_tasks")
    airflow.clear(dag_id, run_id, [task_id])

    def waiting() -> bool:
        ti = next(t for t in airflow.task_instances(dag_id, run_id) if t["task_id"] == task_id)
        return (
            ti["state"] == "awaiting_input"
            and not airflow.hitl_details(dag_id, run_id, task_id)["response_received"]
        )

    wait_until("the cleared gate waiting for an answer", waiting, timeout=START_TIMEOUT)
    opened = time.monotonic()

    page.goto(f"{airflow_stack.api_url}/required_actions")
    row = page.get_by_role("row").filter(has_text=run_id)
    expect(row.get_by_text(gate.subject)).to_be_visible()
    page.screenshot(path=shots / f"{gate.shot}0_required_actions.png")
    row.get_by_role("link", name=gate.subject).click()

    page.wait_for_url(f"**/dags/{dag_id}/runs/**/tasks/{task_id}/required_actions")
    expect(page.get_by_text(gate.shown).first).to_be_visible()
    approve = page.get_by_role("button", name="Approve", exact=True)
    approve.scroll_into_view_if_needed()
    if gate.optional_field:
        expect(page.locator(f"#element_{gate.optional_field}")).to_have_value("")
    expect(approve).to_be_enabled()  # an optional field left empty does not block the answer
    expect(page.get_by_role("button", name="Reject", exact=True)).to_be_enabled()
    page.screenshot(path=shots / f"{gate.shot}1_gate_before.png")

    # Airflow 3.3 races an answer given within seconds of the gate opening against the executor's
    # report that the paused task exited (see airflow_api.GATE_SETTLE_SECONDS): a person is slower.
    wait_until("the gate settled", lambda: time.monotonic() - opened >= GATE_SETTLE_SECONDS, timeout=60)
    with page.expect_response(lambda r: r.request.method == "PATCH" and "hitlDetails" in r.url) as sent:
        approve.click()
    assert sent.value.status == 200, sent.value.text()
    expect(page.get_by_text(f"{task_id} response successful")).to_be_visible()
    page.screenshot(path=shots / f"{gate.shot}2_gate_answered.png")

    answer = airflow.hitl_details(dag_id, run_id, task_id)
    assert answer["response_received"] and answer["chosen_options"] == ["Approve"], answer
    assert answer["responded_by_user"]["name"] == ADMIN_USER
    if gate.optional_field:
        assert answer["params_input"].get(gate.optional_field) in ("", None), answer["params_input"]
    assert airflow.wait(dag_id, run_id, timeout=START_TIMEOUT) == "success"
    gate_ti = next(t for t in airflow.task_instances(dag_id, run_id) if t["task_id"] == task_id)
    assert gate_ti["state"] == "success", gate_ti
    page.reload()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    page.screenshot(path=shots / f"{gate.shot}3_gate_done.png")


def test_the_check_can_fail_an_empty_required_field_disables_trigger(
    page: Any, airflow_stack: EmbeddedStack, shots: Path
) -> None:
    """Control: the DAG's details as the UI got them before optional fields admitted null
    (``type: "string"``) make this Airflow's form mark the field required and disable Trigger."""
    from playwright.sync_api import expect

    def as_before(route: Any) -> None:
        response = route.fetch()
        details = response.json()
        details["params"]["alephseq_landing"]["schema"]["type"] = "string"
        route.fulfill(response=response, json=details)

    details_url = "**/api/v2/dags/migration_extract/details"
    page.route(details_url, as_before)
    try:
        page.goto(f"{airflow_stack.api_url}/dags/migration_extract")
        page.get_by_role("button", name="Trigger Dag").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("ALEPHSEQ landing location")).to_be_visible()
        expect(dialog.get_by_role("button", name="Trigger", exact=True)).to_be_disabled()
        page.screenshot(path=shots / "02_control_required_empty_field.png")
        page.keyboard.press("Escape")
    finally:
        page.unroute(details_url)


@pytest.mark.parametrize("dag_id", FORMS)
def test_trigger_form_submitted_with_its_defaults_starts_a_run(
    page: Any, airflow: AirflowClient, airflow_stack: EmbeddedStack, dag_id: str, shots: Path
) -> None:
    from playwright.sync_api import expect

    airflow.wait_for_dag(dag_id)
    page.goto(f"{airflow_stack.api_url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {dag_id}")).to_be_visible()
    # the DAG's own fields are rendered
    expect(dialog.locator("label").filter(has_text="Migration id")).to_be_visible()
    trigger = dialog.get_by_role("button", name="Trigger", exact=True)
    expect(trigger).to_be_enabled()
    page.screenshot(path=shots / f"20_{dag_id}_form.png")

    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/dags/{dag_id}/dagRuns")
    ) as sent:
        trigger.click()
    assert sent.value.status == 200, sent.value.text()
    run_id = sent.value.json()["dag_run_id"]
    try:
        run = airflow._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        assert run["triggered_by"] == "ui" and run["triggering_user_name"] == ADMIN_USER, run
        defaults = {
            name: spec["value"]
            for name, spec in airflow._call("GET", f"/dags/{dag_id}/details")["params"].items()
        }
        assert run["conf"] == defaults, (run["conf"], defaults)

        started = wait_until(
            f"{dag_id} {run_id} running",
            lambda: (
                airflow.run_state(dag_id, run_id) in ("running", "success", "failed")
                and airflow.run_state(dag_id, run_id)
            ),
            timeout=START_TIMEOUT,
            poll=2,
        )
        assert started == "running", (
            f"{dag_id} {run_id} ended {started}: {airflow.failed_tasks(dag_id, run_id)}"
        )
        page.goto(f"{airflow_stack.api_url}/dags/{dag_id}/runs/{run_id}")
        expect(page.get_by_text("Running", exact=True).first).to_be_visible()
        expect(page.get_by_text(run_id).first).to_be_visible()
        page.screenshot(path=shots / f"21_{dag_id}_run.png")
    finally:
        stop_run(airflow, dag_id, run_id)


def test_the_control_room_shows_the_migration_in_english_and_chinese(
    page: Any, airflow_stack: EmbeddedStack, shots: Path, test_load: dict
) -> None:
    """The control-room page, from the UI's navigation: phases with their latest runs, the record
    counts of the latest reconciled load, the plan's timeline with the key nodes the session's
    runs reached; then switched to Chinese. Its screenshot is the README's. (That each actual is
    the run's own time is tests/e2e/test_control_room.py's.)"""
    from playwright.sync_api import expect

    assert test_load["state"] == "success", test_load.get("failed_tasks")
    page.goto(f"{airflow_stack.api_url}/")
    page.get_by_role("link", name="Migration control room").click()
    page.wait_for_url("**/plugin/migration-control-room")
    room = page.frame_locator("iframe").first
    expect(room.locator("#title")).to_contain_text("Migration control room — Demo University Library")
    phases = room.locator("tr.phase")
    expect(phases).to_have_count(5)
    test_load_row = room.locator('tr.phase[data-phase="test_load"]')
    expect(test_load_row).to_contain_text("Test load")
    expect(test_load_row).to_contain_text("done")
    # its latest run may be one this module's trigger-form test started (and stopped): any run shows
    expect(test_load_row.get_by_role("link")).to_have_count(1)
    for entity in ("bibs", "holdings", "items", "patrons"):
        expect(room.locator(f'tr.entity-count[data-entity="{entity}"]')).to_be_visible()
    received = room.locator('tr.key-node[data-node="test_environment_received"]')
    expect(received).to_contain_text("late")  # planned 2026-06-19 in the demo's plan
    expect(received).to_contain_text(ADMIN_USER)  # who approved the session's gate
    expect(room.locator("#timeline-chart svg")).to_be_visible()
    expect(room.locator("#counts-chart svg")).to_be_visible()
    page.screenshot(path=shots / "80_control_room_in_the_ui.png")

    room.locator("#language-switch").click()
    expect(room.locator("#title")).to_contain_text("迁移控制台 — 示范大学图书馆")
    expect(room.locator('tr.phase[data-phase="cutover"]')).to_contain_text("正式切换")
    expect(room.locator('tr.key-node[data-node="test_environment_received"]')).to_contain_text("测试环境交付")
    page.screenshot(path=shots / "81_control_room_zh_in_the_ui.png")

    # The page on its own (the frame's source, same login cookie), whole: the README's screenshot.
    page.goto(f"{airflow_stack.api_url}/aleph2alma/control-room?migration=demo&lang=en")
    expect(page.locator("#title")).to_contain_text("Migration control room")
    expect(page.locator("#timeline-chart svg")).to_be_visible()
    page.screenshot(path=shots / "82_control_room.png", full_page=True)


def test_the_control_room_refuses_an_anonymous_request(airflow_stack: EmbeddedStack) -> None:
    import httpx

    url = f"{airflow_stack.api_url}/aleph2alma/control-room"
    assert httpx.get(url, timeout=30).status_code == 401
    forged = httpx.get(url, cookies={"_token": "not-a-token"}, timeout=30)
    assert forged.status_code in (401, 403), forged.text
    assert "control room" not in forged.text.lower()
