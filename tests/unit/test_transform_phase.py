"""The transform phase's steps, run in order on the tiny demo library against a real S3 endpoint.

The same functions the migration_transform DAG calls, without Airflow in between: this is
where the ground truth is checked — validation must find exactly the seeded defects.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from aleph2alma import pipeline
from aleph2alma import settings as settings_mod
from aleph2alma.aleph.db import create_engine
from aleph2alma.aleph.landing import LocalLanding
from aleph2alma.phases.context import PhaseContext
from aleph2alma.storage import ArtifactStore, RunScope

EXTRACT = RunScope("demo", "migration_extract", "extract_1")
SCOPE = RunScope("demo", "migration_transform", "transform_1")


@pytest.fixture(scope="module")
def phase(tiny_library: Path, s3_stack) -> dict:
    """Extract, then transform and validate the tiny library once for every test here."""
    store = ArtifactStore(s3_stack.s3_client(), "transform-phase")
    store.ensure_bucket()
    settings = replace(settings_mod.load("demo"), part_rows=400, part_bytes=32_768)
    as_of = date.fromisoformat(json.loads((tiny_library / "summary.json").read_text())["as_of"])
    engine = create_engine(f"sqlite:///{tiny_library / 'replica.sqlite'}")
    extract_ctx = PhaseContext(store, EXTRACT, settings, as_of)
    pipeline.extract(extract_ctx, engine, LocalLanding(tiny_library / "alephseq"))
    ctx = PhaseContext(store, SCOPE, settings, as_of)
    done = pipeline.transform_and_validate(ctx, extract_ctx.run)
    stages = done.stages
    return {
        "store": store,
        "ctx": ctx,
        "stages": stages,
        "report": done.outcome,
        "validated": done.validated,
        "marc": {"bibs": stages["bibs"], "holdings": stages["holdings"]},
        "library": tiny_library,
    }
