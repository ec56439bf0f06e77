"""docker-compose.yaml, checked as far as a machine with no Docker engine allows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_backing_services_have_healthchecks(compose: dict) -> None:
    for name in ("postgres", "redis", "minio"):
        assert "healthcheck" in compose["services"][name], name


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_airflow_services_share_image_executor_and_backends(compose: dict, service: str) -> None:
    svc = compose["services"][service]
    env = svc["environment"]
    assert svc["image"] == compose["services"]["airflow-init"]["image"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert svc["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_images_are_pinned(compose: dict) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, f"{name} image {image!r} is not pinned"


def test_dockerfile_uses_the_pinned_airflow(compose: dict) -> None:
    requirements = (ROOT / "requirements.txt").read_text()
    pinned = re.search(r"^apache-airflow==([\d.]+)$", requirements, re.M)
    assert pinned
    assert f"apache/airflow:{pinned.group(1)}-" in (ROOT / "Dockerfile").read_text()


def test_every_referenced_variable_is_documented(compose: dict) -> None:
    text = (ROOT / "docker-compose.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    documented = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented


def test_connections_match_the_wiring(compose: dict) -> None:
    from aleph2alma import wiring

    env = compose["services"]["airflow-worker"]["environment"]
    assert f"AIRFLOW_CONN_{wiring.S3_CONN_ID.upper()}" in env
    assert f"AIRFLOW_VAR_{wiring.BUCKET_VARIABLE.upper()}" in env
    assert f"AIRFLOW_CONN_{wiring.ALEPH_DB_CONN_ID.upper()}" in (ROOT / ".env.example").read_text()


def test_celery_executor_is_installed_by_the_pinned_requirements() -> None:
    """The image installs requirements.lock; CeleryExecutor lives in the Celery provider."""
    pinned = re.search(r"^apache-airflow-providers-celery==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned
    assert f"\napache-airflow-providers-celery=={pinned.group(1)}\n" in (ROOT / "requirements.lock").read_text()
    assert "requirements.lock" in (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_components_share_the_jwt_secret_and_the_pinned_db_driver(compose: dict, service: str) -> None:
    """Workers' task tokens are checked by the api-server: all components must sign with one key."""
    env = compose["services"][service]["environment"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert re.search(r"^psycopg\[binary\]==", (ROOT / "requirements.txt").read_text(), re.M)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg_async://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://")
