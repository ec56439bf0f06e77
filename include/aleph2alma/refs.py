"""What travels between tasks through XCom: references and counts, never records.

Each value a task returns is one of these small frozen models (or a dataclass of the domain
such as ``PackageResult``). Airflow's serde keeps their type across XCom; a deployment lets
it rebuild them with ``[core] allowed_deserialization_classes = airflow.* aleph2alma.*``
(``XCOM_CLASSES``; set by docker-compose.yaml and the embedded stack). Registering them at
parse time instead would import pyarrow and pymarc into every DAG file.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aleph2alma.runs import RunRef
from aleph2alma.storage import StoredFile


class Ref(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PartRef(Ref):
    """One committed part a mapped task reads: a raw extract part or a delivered ``alma/`` part."""

    entity: str
    source: str
    index: int
    key: str
    sha256: str
    records: int = 0

    @property
    def file(self) -> StoredFile:
        return StoredFile(self.key, 0, self.sha256, self.records, 0, self.source)


class PartResult(Ref):
    """What one part task stored, with its counts, for the entity's commit."""

    entity: str
    source: str
    index: int
    files: list[StoredFile]
    records_in: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


class Committed(Ref):
    """A committed stage of one entity: its manifest and counts (``extra``: what the stage adds)."""

    entity: str
    stage: str
    manifest: str
    records: int
    records_in: int | None = None
    rejected: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The entry of the run summary: counts, manifest and the stage's extras."""
        entry = {
            "entity": self.entity,
            "stage": self.stage,
            "manifest": self.manifest,
            "records": self.records,
            "rejected": self.rejected,
            **self.extra,
        }
        if self.records_in is not None:
            entry["records_in"] = self.records_in
        return entry


class TableValidation(Committed):
    """The cross-record rules' issues, and the records they keep out of the delivery."""

    excluded_key: str
    by_rule: dict[str, int]


class ValidationOutcome(Ref):
    """The validation report of a transform run and whether it lets the delivery go."""

    status: str
    report_html: str
    report_json: str
    by_rule: dict[str, int]
    blocking: list[str]
    entities: list[dict[str, Any]]


class FixedExtract(Ref):
    """A fix-cycle iteration's extract: the source extract with the fix rules applied."""

    extract: RunRef
    source_extract: RunRef
    fixes: dict[str, dict[str, int]]


class IterationDiff(Ref):
    previous: RunRef | None
    report_html: str
    totals: dict[str, int]


class Reconciliation(Ref):
    report_html: str
    all_accounted: bool
    totals: dict[str, Any]
    entities: dict[str, dict[str, Any]]


class DeltaWindow(Ref):
    """A night of the nightly delta: what it compares tonight's Aleph with, and its watermarks."""

    start: datetime | None
    """The watermark of the baseline (UTC); None: the baseline is a full extract."""
    end: datetime
    """The watermark this night records once everything is committed (UTC)."""
    baseline: RunRef
    """The committed night (its ``baseline/`` stage) or the full extract (its ``raw/`` stage)."""
    time_zone: str
    """The library's time zone: Aleph's dates are its local days."""
    asked_from: datetime | None = None
    """The trigger form's start, when given: the baseline is the last night at or before it."""

    @property
    def from_extract(self) -> bool:
        return self.start is None

    def describe(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(),
            "baseline": str(self.baseline),
            "time_zone": self.time_zone,
            "asked_from": self.asked_from.isoformat() if self.asked_from else None,
        }


class DeltaValidation(Ref):
    """The validation rules over a night's delta: rule id → issues."""

    manifest: str
    in_delta: dict[str, int]
    """Issues of the night's new and changed records (table rules judged against the whole library)."""
    new: dict[str, int]
    """Table-rule issues the library has tonight and did not have at the baseline, on any record."""
    resolved: dict[str, int]
    """Table-rule issues the baseline had and tonight's library has not."""
    totals: dict[str, int]
    """Table-rule issues of the whole library tonight."""


XCOM_CLASSES = "airflow.* aleph2alma.*"
"""``[core] allowed_deserialization_classes``: Airflow's own, and the types of this package."""
