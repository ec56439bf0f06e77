"""Reconcile a load: Aleph source → delivered → rejected → present in Alma, entity by entity.

For each entity the funnel is

    source (records read from Aleph)
      = delivered (written to the delivery) + rejected (by reason, ours: ``rejects.py``)
    delivered
      = in Alma + rejected by Alma (the statistics workbook's ids, or what its API refused
        during our load, with Alma's error code) + missing (named ids)

and the entity is **accounted** when both lines hold with every number known. "In Alma"
comes from the Alma API or the emulator (``alma_counts``); when an entity has no such count
the workbook's "Loaded" count stands in. When both are given and differ, or the workbook's
"Total records in file" is not what we delivered, the difference is listed as a
discrepancy. A gap between delivered and Alma only counts as accounted when each missing
record is named (``missing_ids``): a number alone explains nothing.

Then ``sample_size`` records per entity are drawn (seeded: the same seed, ids and entity
give the same sample) from the delivered ids, leaving out those Alma rejected or that are
known to be missing, fetched back from Alma through ``fetch(entity, record_id)`` and
compared field by field with ``expected(entity, record_id)`` (the delivered record) on the
entity's fields in ``SAMPLE_FIELDS``. ``fetch`` is given by the caller (Alma REST client or
emulator, already flattened to the delivered field names); an Alma code field given as
``{"value": ..., "desc": ...}`` is compared on its value. Values compare after trimming;
lists as sets; ISO dates and date-times as dates/instants (a date against a date-time: on
the date); Python numbers numerically. Errors from ``fetch`` propagate: a failing API is a
failed task, not a sample mismatch.

Privacy: reports carry record ids, counts and the compared fields only. Values of fields
whose name says name, address, e-mail, phone, birth date or PIN are never stored: a mismatch
on them is reported as "(withheld)".

The report comes twice: ``to_json`` for machines, ``to_html`` (one self-contained page:
PASS/ATTENTION banner, funnel table and inline SVG bars, mismatches field by field).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from aleph2alma.alma.statistics import AREA_FOR_ENTITY, AreaStatistics
from aleph2alma.reporting import (
    BLUE_GREY,
    GREEN,
    LIGHT_BLUE,
    ORANGE,
    PURPLE,
    RED,
    Bar,
    BarGroup,
    Chart,
    Segment,
    grouped_bar_chart,
    render,
    run_info,
)

REPORT_SCHEMA = "aleph2alma.reconciliation/1"
DEFAULT_SAMPLE_SIZE = 10
HTML_ID_LIMIT = 50
"""Alma-rejected ids listed per entity in the HTML page (the JSON lists them all)."""

SAMPLE_FIELDS: dict[str, tuple[str, ...]] = {
    "bibs": ("title", "035"),
    "holdings": ("bib", "library", "location", "call_number"),
    "items": ("barcode", "library", "location", "item_policy"),
    "patrons": ("primary_id", "user_group", "expiry_date"),
    "loans": ("item_barcode", "due_date"),
    "requests": ("item_barcode", "pickup_location_library"),
    "fines": ("type", "amount"),
}
"""Entity → the delivered record's fields checked against Alma (patrons are Alma users; a holding's
``bib`` is the Aleph 035 of the bib it hangs off, ``library``/``location`` its 852 $b/$c in Alma's codes)."""

PRIVATE_FIELD_WORDS = (
    "name",
    "address",
    "email",
    "mail",
    "phone",
    "telephone",
    "mobile",
    "birth",
    "pin",
    "password",
    "verification",
)
WITHHELD = "(withheld)"

API_LOAN_DATE_NOTE = (
    "Loans created through Alma's API carry the day of the load as their loan date: Alma sets it "
    "on the POST and takes none from the caller (rest_item_loan.xsd: loan_date is an output "
    "field, 'Alma populate this field with the current date and time'). Aleph's loan dates are "
    "in the delivered loans file only; due dates were set from Aleph."
)
"""The note on the loans entity when the test load created loans through the API."""

Fetch = Callable[[str, str], Mapping[str, Any] | None]
Expected = Callable[[str, str], Mapping[str, Any]]


# --- sample checks ------------------------------------------------------------------------


def is_private(field_name: str) -> bool:
    """Whether a field may hold personal data whose values never go in a report."""
    words = re.split(r"[^a-z]+", field_name.lower())
    return any(w.startswith(p) for w in words if w for p in PRIVATE_FIELD_WORDS)


_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})([T ][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?$")


def _normal(value: Any) -> Any:
    """A value in the form values are compared in (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return _normal(value.get("value"))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(sorted(str(_normal(v)) for v in value if _normal(v) != ""))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    iso = _ISO.match(text)
    if iso:
        try:  # a date with a zone but no time (Alma's "2027-07-01Z") is a date
            return datetime.fromisoformat(text) if iso.group(2) else date.fromisoformat(iso.group(1))
        except ValueError:
            return text
    return text


def _day(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def same_value(expected: Any, actual: Any) -> bool:
    a, b = _normal(expected), _normal(actual)
    if isinstance(a, datetime) and isinstance(b, datetime):
        if (a.tzinfo is None) != (b.tzinfo is None):
            return a.replace(tzinfo=None) == b.replace(tzinfo=None)
        return a == b
    if isinstance(a, date) and isinstance(b, date):
        return _day(a) == _day(b)
    if isinstance(a, float) != isinstance(b, float):  # a Python number against text: compare as numbers
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return _display(value.get("value"))
    if isinstance(value, list | tuple | set | frozenset):
        return "; ".join(sorted(_display(v) for v in value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


@dataclass(frozen=True)
class FieldMismatch:
    field: str
    expected: str
    actual: str


@dataclass
class SampleCheck:
    """One record fetched back from Alma: found at all, and which fields differ."""

    entity: str
    record_id: str
    found: bool
    mismatches: list[FieldMismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.found and not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "found": self.found,
            "ok": self.ok,
            "mismatches": [
                {"field": m.field, "expected": m.expected, "actual": m.actual} for m in self.mismatches
            ],
        }


def check_record(
    entity: str, record_id: str, fields: Sequence[str], fetch: Fetch, expected: Expected
) -> SampleCheck:
    """Fetch one record back from Alma and compare ``fields`` with the delivered record."""
    actual = fetch(entity, record_id)
    if actual is None:
        return SampleCheck(entity, record_id, found=False)
    wanted = expected(entity, record_id)
    mismatches = []
    for name in fields:
        exp, act = wanted.get(name), actual.get(name)
        if not same_value(exp, act):
            shown = (WITHHELD, WITHHELD) if is_private(name) else (_display(exp), _display(act))
            mismatches.append(FieldMismatch(name, *shown))
    return SampleCheck(entity, record_id, found=True, mismatches=mismatches)


def draw_sample(
    entity: str, ids: Sequence[str], size: int, seed: int, exclude: AbstractSet[str] = frozenset()
) -> list[str]:
    """``size`` ids of ``ids`` (fewer if there are not enough) not in ``exclude``; seeded per entity.

    Only indices are drawn, so ``ids`` may be a large sequence (it is never copied).
    """
    rng = random.Random(f"{seed}:{entity}")
    k = min(len(ids), size + len(exclude))
    picked: list[str] = []
    for index in rng.sample(range(len(ids)), k):
        record_id = ids[index]
        if record_id not in exclude:
            picked.append(record_id)
            if len(picked) == size:
                break
    return picked


# --- the funnel ---------------------------------------------------------------------------


@dataclass
class EntityReconciliation:
    """One entity's funnel. ``missing_in_alma`` = delivered − in Alma − rejected by Alma
    (negative when Alma holds more than was delivered); 0 when Alma's count is unknown."""

    entity: str
    source: int
    delivered: int
    rejected: int
    rejected_by_reason: dict[str, int]
    in_alma: int | None
    alma_rejected_ids: list[tuple[str, str]]
    missing_in_alma: int
    sample: list[SampleCheck]
    accounted: bool
    alma_rejected: int = 0
    """Records Alma rejected: the workbook's count, or its listed ids when it gives no count."""
    in_alma_from: str = ""
    """Where ``in_alma`` came from: ``alma`` (API/emulator), ``workbook`` or ``""`` (unknown)."""
    missing_ids: list[str] = field(default_factory=list)
    workbook_area: str | None = None
    workbook_total: int | None = None
    workbook_loaded: int | None = None
    discrepancies: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What a reader must know about the entity's records in Alma (not a discrepancy)."""

    @property
    def source_balanced(self) -> bool:
        return self.source == self.delivered + self.rejected

    @property
    def sample_failures(self) -> list[SampleCheck]:
        return [s for s in self.sample if not s.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "source": self.source,
            "delivered": self.delivered,
            "rejected": self.rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "in_alma": self.in_alma,
            "in_alma_from": self.in_alma_from,
            "alma_rejected": self.alma_rejected,
            "alma_rejected_ids": [{"id": i, "reason": r} for i, r in self.alma_rejected_ids],
            "missing_in_alma": self.missing_in_alma,
            "missing_ids": list(self.missing_ids),
            "workbook_area": self.workbook_area,
            "workbook_total": self.workbook_total,
            "workbook_loaded": self.workbook_loaded,
            "source_balanced": self.source_balanced,
            "accounted": self.accounted,
            "discrepancies": list(self.discrepancies),
            "notes": list(self.notes),
            "sample": {
                "checked": len(self.sample),
                "failed": len(self.sample_failures),
                "records": [s.to_dict() for s in self.sample],
            },
        }


def _entity(
    entity: str,
    source: int,
    delivered: int,
    reasons: Mapping[str, int],
    alma_count: int | None,
    stats: AreaStatistics | None,
    area: str | None,
    missing_ids: Sequence[str],
    refused: Sequence[tuple[str, str]],
) -> EntityReconciliation:
    rejected = sum(int(n) for n in reasons.values())
    notes: list[str] = []
    in_alma, from_ = alma_count, "alma" if alma_count is not None else ""
    alma_rejected_ids = [*(stats.rejected_records if stats else []), *refused]
    alma_rejected = (stats.rejected_count if stats else 0) + len(refused)
    if stats is not None:
        if stats.loaded is not None:
            if in_alma is None:
                in_alma, from_ = stats.loaded, "workbook"
            elif stats.loaded != in_alma:
                notes.append(
                    f"Alma counts {in_alma:,} records, the workbook says {stats.loaded:,} were loaded"
                )
        if stats.total is not None and stats.total != delivered:
            notes.append(
                f"the workbook counts {stats.total:,} records in the file, {delivered:,} were delivered"
            )
        if (
            stats.rejected is not None
            and stats.rejected_records
            and stats.rejected != len(stats.rejected_records)
        ):
            notes.append(
                f"the workbook counts {stats.rejected:,} rejected but lists {len(stats.rejected_records):,}"
            )
    if source != delivered + rejected:
        notes.append(
            f"source {source:,} ≠ delivered {delivered:,} + rejected {rejected:,} "
            f"(off by {source - delivered - rejected:,})"
        )
    if in_alma is None:
        notes.append("no Alma count (neither the Alma API nor the statistics workbook gives one)")
        missing = 0
    else:
        missing = delivered - in_alma - alma_rejected
        if missing < 0:
            notes.append(f"Alma holds {-missing:,} more records than were delivered and not rejected")
        elif missing != len(missing_ids):
            notes.append(f"{missing:,} delivered records are not in Alma, {len(missing_ids):,} of them named")
    accounted = source == delivered + rejected and in_alma is not None and missing == len(missing_ids)
    return EntityReconciliation(
        entity,
        source,
        delivered,
        rejected,
        {k: int(v) for k, v in reasons.items()},
        in_alma,
        alma_rejected_ids,
        missing,
        [],
        accounted,
        alma_rejected,
        from_,
        list(missing_ids),
        area if stats else None,
        stats.total if stats else None,
        stats.loaded if stats else None,
        notes,
    )


@dataclass
class Reconciliation:
    run: dict[str, str]
    entities: list[EntityReconciliation]
    sample_size: int
    seed: int
    workbook_source: str | None = None
    unknown_sheets: list[str] = field(default_factory=list)
    other_areas: list[AreaStatistics] = field(default_factory=list)
    """Workbook areas no reconciled entity maps to (shown, not judged)."""

    @property
    def all_accounted(self) -> bool:
        """Every source record accounted for, in every entity."""
        return all(e.accounted for e in self.entities)

    @property
    def sample_failures(self) -> list[SampleCheck]:
        return [s for e in self.entities for s in e.sample_failures]

    @property
    def status(self) -> str:
        """``PASS`` when all is accounted, every sampled record matches and no count disagrees."""
        clean = (
            self.all_accounted
            and not self.sample_failures
            and not any(e.discrepancies for e in self.entities)
        )
        return "PASS" if clean else "ATTENTION"

    @property
    def totals(self) -> dict[str, int]:
        es = self.entities
        return {
            "entities": len(es),
            "accounted_entities": sum(e.accounted for e in es),
            "source": sum(e.source for e in es),
            "delivered": sum(e.delivered for e in es),
            "rejected": sum(e.rejected for e in es),
            "in_alma": sum(e.in_alma or 0 for e in es),
            "alma_rejected": sum(e.alma_rejected for e in es),
            "missing_in_alma": sum(e.missing_in_alma for e in es),
            "sampled": sum(len(e.sample) for e in es),
            "sample_failures": len(self.sample_failures),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "run": self.run,
            "status": self.status,
            "all_accounted": self.all_accounted,
            "totals": self.totals,
            "sample": {"size": self.sample_size, "seed": self.seed},
            "workbook": {
                "source": self.workbook_source,
                "unknown_sheets": self.unknown_sheets,
                "other_areas": [a.to_dict() for a in self.other_areas],
            },
            "entities": [e.to_dict() for e in self.entities],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_html(self) -> str:
        return render(
            "reconciliation.html.j2",
            rec=self,
            totals=self.totals,
            funnel=_funnel_chart(self.entities),
            id_limit=HTML_ID_LIMIT,
        )


def reconcile(
    sources: Mapping[str, int],
    delivered: Mapping[str, int],
    rejected: Mapping[str, Mapping[str, int]],
    alma_counts: Mapping[str, int],
    workbook: Mapping[str, AreaStatistics] | None,
    sample_ids: Mapping[str, Sequence[str]],
    fetch: Fetch,
    expected: Expected,
    *,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    fields: Mapping[str, Sequence[str]] = SAMPLE_FIELDS,
    missing_ids: Mapping[str, Sequence[str]] | None = None,
    alma_refused: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    run: Mapping[str, Any] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
) -> Reconciliation:
    """Reconcile every entity named in ``sources`` (then any other entity the inputs name).

    ``sources``/``delivered``: entity → records; ``rejected``: entity → reason → records
    (our rejects); ``alma_counts``: entity → records in Alma (API or emulator; leave an
    entity out when unknown); ``workbook``: the statistics workbook (``AREA_FOR_ENTITY``
    maps entities to its areas); ``sample_ids``: entity → delivered ids to sample from;
    ``missing_ids``: entity → delivered ids known not to be in Alma; ``alma_refused``: entity →
    (id, reason) of the records Alma's API refused during our load (Alma's rejects, as the
    workbook's are for what Ex Libris loads); ``notes``: entity → what
    the report must say about its records in Alma (e.g. :data:`API_LOAN_DATE_NOTE`). An entity
    with no entry in ``fields`` is counted but not sampled.
    """
    if sample_size < 0:
        raise ValueError(f"sample_size must be ≥ 0, not {sample_size}")
    missing_ids = missing_ids or {}
    names = list(dict.fromkeys([*sources, *delivered, *rejected, *alma_counts, *sample_ids]))
    used_areas: set[str] = set()
    entities = []
    for name in names:
        area = AREA_FOR_ENTITY.get(name)
        stats = workbook.get(area) if workbook is not None and area is not None else None
        if stats is not None and area is not None:
            used_areas.add(area)
        result = _entity(
            name,
            int(sources.get(name, 0)),
            int(delivered.get(name, 0)),
            rejected.get(name, {}),
            alma_counts.get(name),
            stats,
            area,
            list(missing_ids.get(name, ())),
            list((alma_refused or {}).get(name, ())),
        )
        result.notes = list((notes or {}).get(name, ()))
        entity_fields = fields.get(name, ())
        if entity_fields and sample_size:
            exclude = {i for i, _ in result.alma_rejected_ids} | set(result.missing_ids)
            ids = draw_sample(name, sample_ids.get(name, ()), sample_size, seed, exclude)
            result.sample = [check_record(name, i, entity_fields, fetch, expected) for i in ids]
        entities.append(result)
    others = [stats for key, stats in (workbook or {}).items() if key not in used_areas]
    return Reconciliation(
        run_info(run),
        entities,
        sample_size,
        seed,
        getattr(workbook, "source", None) if workbook is not None else None,
        list(getattr(workbook, "unknown_sheets", [])),
        others,
    )


# --- the funnel chart ---------------------------------------------------------------------

COLOURS = {
    "source": BLUE_GREY,
    "delivered": LIGHT_BLUE,
    "rejected": RED,
    "in_alma": GREEN,
    "alma_rejected": ORANGE,
    "missing": PURPLE,
}
LABELS = {
    "source": "in Aleph",
    "delivered": "delivered",
    "rejected": "rejected by us",
    "in_alma": "in Alma",
    "alma_rejected": "rejected by Alma",
    "missing": "missing in Alma",
}


def _funnel_chart(entities: list[EntityReconciliation]) -> Chart:
    """Per entity three bars (source; delivered + our rejects; in Alma + Alma's rejects + missing),
    each entity on its own scale (entities differ by orders of magnitude)."""

    def part(kind: str, n: int) -> Segment:
        return Segment(n, COLOURS[kind], f"{n:,} {LABELS[kind]}")

    groups = []
    for e in entities:
        missing = max(e.missing_in_alma, 0)
        in_alma = (
            "unknown"
            if e.in_alma is None
            else f"{e.in_alma:,} + {e.alma_rejected:,} rejected"
            + (f" + {missing:,} missing" if missing else "")
        )
        groups.append(
            BarGroup(
                f"{e.entity} {'✓' if e.accounted else '✗'}",
                [
                    Bar("Aleph", [part("source", e.source)], f"{e.source:,}"),
                    Bar(
                        "delivered",
                        [part("delivered", e.delivered), part("rejected", e.rejected)],
                        f"{e.delivered:,} + {e.rejected:,} rejected",
                    ),
                    Bar(
                        "in Alma",
                        [
                            part("in_alma", e.in_alma or 0),
                            part("alma_rejected", e.alma_rejected),
                            part("missing", missing),
                        ],
                        in_alma,
                    ),
                ],
            )
        )
    return grouped_bar_chart(
        groups,
        title="Records per entity from Aleph to Alma",
        legend=[(LABELS[k], c) for k, c in COLOURS.items()],
    )
