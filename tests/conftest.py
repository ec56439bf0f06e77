"""Shared fixtures: a real S3-compatible endpoint, a generated tiny demo library, PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW_HOME", str(Path(__file__).resolve().parents[1] / ".stack" / "pytest-airflow"))

from aleph2alma.storage import ArtifactStore  # noqa: E402
from aleph2alma_dev.devstack import EmbeddedStack  # noqa: E402
from sftp_server import sftp_server_fixture  # noqa: E402, F401  (registers the sftp_server fixture)

PG_ADMIN_URL = os.environ.get("ALEPH2ALMA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """moto's S3 server on a free localhost port, with the artifact bucket."""
    stack = EmbeddedStack(state_dir=tmp_path_factory.mktemp("s3"))
    stack.start_s3()
    yield stack
    stack.stop()


@pytest.fixture
def store(s3_stack: EmbeddedStack) -> ArtifactStore:
    """A fresh bucket per test, so tests never see each other's objects."""
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    client = s3_stack.s3_client()
    client.create_bucket(Bucket=bucket)
    return ArtifactStore(client, bucket)


@pytest.fixture(scope="session")
def tiny_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo library at tiny scale, generated once per test session."""
    from aleph2alma_dev.demo.generator import generate

    out = tmp_path_factory.mktemp("tiny-library")
    generate(out, scale="tiny", seed=7)
    return out


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A throw-away PostgreSQL database; skips (and says why) when PostgreSQL is unreachable."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc}".strip())
    name = f"a2a_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
