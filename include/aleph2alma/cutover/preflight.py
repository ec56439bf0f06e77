"""Preflight: is the migration ready for the technical-services freeze?

Three checks, each with what to do when it fails, all run every time (a failed check is a
result, never an exception: the operator reads every finding at once):

1. **Signed-off baseline.** A fix-cycle iteration has been signed off (``state.baseline``):
   the cutover delivers what the library accepted, with the form and fix rules of that
   iteration.
2. **Every code mapped.** Every code in use in the given extract (its profile step's code
   inventory) is mapped by the migration form as it is now, through exact or ``*`` rows
   (``MigrationForm.unmapped_counts``, the same test the form generator and the
   ``unmapped_*`` validation rules apply). A code added in Aleph after the test load must be in
   the cutover form (DOMAIN.md, "Alma side").
3. **Baseline validation passed.** The signed-off iteration's transform had no FIX rule past its
   threshold: its validation report (``reports/migration_transform/<run>/validation/report.json``,
   written by ``phases.validation.write_report`` before the delivery gate) says ``PASS``.

4. **Alma codes exist.** The Alma libraries and locations the form maps to exist in the Alma
   environment, read through Alma's configuration API (``cutover.alma_codes``) when an Alma
   client is given and answers; otherwise the check is reported as not run.

Out of scope: whether the item policies, user groups, fee types and other code-table values
the form maps to exist in Alma (Alma's code-tables API is not read).

A missing input raises ``CutoverInputError`` (a ``PermanentError``): the extract has no
committed code inventory, or the migration form cannot be read.
"""

from __future__ import annotations

import json
from typing import Any

from aleph2alma import state
from aleph2alma.alma.form_spec import MAPPING_TABS
from aleph2alma.cutover import Page, Section, code_inventory, code_text, write_report
from aleph2alma.cutover.alma_codes import ALMA_CODES_CHECK, AlmaConfiguration, missing_codes
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import Ref
from aleph2alma.runs import TRANSFORM_DAG, RunRef

BASELINE_CHECK = "signed_off_baseline"
CODES_CHECK = "codes_mapped"
VALIDATION_CHECK = "baseline_validation"
VALIDATION_REPORT = "validation/report.json"
OUT_OF_SCOPE = (
    "Item policies, user groups, fee types and other code-table values the form maps to are not "
    "looked up in Alma."
)
_TABS = {spec.name: spec for spec in MAPPING_TABS}


class PreflightCheck(Ref):
    name: str
    passed: bool
    detail: str
    """What was found; when failed, exactly what to fix."""
    checked: bool = True
    """False: the check could not run (Alma did not answer); ``passed`` then says nothing."""


class UnmappedCode(Ref):
    code: list[str]
    records: int


class Preflight(Ref):
    passed: bool
    """Every check passed."""
    checks: list[PreflightCheck]
    extract: RunRef
    baseline: dict[str, Any] | None
    """The signed-off iteration as recorded (iteration, transform and fix-cycle run ids)."""
    unmapped: dict[str, list[UnmappedCode]]
    """Form tab → the codes in use it does not map, most frequent first."""
    report_html: str
    report_json: str

    def check(self, name: str) -> PreflightCheck:
        return next(c for c in self.checks if c.name == name)


def _baseline_check(recorded: dict[str, Any] | None) -> PreflightCheck:
    if recorded is None:
        return PreflightCheck(
            name=BASELINE_CHECK,
            passed=False,
            detail="no fix-cycle iteration is signed off: run migration_fix_cycle and approve its sign_off "
            "gate (record_baseline) before the freeze",
        )
    return PreflightCheck(
        name=BASELINE_CHECK,
        passed=True,
        detail=f"iteration {recorded['iteration']} is signed off: fix cycle run "
        f"{recorded['fix_cycle_run_id']}, transform run {TRANSFORM_DAG}/{recorded['transform_run_id']}",
    )


def _codes_check(extract: RunRef, unmapped: dict[str, list[UnmappedCode]], form_dir: str) -> PreflightCheck:
    if not unmapped:
        return PreflightCheck(
            name=CODES_CHECK,
            passed=True,
            detail=f"the migration form maps every code in use in extract {extract}",
        )
    parts = []
    for tab, codes in unmapped.items():
        listed = ", ".join(f"{code_text(c.code)} ({c.records} records)" for c in codes)
        parts.append(f"tab {tab} (columns {', '.join(_TABS[tab].keys)}): {listed}")
    count = sum(len(codes) for codes in unmapped.values())
    return PreflightCheck(
        name=CODES_CHECK,
        passed=False,
        detail=f"{count} code(s) in use in extract {extract} are not mapped by the form in {form_dir}; "
        "add a row for each (or a * fallback row), or correct the code in Aleph: " + "; ".join(parts),
    )


def _validation_check(ctx: PhaseContext, recorded: dict[str, Any] | None) -> PreflightCheck:
    if recorded is None:
        return PreflightCheck(
            name=VALIDATION_CHECK,
            passed=False,
            detail="no signed-off baseline, so no baseline validation to read (see signed_off_baseline)",
        )
    transform = RunRef(TRANSFORM_DAG, recorded["transform_run_id"])
    key = ctx.scope_of(transform).report_prefix() + VALIDATION_REPORT
    if not ctx.store.exists(key):
        return PreflightCheck(
            name=VALIDATION_CHECK,
            passed=False,
            detail=f"the baseline transform {transform} has no validation report at {ctx.store.uri(key)}: "
            "its report step did not finish; sign off an iteration whose transform completed",
        )
    report = json.loads(ctx.store.get_bytes(key))
    blocking = [b for b in report.get("breaches", []) if b.get("blocking")]
    if report.get("status") == "PASS" and not blocking:
        return PreflightCheck(
            name=VALIDATION_CHECK,
            passed=True,
            detail=f"the baseline transform {transform} passed validation: no FIX rule past its threshold",
        )
    named = "; ".join(b.get("message") or b.get("rule", "?") for b in blocking) or "status " + str(
        report.get("status")
    )
    return PreflightCheck(
        name=VALIDATION_CHECK,
        passed=False,
        detail=f"the baseline transform {transform} was blocked by validation ({named}); fix the records "
        "(in Aleph or with fix rules) or the form, run a fix-cycle iteration and sign it off. Report: "
        + ctx.store.uri(ctx.scope_of(transform).report_prefix() + "validation/report.html"),
    )


def _alma_check(ctx: PhaseContext, alma: AlmaConfiguration | None) -> PreflightCheck:
    from aleph2alma.alma.client import AlmaApiError

    if alma is None:
        return PreflightCheck(
            name=ALMA_CODES_CHECK, passed=True, checked=False, detail="not run: no Alma client was given"
        )
    try:
        missing = missing_codes(ctx.form, alma)
    except (AlmaApiError, OSError) as exc:
        return PreflightCheck(
            name=ALMA_CODES_CHECK,
            passed=True,
            checked=False,
            detail=f"not run: Alma's configuration API did not answer ({exc}); check in Alma that the "
            "form's libraries and locations exist",
        )
    if missing:
        return PreflightCheck(
            name=ALMA_CODES_CHECK,
            passed=False,
            detail=f"{len(missing)} Alma library or location code(s) the form maps to do not exist in Alma: "
            f"{', '.join(missing)}; create them in Alma's configuration or correct the form",
        )
    return PreflightCheck(
        name=ALMA_CODES_CHECK,
        passed=True,
        detail="every Alma library and location the form maps to exists in Alma",
    )


def preflight(ctx: PhaseContext, extract: RunRef, alma: AlmaConfiguration | None = None) -> Preflight:
    """Run the checks against ``extract`` (the extract whose codes the cutover will deliver), the
    migration's signed-off baseline and, through ``alma``, Alma's configuration; write the report;
    return every check."""
    inventory = code_inventory(ctx, extract)
    recorded = state.baseline(ctx.store, ctx.migration_id)
    unmapped = {
        tab: [UnmappedCode(code=list(code), records=n) for code, n in codes]
        for tab, codes in ctx.form.unmapped_counts(inventory).items()
    }
    checks = [
        _baseline_check(recorded),
        _codes_check(extract, unmapped, str(ctx.form_dir)),
        _validation_check(ctx, recorded),
        _alma_check(ctx, alma),
    ]
    passed = all(c.passed for c in checks)
    failed = [c for c in checks if not c.passed]
    page = Page(
        title="Cutover preflight",
        state="ok" if passed else "blocked",
        status="READY" if passed else "NOT READY",
        summary=f"{len(checks) - len(failed)} of {len(checks)} checks passed for extract {extract}.",
        points=[f"{c.name}: {c.detail}" for c in failed],
        meta={"extract": str(extract)},
        sections=[
            Section(
                "checks",
                "Checks",
                ["check", "result", "detail"],
                [
                    {
                        "check": c.name,
                        "result": ("passed" if c.passed else "FAILED") if c.checked else "not run",
                        "detail": c.detail,
                    }
                    for c in checks
                ],
                note=OUT_OF_SCOPE,
            ),
            Section(
                "unmapped",
                "Codes in use the form does not map",
                ["tab", "columns", "code", "records"],
                [
                    {
                        "tab": tab,
                        "columns": ", ".join(_TABS[tab].keys),
                        "code": code_text(c.code),
                        "records": c.records,
                    }
                    for tab, codes in unmapped.items()
                    for c in codes
                ],
                numeric=("records",),
                empty="Every code in use is mapped.",
            ),
        ],
    )
    data = {
        "passed": passed,
        "extract": str(extract),
        "baseline": recorded,
        "checks": [c.model_dump() for c in checks],
        "unmapped": {tab: [c.model_dump() for c in codes] for tab, codes in unmapped.items()},
        "out_of_scope": [OUT_OF_SCOPE],
    }
    html, report = write_report(ctx, "preflight", page, data)
    return Preflight(
        passed=passed,
        checks=checks,
        extract=extract,
        baseline=recorded,
        unmapped=unmapped,
        report_html=html,
        report_json=report,
    )
