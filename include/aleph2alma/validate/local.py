"""Validation of an Aleph library on local files, outside Airflow (``aleph2alma validate``).

Reads ALEPHSEQ exports and the Z-tables of a database (the demo replica or a real Aleph)
and runs the extract and transform steps of the DAGs, in their order, in this process
(``aleph2alma.pipeline``): the same rules, the same withholding, so the same counts as a
``migration_transform`` run. The artifacts stay in ``<out>/artifacts/``; the report and
worklists are copied to ``<out>``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from aleph2alma import pipeline
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.phases.context import PhaseContext
from aleph2alma.refs import ValidationOutcome
from aleph2alma.settings import MigrationSettings
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.storage_local import LocalObjectClient

LOCAL_RUN = "local"


def validate_library(
    seq_dir: Path,
    engine: Any,
    settings: MigrationSettings,
    form_path: Path | None,
    as_of: date,
    out_dir: Path,
) -> tuple[ValidationOutcome, dict[str, Any]]:
    """The validation outcome and the report's JSON; ``report.html``, ``report.json`` and
    ``worklists/`` written to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ArtifactStore(LocalObjectClient(out_dir / "artifacts"), "local")
    store.ensure_bucket()
    extract = PhaseContext(
        store, RunScope(settings.migration_id, "migration_extract", LOCAL_RUN), settings, as_of
    )
    pipeline.extract(extract, engine, LocalLanding(seq_dir))
    ctx = PhaseContext(
        store,
        RunScope(settings.migration_id, "migration_transform", LOCAL_RUN),
        settings,
        as_of,
        form_path=form_path,
    )
    done = pipeline.transform_and_validate(ctx, extract.run)
    prefix = ctx.scope.report_prefix() + "validation/"
    for key in store.list_keys(prefix):
        store.download(key, out_dir / key.removeprefix(prefix))
    return done.outcome, json.loads((out_dir / "report.json").read_text(encoding="utf-8"))


def one_part(settings: MigrationSettings) -> MigrationSettings:
    """Settings that extract each table and export in one part (a local run needs no parallelism)."""
    return replace(settings, part_rows=10**12, part_bytes=2**62)
