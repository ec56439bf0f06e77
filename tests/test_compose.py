"""docker-compose.yaml, checked as far as a machine with no Docker engine allows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = [
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
]


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
        assert image and not image.endswith(":latest") and ":" in image, (
            f"{name} image {image!r} is not pinned"
        )


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
    pinned = re.search(
        r"^apache-airflow-providers-celery==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M
    )
    assert pinned
    assert (
        f"\napache-airflow-providers-celery=={pinned.group(1)}\n" in (ROOT / "requirements.lock").read_text()
    )
    assert "requirements.lock" in (ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_components_share_the_execution_api_and_the_pinned_db_driver(compose: dict, service: str) -> None:
    env = compose["services"][service]["environment"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert re.search(r"^psycopg\[binary\]==", (ROOT / "requirements.txt").read_text(), re.M)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg_async://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://")


# --- Production settings (issue 9, B7) ---------------------------------------------------------
# Compose interpolation, as the Compose specification defines it
# (https://docs.docker.com/reference/compose-file/interpolation): ${VAR:?err} stops with an error
# when VAR is unset or empty, ${VAR:-default} uses the default when unset or empty, $$ is a literal $.
SECRETS = {
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "MINIO_KMS_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_USERNAME",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_ADMIN_EMAIL",
}
# (variable, default): the only defaults the file may have, neither a credential.
ALLOWED_DEFAULTS = {("AIRFLOW_API_BIND", "127.0.0.1")}
# Every component signs or encrypts with these: the same variable, in every Airflow service.
SHARED_KEYS = {
    "AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
}
REFERENCE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(Exception):
    """What compose reports for a ${VAR:?err} whose VAR is unset or empty."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """The compose file's text after interpolation (the forms this file uses; nothing nested)."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        given = env.get(name, "")
        if op == ":?" and not given:
            raise MissingVariable(f"{name}: {arg}")
        if op == ":-" and not given:
            return arg
        if op not in (None, ":?", ":-"):
            raise AssertionError(f"${{{name}{op}...}}: use :? (required) or :- (default)")
        return given

    parts = text.split("$$")
    return "$".join(REFERENCE.sub(value, part) for part in parts)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped; values unquoted)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and line[0] != "#")
    return {key: value for key, value in pairs}


def filled_env() -> dict[str, str]:
    """.env.example with every secret filled in, as an operator's .env."""
    return {**env_file(ROOT / ".env.example"), **{name: f"{name.lower()}-0123abcd" for name in SECRETS}}


def test_every_secret_is_required_and_nothing_else_has_a_default() -> None:
    text = (ROOT / "docker-compose.yaml").read_text().replace("$$", "")
    references = REFERENCE.findall(text)
    assert {name for name, _, _ in references} >= SECRETS
    for name, op, arg in references:
        if name in SECRETS:
            assert op == ":?" and arg, f"${{{name}{op}{arg}}}: a secret must be required (:?)"
        else:
            assert op != ":-" or (name, arg) in ALLOWED_DEFAULTS, f"${{{name}:-{arg}}}"
    assert "minio-secret" not in text and ":-minio" not in text and ":-airflow" not in text


def test_the_example_env_has_no_default_secret_and_compose_refuses_it() -> None:
    example = env_file(ROOT / ".env.example")
    assert {name: example[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")
    with pytest.raises(MissingVariable):
        interpolate((ROOT / "docker-compose.yaml").read_text(), example)
    for secret in SECRETS:
        env = {**filled_env(), secret: ""}
        with pytest.raises(MissingVariable, match=secret):
            interpolate((ROOT / "docker-compose.yaml").read_text(), env)


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as `docker compose config` resolves it with a filled-in .env."""
    return yaml.safe_load(interpolate((ROOT / "docker-compose.yaml").read_text(), filled_env()))


def test_resolved_connections_and_urls_carry_the_secrets(resolved: dict) -> None:
    env = resolved["services"]["airflow-worker"]["environment"]
    aws = json.loads(env["AIRFLOW_CONN_AWS"])
    assert (aws["login"], aws["password"]) == ("s3_access_key-0123abcd", "s3_secret_key-0123abcd")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:redis_password-0123abcd@redis:6379/0"
    assert ":postgres_password-0123abcd@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert (
        "s3_secret_key-0123abcd@minio:9000"
        in resolved["services"]["minio-init"]["environment"]["MC_HOST_local"]
    )


@pytest.mark.parametrize("service", ["airflow-init", *AIRFLOW_SERVICES])
def test_every_component_gets_the_same_fernet_key_jwt_secret_and_api_key(
    compose: dict, resolved: dict, service: str
) -> None:
    env = compose["services"][service]["environment"]
    for setting, variable in SHARED_KEYS.items():
        assert env[setting].startswith(f"${{{variable}:?")
        assert env[setting] == compose["services"]["airflow-apiserver"]["environment"][setting]
        assert resolved["services"][service]["environment"][setting] == f"{variable.lower()}-0123abcd"


@pytest.mark.parametrize("service", ["airflow-init", *AIRFLOW_SERVICES])
def test_the_auth_manager_is_fab(compose: dict, service: str) -> None:
    manager = compose["services"][service]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"]
    assert manager == "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
    assert "simple_auth_manager" not in (ROOT / "docker-compose.yaml").read_text().lower()


def test_the_fab_auth_manager_and_its_commands_are_installed_by_the_pinned_requirements() -> None:
    from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager
    from airflow.providers.fab.cli.definition import get_fab_cli_commands

    pinned = re.search(
        r"^apache-airflow-providers-fab==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M
    )
    assert (
        pinned
        and f"\napache-airflow-providers-fab=={pinned.group(1)}\n" in (ROOT / "requirements.lock").read_text()
    )
    commands = {c.name: {s.name for s in getattr(c, "subcommands", ())} for c in get_fab_cli_commands()}
    assert {"create", "reset-password"} <= commands["users"] and "migrate" in commands["fab-db"]
    assert FabAuthManager.get_cli_commands()  # the commands airflow-init runs come from the provider


def test_init_migrates_fab_and_creates_the_admin_from_env(resolved: dict) -> None:
    init = resolved["services"]["airflow-init"]
    script = init["command"][-1]
    steps = [step.strip() for step in script.split("&&")]
    assert steps[:2] == ["airflow db migrate", "airflow fab-db migrate"], steps
    create = next(step for step in steps if step.startswith("airflow users create"))
    for flag in (
        "--role Admin",
        '--username "$AIRFLOW_ADMIN_USERNAME"',
        '--password "$AIRFLOW_ADMIN_PASSWORD"',
    ):
        assert flag in create, create
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"] == "airflow_admin_password-0123abcd"
    assert "airflow_admin_password-0123abcd" not in script


def test_no_port_is_published_on_every_interface(resolved: dict) -> None:
    """Published ports bind to loopback; the UI/API's address is set in .env (127.0.0.1 by default)."""
    published = {(name, port) for name, svc in resolved["services"].items() for port in svc.get("ports", [])}
    assert published == {("minio", "127.0.0.1:9001:9001"), ("airflow-apiserver", "127.0.0.1:8080:8080")}
    assert env_file(ROOT / ".env.example")["AIRFLOW_API_BIND"] == "127.0.0.1"


def test_redis_requires_its_password(resolved: dict) -> None:
    redis = resolved["services"]["redis"]
    assert redis["command"][-1] == 'exec redis-server --requirepass "$REDIS_PASSWORD"'
    assert (
        redis["environment"]["REDIS_PASSWORD"]
        == redis["environment"]["REDISCLI_AUTH"]
        == "redis_password-0123abcd"
    )


def sftp_examples() -> dict[str, dict]:
    example = env_file(ROOT / ".env.example")
    conns = {k: json.loads(v) for k, v in example.items() if k.startswith("AIRFLOW_CONN_")}
    return {k: c for k, c in conns.items() if c["conn_type"] == "sftp"}


def test_sftp_connection_examples_pin_the_host_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's SSH hook reads the ``host_key`` extra and keeps checking it (``no_host_key_check`` false)."""
    from airflow.providers.ssh.hooks.ssh import SSHHook

    examples = sftp_examples()
    assert {"AIRFLOW_CONN_ALEPH_SFTP", "AIRFLOW_CONN_EXL_MFT"} <= examples.keys()
    for variable, conn in examples.items():
        assert conn["extra"]["no_host_key_check"] is False and conn["extra"]["host_key"].startswith("ssh-")
        monkeypatch.setenv(variable, json.dumps(conn))
        hook = SSHHook(ssh_conn_id=variable.removeprefix("AIRFLOW_CONN_").lower())
        assert hook.no_host_key_check is False
        assert hook.host_key is not None and hook.host_key.get_name() == "ssh-ed25519"


def test_docker_compose_config_accepts_a_filled_env_and_refuses_an_empty_secret(tmp_path: Path) -> None:
    """The real thing, where the Compose plugin is installed (it needs no running engine)."""
    docker = shutil.which("docker")
    if (
        not docker
        or subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode
    ):
        pytest.skip(
            "no `docker compose` on this machine: interpolation checked by this module's interpolate()"
        )
    filled, empty = tmp_path / "filled.env", tmp_path / "empty.env"
    filled.write_text("".join(f"{k}={v}\n" for k, v in filled_env().items()))
    empty.write_text("".join(f"{k}={v}\n" for k, v in {**filled_env(), "REDIS_PASSWORD": ""}.items()))
    compose = [docker, "compose", "-f", str(ROOT / "docker-compose.yaml"), "--env-file"]
    ok = subprocess.run([*compose, str(filled), "config"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run([*compose, str(empty), "config"], capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "REDIS_PASSWORD" in refused.stderr
