"""The accounting audit that closes every phase DAG: nothing lost, nothing counted twice.

Each stage checks its own balance before it commits (``accounting.Tally``). The audit checks
it again afterwards, on what was actually committed, across the whole run: it lists the run's
prefix (and its child runs'), reads every ``_MANIFEST.json`` found there, and writes one
*ledger line* per equation ``in = out + rejected``:

- **per entity and stage**, what the manifest says it read, delivered and rejected: the
  ``alma/`` stages' ``records_in`` against their parts and their rejects (as counted by
  reason, as recorded on the parts, and as listed in the rejects files); the ``raw/`` and
  ``baseline/`` stages' per-source counts against their parts; a night's ``delta/`` stage
  (tonight = previous + new − deleted; the delta parts hold the new and changed records,
  the change lists every new, changed and deleted key); the ``issues/`` stages' counts by
  rule against the issues written; the delivery package's counts;
- **between chained stages** that are 1:1: what a ``raw/`` stage committed for an entity is
  what the transform read in (bibs, holdings, items ← Z30, patrons ← Z303, loans ← Z36,
  requests ← Z37, fines ← Z31; the code inventory, P2E and the Z-tables nobody transforms
  are not chained); the delivered bibs are what ``bibs_with_items`` read; the ``alma/``
  stages are what the package counted; a fix-cycle ``raw/`` stage kept what the source extract
  committed less the patrons its rules dropped; a night compared what its baseline run
  committed.

Any line that does not balance is a gap: the audit writes its report
(``reports/<dag>/<run>/audit.json``, a line in ``run_summary.json``) and fails the run with a
``PermanentError`` naming each gap (run, stage, entity, the three numbers and the difference).
Files a manifest lists under the audited run's prefix must be in the listing too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aleph2alma.errors import PermanentError
from aleph2alma.runs import RunRef
from aleph2alma.state import amend_run_summary
from aleph2alma.storage import MANIFEST_NAME, ArtifactStore, Manifest, RunScope, StorageError

RAW, ALMA, BASELINE, DELTA, ISSUES, PACKAGE = "raw", "alma", "baseline", "delta", "issues", "package"

# What an entity's first Alma stage reads in, of its raw stage: one record per row of this source
# (None: every part of the entity). Each is 1:1: the transform reads every record of it once.
RAW_TO_ALMA: dict[str, str | None] = {
    "bibs": None,
    "holdings": None,
    "items": "Z30",
    "patrons": "Z303",
    "loans": "Z36",
    "requests": "Z37",
    "fines": "Z31",
}
PRIMARY_SOURCE = {"patrons": "Z303"}  # a fix rule drops a patron: one reject, rows in four tables
REPORT_NAME = "audit.json"
MAX_GAPS_IN_MESSAGE = 10


class AuditGapError(PermanentError):
    """Records were lost or counted twice somewhere in the run: the message names each gap."""


@dataclass(frozen=True)
class Line:
    """One equation of the ledger: ``records_in = records_out + rejected`` for one stage of one entity."""

    run: str
    stage: str
    entity: str
    check: str
    """What the three numbers are, e.g. ``counted by reason`` or ``raw/bibs of <run> → records_in``."""
    records_in: int
    records_out: int
    rejected: int = 0

    @property
    def difference(self) -> int:
        return self.records_in - self.records_out - self.rejected

    @property
    def balanced(self) -> bool:
        return self.difference == 0

    def describe(self) -> str:
        sign = "=" if self.balanced else "≠"
        return (
            f"{self.run} {self.stage}/{self.entity} ({self.check}): {self.records_in} in {sign} "
            f"{self.records_out} out + {self.rejected} rejected, difference {self.difference:+d}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "stage": self.stage,
            "entity": self.entity,
            "check": self.check,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "rejected": self.rejected,
            "difference": self.difference,
        }


@dataclass
class AuditReport:
    """Every manifest the audit read and every line it checked."""

    runs: list[str]
    manifests: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def gaps(self) -> list[Line]:
        return [line for line in self.lines if not line.balanced]

    @property
    def passed(self) -> bool:
        return not self.gaps and not self.missing_files and not self.unreadable

    def problems(self) -> list[str]:
        return [
            *(g.describe() for g in self.gaps),
            *(f"a manifest lists {key}, which is not in the store" for key in self.missing_files),
            *self.unreadable,
        ]

    def summary(self) -> dict[str, Any]:
        """The run summary's line: passed or not, what was checked, how many gaps."""
        return {
            "status": "passed" if self.passed else "failed",
            "runs": self.runs,
            "manifests": len(self.manifests),
            "lines": len(self.lines),
            "gaps": len(self.gaps),
            "missing_files": len(self.missing_files),
            "unreadable": len(self.unreadable),
        }

    def to_json(self) -> str:
        body = {
            **self.summary(),
            "manifests": sorted(self.manifests),
            "problems": self.problems(),
            "lines": [line.to_dict() for line in self.lines],
        }
        return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def check(self) -> AuditReport:
        """Raise ``AuditGapError`` naming the gaps (the first ``MAX_GAPS_IN_MESSAGE``) when there are any."""
        problems = self.problems()
        if problems:
            shown = "; ".join(problems[:MAX_GAPS_IN_MESSAGE])
            more = len(problems) - MAX_GAPS_IN_MESSAGE
            raise AuditGapError(
                f"accounting audit of {', '.join(self.runs)}: {len(problems)} gap(s): {shown}"
                + (f"; and {more} more (see the audit report)" if more > 0 else "")
            )
        return self


# --- reading a run's manifests ---------------------------------------------------------------


@dataclass
class RunManifests:
    """The committed manifests of one run, by (stage, entity), and every key under its prefix."""

    run: RunRef
    prefix: str
    keys: set[str]
    manifests: dict[tuple[str, str], Manifest]

    def get(self, stage: str, entity: str) -> Manifest | None:
        return self.manifests.get((stage, entity))


def read_run(store: ArtifactStore, migration_id: str, run: RunRef, report: AuditReport) -> RunManifests:
    """List the run's prefix and read every manifest in it; one that cannot be read is a problem."""
    scope = run.scope(migration_id)
    prefix = scope.prefix(RAW).removesuffix(f"{RAW}/")
    keys = set(store.list_keys(prefix))
    manifests: dict[tuple[str, str], Manifest] = {}
    for key in sorted(k for k in keys if k.endswith("/" + MANIFEST_NAME)):
        parts = key[len(prefix) :].split("/")
        if len(parts) != 3:  # <stage>/<entity>/_MANIFEST.json only
            continue
        try:
            manifest = store.manifest(key)
        except (StorageError, ValueError, KeyError, TypeError) as exc:
            report.unreadable.append(f"{store.uri(key)} is not a readable manifest: {exc}")
            continue
        manifests[(parts[0], parts[1])] = manifest
        report.manifests.append(store.uri(key))
    return RunManifests(run, prefix, keys, manifests)


# --- the ledger ------------------------------------------------------------------------------


def _by_source(manifest: Manifest) -> Counter[str]:
    counts: Counter[str] = Counter()
    for f in manifest.parts():
        counts[f.source] += f.records
    return counts


def _listed(manifest: Manifest, kind: str, source: str | None = None) -> int:
    return sum(f.records for f in manifest.files if f.kind == kind and (source is None or f.source == source))


def _primary(entity: str, counts: Mapping[str, int]) -> int:
    source = PRIMARY_SOURCE.get(entity)
    return int(counts.get(source, 0)) if source else sum(int(v) for v in counts.values())


def _alma_lines(run: str, m: Manifest) -> Iterator[Line]:
    if "records_in" not in m.extra:
        return
    records_in = int(m.extra["records_in"])
    by_reason = sum(int(v) for v in m.extra.get("rejected_by_reason", {}).values())
    yield Line(run, m.stage, m.entity, "rejects counted by reason", records_in, m.records, by_reason)
    yield Line(run, m.stage, m.entity, "rejects recorded on the parts", records_in, m.records, m.rejected)
    yield Line(
        run,
        m.stage,
        m.entity,
        "rejects listed in rejects files",
        records_in,
        m.records,
        _listed(m, "rejects"),
    )


def _raw_lines(run: str, m: Manifest) -> Iterator[Line]:
    recorded = m.extra.get("records_by_source")
    parts = _by_source(m)
    if "fixes" in m.extra and isinstance(recorded, dict):
        # A fix-cycle raw stage keeps its source extract's counts: what it read in. Its rules
        # drop patrons (one reject each, Z303) and change values, never add or lose other rows.
        yield Line(
            run,
            m.stage,
            m.entity,
            "source extract's records = kept + dropped by fix rules",
            _primary(m.entity, recorded),
            _primary(m.entity, parts),
            _listed(m, "rejects"),
        )
    elif isinstance(recorded, dict):
        for source in sorted(set(recorded) | set(parts)):
            yield Line(
                run,
                m.stage,
                m.entity,
                f"{source}: recorded = in the parts",
                int(recorded.get(source, 0)),
                parts[source],
            )
    if "malformed_lines" in m.extra and "fixes" not in m.extra:
        yield Line(
            run,
            m.stage,
            m.entity,
            "malformed lines recorded = listed",
            int(m.extra["malformed_lines"]),
            0,
            _listed(m, "rejects"),
        )


def _delta_lines(run: str, m: Manifest) -> Iterator[Line]:
    counted = ("previous", "records", "new", "changed", "deleted")
    if not all(isinstance(m.extra.get(k), int) for k in counted):
        return
    previous, records, new, changed, deleted = (int(m.extra[k]) for k in counted)
    yield Line(run, m.stage, m.entity, "previous + new = tonight + deleted", previous + new, records, deleted)
    yield Line(run, m.stage, m.entity, "new + changed = in the delta parts", new + changed, m.records)
    yield Line(
        run,
        m.stage,
        m.entity,
        "new + changed + deleted = in the change list",
        new + changed + deleted,
        _listed(m, "changes"),
    )


def _issues_lines(run: str, m: Manifest) -> Iterator[Line]:
    by_rule = m.extra.get("by_rule")
    if not isinstance(by_rule, dict):
        return
    nested = {k: v for k, v in by_rule.items() if isinstance(v, dict)}
    if nested:
        for name, counts in sorted(nested.items()):
            counted = sum(int(v) for v in counts.values())
            yield Line(
                run,
                m.stage,
                m.entity,
                f"{name}: issues counted by rule = written",
                counted,
                _listed(m, "issues", name),
            )
    else:
        counted = sum(int(v) for v in by_rule.values())
        yield Line(run, m.stage, m.entity, "issues counted by rule = written", counted, _listed(m, "issues"))


def _package_lines(run: str, m: Manifest) -> Iterator[Line]:
    for entity, counts in sorted((m.extra.get("counts") or {}).items()):
        yield Line(
            run,
            m.stage,
            entity,
            "package counts",
            int(counts.get("records_in", 0)),
            int(counts.get("records", 0)),
            int(counts.get("rejected", 0)),
        )


_STAGE_LINES = {
    RAW: _raw_lines,
    BASELINE: _raw_lines,
    ALMA: _alma_lines,
    DELTA: _delta_lines,
    ISSUES: _issues_lines,
    "offline_circ": _alma_lines,  # offline circulation: read = in Alma + rejected (bad rows, refusals)
}


def stage_lines(run: RunRef, manifests: RunManifests) -> Iterator[Line]:
    """The balance of every manifest of one run, on its own."""
    for (stage, _entity), m in sorted(manifests.manifests.items()):
        lines = _package_lines if stage == PACKAGE else _STAGE_LINES.get(stage)
        if lines is not None:
            yield from lines(str(run), m)


def missing_files(manifests: RunManifests) -> Iterator[str]:
    """Files a manifest of the run lists under the run's own prefix that the listing does not have.

    (Files under another run's prefix, such as a fix cycle's untouched extract parts, belong to
    that run's audit.)"""
    for m in manifests.manifests.values():
        for f in m.files:
            if f.key.startswith(manifests.prefix) and f.key not in manifests.keys:
                yield f.key


def chain_lines(upstream: RunManifests, downstream: RunManifests) -> Iterator[Line]:
    """The chained stages of ``downstream`` against what ``upstream`` committed, where they are 1:1."""
    up, down = str(upstream.run), str(downstream.run)
    for entity, source in RAW_TO_ALMA.items():
        raw, alma = upstream.get(RAW, entity), downstream.get(ALMA, entity)
        if raw is None or alma is None or "records_in" not in alma.extra:
            continue
        committed = raw.records if source is None else _by_source(raw)[source]
        yield Line(
            down,
            ALMA,
            entity,
            f"{RAW}/{entity} of {up} committed = read in",
            committed,
            int(alma.extra["records_in"]),
        )
    for (stage, name), raw_down in sorted(downstream.manifests.items()):
        raw_up = upstream.get(RAW, name)
        if stage != RAW or "fixes" not in raw_down.extra or raw_up is None:
            continue
        yield Line(
            down,
            RAW,
            name,
            f"{RAW}/{name} of {up} committed = kept + dropped by fix rules",
            _primary(name, _by_source(raw_up)),
            _primary(name, _by_source(raw_down)),
            _listed(raw_down, "rejects"),
        )


def package_chains(store: ArtifactStore, manifests: RunManifests, report: AuditReport) -> Iterator[Line]:
    """Each package of the run against the ``alma/`` manifests it names as its sources: what a
    transform delivered is what the package counted (a cutover packages two transforms)."""
    for (stage, entity), package in sorted(manifests.manifests.items()):
        if stage != PACKAGE:
            continue
        sources = package.extra.get("sources") or {}
        for name, counts in sorted((package.extra.get("counts") or {}).items()):
            if name not in sources:
                report.unreadable.append(
                    f"{manifests.run} package/{entity} counts {name} but names no source manifest"
                )
                continue
            try:
                alma = store.manifest(str(sources[name]))
            except (StorageError, ValueError, KeyError, TypeError) as exc:
                report.unreadable.append(
                    f"{sources[name]} (packaged {name}) is not a readable manifest: {exc}"
                )
                continue
            yield Line(
                str(manifests.run),
                stage,
                f"{entity}:{name}",
                f"{ALMA}/{name} of {alma.dag_id}/{alma.run_id} delivered = packaged",
                alma.records,
                int(counts.get("records", 0)),
            )


def internal_chains(manifests: RunManifests) -> Iterator[Line]:
    """Chains inside one run: the delivered bibs are what ``bibs_with_items`` read in."""
    bibs, embedded = manifests.get(ALMA, "bibs"), manifests.get(ALMA, "bibs_with_items")
    if bibs is not None and embedded is not None and "records_in" in embedded.extra:
        yield Line(
            str(manifests.run),
            ALMA,
            "bibs_with_items",
            f"{ALMA}/bibs delivered = read in",
            bibs.records,
            int(embedded.extra["records_in"]),
        )


def delta_chains(
    store: ArtifactStore, migration_id: str, manifests: RunManifests, report: AuditReport
) -> Iterator[Line]:
    """A night's ``previous`` is what its baseline run committed (its ``baseline/`` stage, or the
    full extract's ``raw/`` stage before the first night); tonight's records are its own baseline."""
    compared: dict[RunRef, RunManifests] = {}
    for (stage, entity), m in sorted(manifests.manifests.items()):
        if stage != DELTA or not isinstance(m.extra.get("previous"), int):
            continue
        tonight = manifests.get(BASELINE, entity)
        if tonight is not None:
            yield Line(
                str(manifests.run),
                DELTA,
                entity,
                f"{BASELINE}/{entity} = tonight's records",
                tonight.records,
                int(m.extra["records"]),
            )
        window = m.extra.get("window") or {}
        if not window.get("baseline"):
            continue
        run = RunRef.parse(str(window["baseline"]), "")
        if run not in compared:
            compared[run] = read_run(store, migration_id, run, report)
        then = compared[run].get(RAW if window.get("start") is None else BASELINE, entity)
        if then is None:
            report.unreadable.append(f"{run} has no committed stage for {entity}: the night compared with it")
            continue
        yield Line(
            str(manifests.run),
            DELTA,
            entity,
            f"{then.stage}/{entity} of {run} committed = previous",
            then.records,
            int(m.extra["previous"]),
        )


# --- the audit -------------------------------------------------------------------------------


def audit(
    store: ArtifactStore,
    migration_id: str,
    run: RunRef,
    *,
    children: Sequence[RunRef] = (),
    reads: Mapping[RunRef, RunRef] | None = None,
) -> AuditReport:
    """The ledger of ``run`` and its ``children``; ``reads`` maps a run to the run whose stages its
    first stage read (a transform → its extract, a test load → its transform, a fix cycle → the
    source extract) for the chains between runs. Nothing is raised here: see ``AuditReport.check``."""
    audited = [run, *children]
    report = AuditReport(runs=[str(r) for r in audited])
    found = {r: read_run(store, migration_id, r, report) for r in audited}
    for r, manifests in found.items():
        _collect(report, r, stage_lines(r, manifests))
        _collect(report, r, internal_chains(manifests))
        _collect(report, r, package_chains(store, manifests, report))
        _collect(report, r, delta_chains(store, migration_id, manifests, report))
        report.missing_files.extend(missing_files(manifests))
    for downstream, upstream in (reads or {}).items():
        if downstream not in found:
            continue
        up = found.get(upstream) or read_run(store, migration_id, upstream, report)
        if not up.manifests:
            report.unreadable.append(f"{upstream} has no committed manifest: {downstream} read from it")
        _collect(report, downstream, chain_lines(up, found[downstream]))
    return report


def _collect(report: AuditReport, run: RunRef, lines: Iterator[Line]) -> None:
    """Add ``lines`` to the report; a manifest whose counts are not numbers, or that names a run
    that cannot be, is a problem of the report, never a traceback."""
    try:
        report.lines.extend(lines)
    except (TypeError, ValueError, AttributeError) as exc:
        report.unreadable.append(f"{run}: a manifest's counts cannot be read: {exc}")


def write_report(store: ArtifactStore, scope: RunScope, report: AuditReport) -> str:
    """The audit report (JSON) under the run's reports, and its line in ``run_summary.json`` (when the
    run wrote one); returns the report's URI."""
    key = scope.report_prefix() + REPORT_NAME
    store.put_bytes(key, report.to_json().encode("utf-8"), content_type="application/json")
    amend_run_summary(store, scope, {"audit": {**report.summary(), "report": store.uri(key)}})
    return store.uri(key)


def audit_step(
    store: ArtifactStore,
    scope: RunScope,
    *,
    children: Iterable[RunRef] = (),
    reads: Mapping[RunRef, RunRef] | None = None,
) -> dict[str, Any]:
    """The last task of a phase DAG: audit the run, write the report, fail (permanently) on a gap."""
    run = RunRef(scope.dag_id, scope.run_id)
    report = audit(store, scope.migration_id, run, children=list(children), reads=reads)
    uri = write_report(store, scope, report)
    report.check()
    return {**report.summary(), "report": uri}
