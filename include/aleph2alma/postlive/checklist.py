"""The decommission checklist: what was verified before Aleph is switched off, by whom and when.

A pure renderer: the DAG runs the checks (the go-live marker is there, the final
reconciliation accounts for every record, offline circulation was applied, the worklists were
produced, the archive is complete and verified …) and hands over one ``Check`` each; this
module writes the report twice, for people (HTML, through the reports' Jinja environment) and
for machines (JSON), in the run's reports prefix. The checklist passes only when every check
passed; an empty checklist is an error, not a pass. The ``*_check`` helpers turn the typed
results of other steps into checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from pydantic import Field

from aleph2alma.errors import PermanentError
from aleph2alma.refs import Reconciliation, Ref
from aleph2alma.storage import ArtifactStore, RunScope

if TYPE_CHECKING:
    from aleph2alma.postlive.archive import ArchiveResult
    from aleph2alma.postlive.worklists import WorklistsResult

TEMPLATE = "checklist.html.j2"
REPORT_DIR = "decommission/"


class ChecklistError(PermanentError):
    """The checklist cannot be written as asked (no checks)."""


class Check(Ref):
    """One verified item of the checklist."""

    name: str
    passed: bool
    detail: str
    verified_by: str
    verified_at: datetime
    counts: dict[str, int] = Field(default_factory=dict)
    evidence: tuple[str, ...] = ()
    """URIs of what was looked at (a report, a manifest, a marker)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.model_dump(),
            "verified_at": self.verified_at.isoformat(),
            "evidence": list(self.evidence),
        }


class ChecklistResult(Ref):
    status: str
    report_html: str
    report_json: str
    passed: int
    failed: list[str]


@dataclass(frozen=True)
class Checklist:
    run: Mapping[str, str]
    checks: Sequence[Check]
    institution: str = ""

    def __post_init__(self) -> None:
        if not self.checks:
            raise ChecklistError("a decommission checklist needs at least one check; none was given")

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def status(self) -> str:
        return "FAIL" if self.failed else "PASS"

    def to_json(self) -> str:
        body = {
            "status": self.status,
            "run": dict(self.run),
            "institution": self.institution,
            "checks": [c.to_dict() for c in self.checks],
            "failed": [c.name for c in self.failed],
        }
        return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def to_html(self) -> str:
        from aleph2alma.reporting import environment, run_info

        text = resources.files("aleph2alma.postlive").joinpath("templates", TEMPLATE).read_text("utf-8")
        return (
            environment()
            .from_string(text)
            .render(
                run=run_info(self.run),
                institution=self.institution,
                status=self.status,
                checks=[c.to_dict() for c in self.checks],
                failed=[c.to_dict() for c in self.failed],
            )
        )


def write_checklist(
    store: ArtifactStore, scope: RunScope, checks: Sequence[Check], as_of: str, institution: str = ""
) -> ChecklistResult:
    """The checklist's HTML and JSON under ``<reports prefix>/decommission/``."""
    run = {"migration_id": scope.migration_id, "dag_id": scope.dag_id, "run_id": scope.run_id, "as_of": as_of}
    checklist = Checklist(run, list(checks), institution)
    prefix = scope.report_prefix() + REPORT_DIR
    html = store.put_bytes(
        prefix + "checklist.html", checklist.to_html().encode("utf-8"), content_type="text/html"
    )
    data = store.put_bytes(
        prefix + "checklist.json", checklist.to_json().encode("utf-8"), content_type="application/json"
    )
    return ChecklistResult(
        status=checklist.status,
        report_html=store.uri(html.key),
        report_json=store.uri(data.key),
        passed=len(checklist.checks) - len(checklist.failed),
        failed=[c.name for c in checklist.failed],
    )


# --- checks from other steps' results ------------------------------------------------------


def reconciliation_check(rec: Reconciliation, verified_by: str, verified_at: datetime) -> Check:
    """Passed when the final reconciliation accounts for every record of every entity."""
    open_entities = sorted(e for e, v in rec.entities.items() if not v.get("accounted"))
    detail = (
        "final reconciliation: every Aleph record accounted for "
        "(delivered, rejected with a reason, or in Alma)"
        if rec.all_accounted
        else f"final reconciliation: not accounted for: {', '.join(open_entities) or 'see the report'}"
    )
    counts = {k: v for k, v in rec.totals.items() if isinstance(v, int) and not isinstance(v, bool)}
    return Check(
        name="final reconciliation",
        passed=rec.all_accounted,
        detail=detail,
        verified_by=verified_by,
        verified_at=verified_at,
        counts=counts,
        evidence=(rec.report_html,),
    )


def worklists_check(result: WorklistsResult, verified_by: str, verified_at: datetime) -> Check:
    """Passed when the worklists were produced (their rows are work to do, not a failure)."""
    return Check(
        name="clean-up worklists",
        passed=True,
        detail=f"{sum(result.counts.values())} records on {len(result.counts)} worklists "
        "handed to the librarians",
        verified_by=verified_by,
        verified_at=verified_at,
        counts=dict(result.counts),
        evidence=(result.workbook, result.manifest),
    )


def archive_check(
    result: ArchiveResult, verified_by: str, verified_at: datetime, expected_objects: int | None = None
) -> Check:
    """Passed when the archive holds every object (``expected_objects``, when given), each
    sha256-verified (the archive step refuses anything else)."""
    complete = result.objects > 0 and (expected_objects is None or result.objects == expected_objects)
    return Check(
        name="archive of the final snapshot",
        passed=complete,
        detail=f"archive {result.label}: {result.objects} objects, checksums verified, "
        f"{result.storage_class}, retained until {result.retain_until.isoformat()} ({result.retention})"
        + ("" if complete else f"; expected {expected_objects} objects"),
        verified_by=verified_by,
        verified_at=verified_at,
        counts={"objects": result.objects, "bytes": result.bytes, "copied": result.copied},
        evidence=(result.manifest,),
    )


def offline_circulation_check(
    result: Mapping[str, Any] | None, verified_by: str, verified_at: datetime
) -> Check:
    """Passed when every row of the offline circulation files is in Alma or rejected with a reason
    (read = in Alma + rejected); also when no file was given."""
    if result is None:
        return Check(
            name="Offline circulation applied",
            passed=True,
            detail="no offline circulation files were given for this run",
            verified_by=verified_by,
            verified_at=verified_at,
        )
    applied = {a: c["applied"] + c["already_applied"] for a, c in result["actions"].items()}
    return Check(
        name="Offline circulation applied",
        passed=bool(result["balanced"]),
        detail=f"{result['records_in']} transactions read, {result['records_out']} in Alma, "
        f"{result['rejected']} rejected ({result['rejected_by_reason']})",
        verified_by=verified_by,
        verified_at=verified_at,
        counts={**applied, "rejected": int(result["rejected"])},
    )
