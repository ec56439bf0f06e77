"""Steps of a fix-cycle iteration: apply the fix rules, diff against the previous iteration, keep the baseline.

An iteration reads a committed extract, applies ``include/config/<migration>/fixes.toml``
to the raw Z-tables it touches (the others are referenced, not copied), and commits the
result as its own ``raw/`` stage; ``migration_transform`` then runs on it with the current
migration form. The diff compares the issues of the new transform with the previous
iteration's, rule by rule: fixed, new, still open.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aleph2alma.aleph.extract import all_entities
from aleph2alma.phases.transform import ALMA, ISSUES, latest_extract_run, raw_manifest
from aleph2alma.rejects import RejectLog
from aleph2alma.storage import ArtifactStore, RunScope, StoredFile
from aleph2alma.validate.issues import Issue, read_issues

TRANSFORM_DAG = "migration_transform"
BASELINE_KEY = "{migration_id}/state/baseline/migration_fix_cycle.json"


def _fixed_part(store: ArtifactStore, scope: RunScope, part: StoredFile, rules: Any, dropped: Any,
                tmp: Path) -> tuple[StoredFile, Any]:
    from aleph2alma.fixes.rules import apply_fixes

    local = store.download(part.key, tmp / "in.parquet", part.sha256)
    table, log = apply_fixes(part.source, pq.read_table(local), rules, dropped=dropped)
    out = tmp / "out.parquet"
    pq.write_table(table, out, compression="zstd")
    key = scope.prefix("raw", part.key.split("/raw/", 1)[1].rsplit("/", 1)[0]) + Path(part.key).name
    return store.put_file(key, out, records=table.num_rows, source=part.source), log


def _dropped_patrons(store: ArtifactStore, migration_id: str, extract_run_id: str, rules: Any, tmp: Path) -> Any:
    from aleph2alma.fixes.rules import patrons_to_drop

    if not rules.drop_patrons:
        return None
    manifest = raw_manifest(store, migration_id, extract_run_id, "patrons")

    def whole(source: str) -> pa.Table:
        parts = [pq.read_table(store.download(p.key, tmp / f"{source}-{i}.parquet", p.sha256))
                 for i, p in enumerate(manifest.parts(source))]
        return pa.concat_tables(parts)

    return patrons_to_drop(rules, whole("Z303"), whole("Z305"))


def apply_fixes_step(store: ArtifactStore, scope: RunScope, migration_id: str, extract_run_id: str) -> dict[str, Any]:
    """The extract with the fix rules applied, committed under this run as ``raw/``."""
    from aleph2alma.fixes.rules import FixLog, fix_rules_for_migration

    rules = fix_rules_for_migration(migration_id)
    extract_run_id = extract_run_id or latest_extract_run(store, migration_id)
    applied: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        dropped = _dropped_patrons(store, migration_id, extract_run_id, rules, tmp)
        for entity in all_entities():
            manifest = raw_manifest(store, migration_id, extract_run_id, entity)
            files, log = [], None
            for part in manifest.files:
                if part.kind == "part" and part.key.endswith(".parquet") and rules.for_table(part.source):
                    fixed, part_log = _fixed_part(store, scope, part, rules, dropped, tmp)
                    files.append(fixed)
                    log = part_log if log is None else log.merge(part_log)
                else:
                    files.append(part)  # untouched: the manifest points at the extract's object
            extra = dict(manifest.extra)
            if isinstance(log, FixLog):
                extra["fixes"] = log.to_dict()
                applied[entity] = log.counts
                if log.rejects:
                    rejects_path = tmp / f"{entity}-dropped.jsonl"
                    with open(rejects_path, "w", encoding="utf-8") as fh:
                        RejectLog(fh).extend(log.rejects)
                    files.append(store.put_file(scope.prefix("raw", entity) + "rejects/dropped_by_fix_rule.jsonl",
                                                rejects_path, records=len(log.rejects), kind="rejects"))
            store.commit(scope, "raw", entity, files, extra=extra)
    return {"extract_ref": f"{scope.dag_id}/{scope.run_id}", "extract_run_id": extract_run_id, "fixes": applied}


def _issues_of(store: ArtifactStore, migration_id: str, transform_run_id: str) -> Iterator[Issue]:
    scope = RunScope(migration_id, TRANSFORM_DAG, transform_run_id)
    manifests = [scope.prefix(ALMA, "bibs"), scope.prefix(ALMA, "holdings"), scope.prefix(ISSUES, "tables")]
    for prefix in manifests:
        for f in store.manifest(prefix + "_MANIFEST.json").files:
            if f.kind == "issues":
                yield from read_issues(store.iter_lines(f.key))


def baseline(store: ArtifactStore, migration_id: str) -> dict[str, Any] | None:
    key = BASELINE_KEY.format(migration_id=migration_id)
    return json.loads(store.get_bytes(key)) if store.exists(key) else None


def diff_step(store: ArtifactStore, scope: RunScope, migration_id: str, transform_run_id: str,
              previous_run_id: str, rules: Any) -> dict[str, Any]:
    """Issues fixed, new and still open per rule, against the previous iteration (or the baseline)."""
    from aleph2alma.fixes.diff import diff_iterations

    previous = previous_run_id or (baseline(store, migration_id) or {}).get("transform_run_id", "")
    before = _issues_of(store, migration_id, previous) if previous else iter(())
    result = diff_iterations(before, _issues_of(store, migration_id, transform_run_id), rules,
                             labels=(previous or "(none)", transform_run_id))
    prefix = scope.report_prefix() + "iteration_diff/"
    html = store.put_bytes(prefix + "diff.html", result.to_html().encode("utf-8"), content_type="text/html")
    store.put_bytes(prefix + "diff.json", result.to_json().encode("utf-8"), content_type="application/json")
    with tempfile.TemporaryDirectory() as tmp:
        for path in result.write_worklists(Path(tmp)).values():
            store.put_file(prefix + f"worklists/{Path(path).name}", path, kind="report")
    return {"previous_run_id": previous, "report_html": store.uri(html.key), "totals": result.totals}


def record_baseline(store: ArtifactStore, migration_id: str, iteration: int, transform_run_id: str,
                    fix_run_id: str) -> str:
    """A signed-off iteration becomes the baseline for the next iteration and for cutover."""
    key = BASELINE_KEY.format(migration_id=migration_id)
    body = {"iteration": iteration, "transform_run_id": transform_run_id, "fix_cycle_run_id": fix_run_id}
    store.put_bytes(key, json.dumps(body, sort_keys=True).encode("utf-8"), content_type="application/json")
    return store.uri(key)
