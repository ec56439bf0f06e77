"""The embedded stack for the demo and the end-to-end tests.

Starts, in a project-local folder, an S3-compatible endpoint (moto's server mode) with the
artifact bucket, and ``airflow standalone`` (SQLite metadata DB, LocalExecutor, examples
off) wired to it through the same connections a production deployment uses. Nothing here
is used by DAGs or tasks; production differs only in the connections' contents.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "aleph2alma-artifacts"
ADMIN_USER = "admin"


class StackError(RuntimeError):
    """A stack component did not come up; the message says which and where its log is."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, what: str, log: Path, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise StackError(f"{what} did not answer at {url} within {timeout:.0f} s; see {log}")


def _wait_group_gone(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Airflow standalone's children outlive their parent briefly: wait for the whole group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.3)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@dataclass
class EmbeddedStack:
    """S3 endpoint + Airflow standalone under ``state_dir`` (default ``.stack/``)."""

    state_dir: Path = PROJECT_ROOT / ".stack"
    api_port: int = 8080
    s3_port: int = 0
    alma_port: int = 0
    parallelism: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def alma_url(self) -> str:
        """The Alma API emulator's base URL (what a real Alma's api-<region> URL is in production)."""
        return f"http://127.0.0.1:{self.alma_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def s3_client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        aws = {"conn_type": "aws", "login": "testing", "password": "testing",
               "extra": {"endpoint_url": self.s3_endpoint, "region_name": "us-east-1"}}
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret(),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_AWS": json.dumps(aws),
            "AIRFLOW_CONN_ALMA": json.dumps({"conn_type": "http", "password": "demo-api-key",
                                             "extra": {"base_url": f"{self.alma_url}/almaws/v1",
                                                       "per_second": 25}}),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW_VAR_ALEPH2ALMA_BUCKET": BUCKET,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        env.update(self.extra_env)
        return env

    def jwt_secret(self) -> str:
        """A per-stack signing key, long enough for HS512, kept beside the stack's state."""
        path = self.state_dir / "jwt_secret"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(64))
        return path.read_text().strip()

    def _spawn(self, args: list[str], log_name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.state_dir / log_name
        handle = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=self.env(),
                                cwd=PROJECT_ROOT, start_new_session=True)
        self._procs.append(proc)
        return proc, log

    def start_s3(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.s3_port = self.s3_port or free_port()
        moto = str(Path(sys.executable).parent / "moto_server")
        proc, log = self._spawn([moto, "-H", "127.0.0.1", "-p", str(self.s3_port)], "s3.log")
        _wait_http(self.s3_endpoint, "the S3 endpoint (moto server)", log, 30, proc)
        self.s3_client().create_bucket(Bucket=BUCKET)

    def start_alma_emulator(self) -> None:
        """The Alma API emulator, standing in for the Alma test environment (an emulator, not Alma)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.alma_port = self.alma_port or free_port()
        cli = str(Path(sys.executable).parent / "aleph2alma")
        proc, log = self._spawn([cli, "demo", "alma", "--port", str(self.alma_port),
                                 "--db", str(self.state_dir / "alma-emulator.sqlite")], "alma-emulator.log")
        _wait_http(f"{self.alma_url}/_emulator/counts", "the Alma API emulator", log, 60, proc)

    def start_airflow(self, timeout: float = 420) -> None:
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        proc, log = self._spawn([airflow, "standalone"], "airflow.log")
        _wait_http(f"{self.api_url}/api/v2/monitor/health", "Airflow (api-server)", log, timeout, proc)

    def start(self) -> EmbeddedStack:
        self.start_s3()
        self.start_alma_emulator()
        self.start_airflow()
        return self

    def admin_password(self) -> str:
        path = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        return str(json.loads(path.read_text())[ADMIN_USER])

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self._procs:
            _wait_group_gone(proc, timeout=30)
        self._procs.clear()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
