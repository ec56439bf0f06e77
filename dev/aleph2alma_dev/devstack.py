"""The embedded stack for the demo and the end-to-end tests.

Starts, in a project-local folder, an S3-compatible endpoint (moto's server mode) with the
artifact bucket, and ``airflow standalone`` (SQLite metadata DB, LocalExecutor, examples
off) wired to it through the same connections a production deployment uses. Nothing here
is used by DAGs or tasks; production differs only in the connections' contents.

``executor="celery"`` runs the distributed mode of docker-compose.yaml instead: a throw-away
PostgreSQL database as metadata DB and Celery result backend, a dedicated Redis database as
broker, and api-server, scheduler, dag-processor, triggerer and ``airflow celery worker`` as
separate processes (each its own process group and log in the state dir), ``workers`` Celery
workers among them.

A stack killed outright (no ``stop()``) leaves its database and Redis claim behind: each records
its owner (host, pid, the state dir's lock file), and the next distributed start drops those
whose owner is gone (``reap_stale_backends``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
from sqlalchemy.engine import make_url

from aleph2alma.refs import XCOM_CLASSES

# dev/aleph2alma_dev/devstack.py → the repository root (dags/, plugins/, include/config/, .stack/).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "aleph2alma-artifacts"
LOOPBACK = "127.0.0.1"
ADMIN_USER = "admin"
EXECUTORS = ("local", "celery")
# The distributed mode's backing services (the machine's own, not started by the stack).
PG_ADMIN_URL = os.environ.get("ALEPH2ALMA_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ALEPH2ALMA_REDIS_URL", "redis://127.0.0.1:6379")
# Marks a Redis database as taken by a running stack (see claim_redis_db).
REDIS_CLAIM_KEY = "aleph2alma:embedded-stack"


class StackError(RuntimeError):
    """A stack component did not come up; the message says which and where its log is."""


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner can read or write (created empty if missing)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    return path


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


def distributed_problems(pg_admin_url: str = PG_ADMIN_URL, redis_url: str = REDIS_URL) -> list[str]:
    """Why the distributed mode cannot start here (PostgreSQL or Redis unreachable); empty if it can."""
    import psycopg
    import redis

    problems = []
    try:
        psycopg.connect(pg_admin_url, connect_timeout=3).close()
    except psycopg.Error as exc:
        problems.append(f"PostgreSQL unreachable at {pg_admin_url}: {str(exc).strip()}")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        problems.append(f"Redis unreachable at {redis_url}: {exc}")
    return problems


@dataclass(frozen=True)
class Owner:
    """The process that provisioned a stack's throw-away backends, recorded with them (a PostgreSQL
    database's comment, the Redis claim's value) so a later start can tell a dead stack's leftovers.

    ``lock`` is a file the owner holds an exclusive ``flock`` on while it lives: a pid alone may
    have been reused by another process since the owner died."""

    host: str
    pid: int
    lock: str

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "lock": self.lock}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Owner | None:
        """The recorded owner; None for anything else (an older stack's plain marker, no record)."""
        try:
            data = json.loads(text or "")
            return cls(str(data["host"]), int(data["pid"]), str(data["lock"]))
        except (ValueError, TypeError, KeyError):
            return None

    def alive(self) -> bool:
        """False only when the owner is surely gone: its pid is, or the pid lives but does not
        hold the lock (reused since). Another host's owner, or one whose lock file is gone (its
        state dir removed under it), counts as alive."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        held = _lock_held(Path(self.lock))
        return True if held is None else held


def _lock_held(path: Path) -> bool | None:
    """Whether a process holds ``path``'s flock; None when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this call took
    return False


def create_database(pg_admin_url: str, owner: Owner, prefix: str = "aleph2alma_af_") -> tuple[str, str]:
    """A new, empty PostgreSQL database, ``owner`` as its comment: its name and SQLAlchemy URL
    (psycopg 3 driver)."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}{secrets.token_hex(5)}"
    with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(owner.to_json()))
        )
    url = make_url(pg_admin_url).set(drivername="postgresql+psycopg", database=name)
    return name, url.render_as_string(hide_password=False)


def drop_database(pg_admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def stack_databases(pg_admin_url: str, prefix: str = "aleph2alma_af_") -> dict[str, Owner | None]:
    """The stacks' databases on the server and their recorded owners."""
    import psycopg

    with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=5) as admin:
        rows = admin.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
            " WHERE starts_with(datname, %s)",
            (prefix,),
        ).fetchall()
    return {name: Owner.from_json(comment) for name, comment in rows}


def drop_stale_databases(pg_admin_url: str, prefix: str = "aleph2alma_af_") -> list[str]:
    """Drops the stacks' databases whose recorded owner is gone; returns their names.

    One without a record (an older stack's, or one being created this instant) is kept: its
    owner cannot be told alive or dead."""
    stale = [
        name
        for name, owner in stack_databases(pg_admin_url, prefix).items()
        if owner is not None and not owner.alive()
    ]
    for name in stale:
        drop_database(pg_admin_url, name)
    return stale


def claim_redis_db(redis_url: str, owner: Owner) -> str:
    """The URL of an empty Redis database (1-15; 0 is left to others), claimed for ``owner``."""
    import redis

    base = redis_url.rstrip("/")
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base}/{db}", socket_connect_timeout=3)
        # Two stacks starting at once may both see the database empty: only one sets the claim.
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, owner.to_json(), nx=True):
            return f"{base}/{db}"
    raise StackError(f"no empty Redis database (1-15) at {redis_url} for the Celery broker")


# Flushes the database only if the claim still holds the owner the caller read: a claim taken
# anew between the read and the flush is not someone else's to wipe.
_RELEASE_IF_OWNED = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('FLUSHDB')
  return 1
end
return 0
"""


def release_redis_db(url: str, owner: Owner | bytes | str) -> bool:
    """Flushes the database at ``url`` if ``owner`` (or that exact claim value) holds it."""
    import redis

    value = owner.to_json() if isinstance(owner, Owner) else owner
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    return bool(client.eval(_RELEASE_IF_OWNED, 1, REDIS_CLAIM_KEY, value))


def release_stale_redis_claims(redis_url: str) -> list[str]:
    """Flushes the Redis databases (1-15) claimed by a stack that is gone; returns their URLs.

    A claim that names no owner (an older stack's plain marker) is kept, as an unclaimed
    database is (it may be someone else's)."""
    import redis

    base = redis_url.rstrip("/")
    released = []
    for db in range(1, 16):
        url = f"{base}/{db}"
        claim = redis.Redis.from_url(url, socket_connect_timeout=3).get(REDIS_CLAIM_KEY)
        owner = Owner.from_json(claim)
        if claim is not None and owner is not None and not owner.alive():
            if release_redis_db(url, claim):
                released.append(url)
    return released


def reap_stale_backends(pg_admin_url: str, redis_url: str) -> tuple[list[str], list[str]]:
    """What killed stacks left behind, cleaned: the dropped databases, the released Redis URLs."""
    return drop_stale_databases(pg_admin_url), release_stale_redis_claims(redis_url)


def _wait_log(
    log: Path, marker: str, what: str, timeout: float, proc: subprocess.Popen[bytes], since: int = 0
) -> None:
    """Until ``marker`` is in ``log`` past its first ``since`` bytes (an earlier process's lines)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; see {log}")
        if log.exists() and marker.encode() in log.read_bytes()[since:]:
            return
        time.sleep(0.5)
    raise StackError(f"{what} did not log {marker!r} within {timeout:.0f} s; see {log}")


def _heartbeat_after(health: dict[str, Any], after: float) -> bool:
    """Whether the health report's latest scheduler heartbeat is past ``after`` (Unix time)."""
    if not after:
        return True
    beat = health.get("scheduler", {}).get("latest_scheduler_heartbeat")
    return bool(beat) and datetime.fromisoformat(str(beat).replace("Z", "+00:00")).timestamp() > after


@dataclass
class EmbeddedStack:
    """S3 endpoint + Airflow (standalone, or distributed with Celery) under ``state_dir``
    (default ``.stack/``).

    With ``executor="celery"``, empty ``sql_alchemy_conn``/``broker_url``/``result_backend``
    mean: a throw-away database ``aleph2alma_af_<random>`` created through ``pg_admin_url``
    (dropped on stop), an empty Redis database at ``redis_url`` (flushed on stop), and that
    PostgreSQL database as result backend. Given ones are used as they are and kept. ``workers``
    Celery workers run, worker ``i`` as ``worker_node(i)`` logging to ``worker_log(i)``.
    """

    state_dir: Path = PROJECT_ROOT / ".stack"
    api_port: int = 8080
    # The Airflow UI/API's address: loopback unless told otherwise (e.g. "0.0.0.0" to reach the UI
    # from another machine). The S3 endpoint and the Alma emulator always stay on 127.0.0.1.
    listen_host: str = LOOPBACK
    s3_port: int = 0
    alma_port: int = 0
    parallelism: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    executor: str = "local"
    sql_alchemy_conn: str = ""
    broker_url: str = ""
    result_backend: str = ""
    pg_admin_url: str = PG_ADMIN_URL
    redis_url: str = REDIS_URL
    worker_concurrency: int = 2
    workers: int = 1
    # The stack's credentials: the demo's by default; tests set distinctive ones and search every
    # output for them (tests/e2e/test_secrets_in_outputs.py). The Alma emulator accepts only
    # ``alma_api_key``; an empty ``initial_admin_password`` lets the simple auth manager generate one.
    s3_secret_key: str = "testing"
    alma_api_key: str = "demo-api-key"
    initial_admin_password: str = ""
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _components: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)
    _worker_procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    _lock_fd: int = -1
    _created_db: str = ""
    _claimed_broker: str = ""
    _log_ports: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, not {self.executor!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, not {self.workers}")

    @property
    def distributed(self) -> bool:
        return self.executor == "celery"

    @property
    def worker_name(self) -> str:
        """The first Celery worker's node name prefix (``<worker_name>@<host>``)."""
        return f"aleph2alma-{self.api_port}"

    def worker_node(self, i: int) -> str:
        """Worker ``i``'s node name prefix: ``worker_name``, then ``worker_name-1``, ``-2``, ..."""
        return self.worker_name if i == 0 else f"{self.worker_name}-{i}"

    def worker_log(self, i: int) -> Path:
        return self.state_dir / ("celery-worker.log" if i == 0 else f"celery-worker-{i}.log")

    @property
    def owner(self) -> Owner:
        """This stack's owner, as recorded with its throw-away database and Redis claim."""
        return Owner(socket.gethostname(), os.getpid(), str(self.state_dir / "stack.lock"))

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
        """Where the stack's own clients reach the API (loopback too when it listens on every address)."""
        host = LOOPBACK if self.listen_host in ("", "0.0.0.0", "::", "localhost") else self.listen_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api_port}"

    def s3_client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key=self.s3_secret_key,
        )

    def env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        aws = {
            "conn_type": "aws",
            "login": "testing",
            "password": self.s3_secret_key,
            "extra": {"endpoint_url": self.s3_endpoint, "region_name": "us-east-1"},
        }
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # XCom carries aleph2alma.refs types: the API server and the tasks rebuild them.
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES": XCOM_CLASSES,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__API__HOST": self.listen_host,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret(),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_AWS": json.dumps(aws),
            "AIRFLOW_CONN_ALMA": json.dumps(
                {
                    "conn_type": "http",
                    "password": self.alma_api_key,
                    "extra": {"base_url": f"{self.alma_url}/almaws/v1", "per_second": 25},
                }
            ),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW_VAR_ALEPH2ALMA_BUCKET": BUCKET,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        if self._log_ports[0]:
            # Two stacks on one machine must not share the log servers' ports (8793/8794 by default).
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(self._log_ports[0])
            env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(self._log_ports[1])
        if self.distributed:
            env.update(self._distributed_env())
        env.update(self.extra_env)
        return env

    def _distributed_env(self) -> dict[str, str]:
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
        }
        if self.sql_alchemy_conn:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.sql_alchemy_conn
            url = make_url(self.sql_alchemy_conn)
            if url.drivername == "postgresql+psycopg":
                # Airflow derives its async URL as postgresql+asyncpg, a driver this project does
                # not install; psycopg 3 is async-capable under SQLAlchemy's psycopg_async dialect.
                async_url = url.set(drivername="postgresql+psycopg_async").render_as_string(
                    hide_password=False
                )
                env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = async_url
        if self.broker_url:
            env["AIRFLOW__CELERY__BROKER_URL"] = self.broker_url
        if self.result_backend:
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = self.result_backend
        return env

    def jwt_secret(self) -> str:
        """A per-stack signing key, long enough for HS512, kept beside the stack's state (mode 0600)."""
        path = self.state_dir / "jwt_secret"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            private_file(path).write_text(secrets.token_hex(64))
        private_file(path)  # a key written by an older stack, readable by all, is closed too
        return path.read_text().strip()

    def _spawn(self, args: list[str], log_name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.state_dir / log_name
        handle = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        proc = subprocess.Popen(
            args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
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
        # The dev command line (aleph2alma-dev) as a module: this interpreter imports this package.
        proc, log = self._spawn(
            [
                sys.executable,
                "-m",
                "aleph2alma_dev",
                "demo",
                "alma",
                "--port",
                str(self.alma_port),
                "--db",
                str(self.state_dir / "alma-emulator.sqlite"),
                "--api-key",
                self.alma_api_key,
            ],
            "alma-emulator.log",
        )
        _wait_http(f"{self.alma_url}/_emulator/counts", "the Alma API emulator", log, 60, proc)

    def start_airflow(self, timeout: float = 420) -> None:
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        # The simple auth manager appends the admin's password to this file: created 0600 first.
        # A password already there is kept (neither regenerated nor printed).
        private_file(self.password_file)
        if self.initial_admin_password and not self.password_file.read_text().strip():
            self.password_file.write_text(json.dumps({ADMIN_USER: self.initial_admin_password}))
        self._log_ports = (free_port(), free_port())
        if self.distributed:
            self._start_distributed(timeout)
            return
        airflow = str(Path(sys.executable).parent / "airflow")
        proc, log = self._spawn([airflow, "standalone"], "airflow.log")
        _wait_http(f"{self.api_url}/api/v2/monitor/health", "Airflow (api-server)", log, timeout, proc)

    def provision_backends(self) -> None:
        """The throw-away metadata database and the dedicated broker database, unless given; first,
        what killed stacks left on the same servers is cleaned."""
        self._hold_owner_lock()
        reap_stale_backends(self.pg_admin_url, self.redis_url)
        if not self.sql_alchemy_conn:
            self._created_db, self.sql_alchemy_conn = create_database(self.pg_admin_url, self.owner)
        if not self.broker_url:
            self.broker_url = self._claimed_broker = claim_redis_db(self.redis_url, self.owner)
        if not self.result_backend:
            self.result_backend = f"db+{self.sql_alchemy_conn}"

    def _hold_owner_lock(self) -> None:
        """The lock that tells others this stack's owner lives (see ``Owner``), held until stop."""
        if self._lock_fd >= 0:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.owner.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StackError(f"another stack runs in {self.state_dir} (it holds {self.owner.lock})") from exc
        self._lock_fd = fd

    def _run_once(self, args: list[str], log_name: str, what: str, timeout: float) -> None:
        log = self.state_dir / log_name
        with open(log, "ab") as handle:
            try:
                done = subprocess.run(
                    args,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    cwd=PROJECT_ROOT,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"{what} did not finish within {timeout:.0f} s; see {log}") from exc
        if done.returncode != 0:
            raise StackError(f"{what} exited with code {done.returncode}; see {log}")

    def _start_distributed(self, timeout: float) -> None:
        """What ``airflow standalone`` does, one process per component, with Celery workers."""
        deadline = time.monotonic() + timeout
        self.provision_backends()
        bin_dir = Path(sys.executable).parent
        airflow = str(bin_dir / "airflow")
        self._run_once([airflow, "db", "migrate"], "db-migrate.log", "airflow db migrate", timeout)
        # As standalone does before its components start: the admin's password is generated once,
        # into the file every api-server worker then reads.
        self._run_once(
            [
                str(bin_dir / "python"),
                "-c",
                "from airflow.api_fastapi.app import create_auth_manager; create_auth_manager().init()",
            ],
            "auth-init.log",
            "the simple auth manager's user set-up",
            120,
        )
        api, api_log = self._spawn(
            [airflow, "api-server", "--host", self.listen_host, "--port", str(self.api_port)],
            "api-server.log",
        )
        for name in ("scheduler", "dag-processor", "triggerer"):
            self._components[name] = self._spawn([airflow, name], f"{name}.log")
        since = {i: self._spawn_worker(i) for i in range(self.workers)}
        remaining = max(deadline - time.monotonic(), 30)
        _wait_http(f"{self.api_url}/api/v2/monitor/health", "Airflow (api-server)", api_log, remaining, api)
        for i, offset in since.items():
            self._wait_worker_ready(i, offset, max(deadline - time.monotonic(), 30))
        self._wait_healthy(max(deadline - time.monotonic(), 30), self._components)

    def _spawn_worker(self, i: int) -> int:
        """Starts Celery worker ``i``; returns its log's size before (where its own lines begin)."""
        log = self.worker_log(i)
        since = log.stat().st_size if log.exists() else 0
        args = [
            str(Path(sys.executable).parent / "airflow"),
            "celery",
            "worker",
            "--concurrency",
            str(self.worker_concurrency),
            "--celery-hostname",
            f"{self.worker_node(i)}@%h",
        ]
        if i:
            # One log server per host and port: the first worker's serves every worker's task
            # logs, which all land in the same AIRFLOW_HOME/logs on this machine.
            args.append("--skip-serve-logs")
        self._worker_procs[i], _ = self._spawn(args, log.name)
        return since

    def _wait_worker_ready(self, i: int, since: int, timeout: float) -> None:
        what = f"Celery worker {i} ({self.worker_node(i)})"
        _wait_log(self.worker_log(i), " ready.", what, timeout, self._worker_procs[i], since)

    def worker_pid(self, i: int) -> int:
        """Worker ``i``'s main process (its process group's leader)."""
        return self._worker_procs[i].pid

    def kill_worker(self, i: int) -> None:
        """SIGKILL to worker ``i``'s whole process group, as a machine failure would: the pool's
        processes and their task runners die with it, nothing is acknowledged or handed back."""
        proc = self._worker_procs[i]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_group_gone(proc, timeout=30)

    def restart_scheduler(self, timeout: float = 180) -> None:
        """Stops the scheduler (SIGTERM, as a deployment does), starts a new one and waits until it
        heartbeats: the new scheduler adopts the running tasks the old one queued."""
        proc, _ = self._components["scheduler"]
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        _wait_group_gone(proc, timeout=60)
        started = time.time()
        airflow = str(Path(sys.executable).parent / "airflow")
        self._components["scheduler"] = self._spawn([airflow, "scheduler"], "scheduler.log")
        self._wait_healthy(timeout, self._components, heartbeat_after=started)

    def _wait_healthy(
        self,
        timeout: float,
        components: dict[str, tuple[subprocess.Popen[bytes], Path]],
        heartbeat_after: float = 0,
    ) -> None:
        """Until /monitor/health reports the scheduler, triggerer and dag-processor heartbeating
        (the scheduler since ``heartbeat_after``, a Unix time, when given: a new scheduler)."""
        deadline = time.monotonic() + timeout
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for name, (proc, log) in components.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with code {proc.returncode}; see {log}")
            try:
                health = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
            except httpx.HTTPError:
                health = {}
            if all(
                health.get(part, {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ) and _heartbeat_after(health, heartbeat_after):
                return
            time.sleep(1)
        raise StackError(
            f"Airflow components not healthy within {timeout:.0f} s: {health}; "
            f"see the logs in {self.state_dir}"
        )

    def component_pid(self, name: str) -> int:
        """The pid of a distributed stack's component (``scheduler``, ``dag-processor``, ``triggerer``)."""
        return self._components[name][0].pid

    def start(self) -> EmbeddedStack:
        self.start_s3()
        self.start_alma_emulator()
        self.start_airflow()
        return self

    def airflow_client(self) -> Any:
        """A REST client logged in as the stack's admin (an ``airflow_api.AirflowClient``)."""
        from aleph2alma_dev.airflow_api import AirflowClient

        return AirflowClient(self.api_url, ADMIN_USER, self.admin_password())

    def artifact_store(self) -> Any:
        """The artifact bucket on the stack's S3 endpoint (a ``storage.ArtifactStore``)."""
        from aleph2alma.storage import ArtifactStore

        return ArtifactStore(self.s3_client(), BUCKET)

    @property
    def password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    def admin_password(self) -> str:
        """The admin's password, once the API server has generated it (within 30 s)."""
        deadline = time.monotonic() + 30
        while True:
            text = self.password_file.read_text() if self.password_file.exists() else ""
            try:
                passwords = json.loads(text) if text.strip() else {}
            except json.JSONDecodeError:  # read while the API server was writing it
                passwords = {}
            if ADMIN_USER in passwords or time.monotonic() > deadline:
                return str(passwords[ADMIN_USER])
            time.sleep(0.5)

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
        self._components.clear()
        self._worker_procs.clear()
        try:
            if self._created_db:
                drop_database(self.pg_admin_url, self._created_db)
                if self.result_backend == f"db+{self.sql_alchemy_conn}":
                    self.result_backend = ""
                self._created_db = self.sql_alchemy_conn = ""
        finally:
            if self._claimed_broker:
                release_redis_db(self._claimed_broker, self.owner)
                self._claimed_broker = self.broker_url = ""
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def __enter__(self) -> EmbeddedStack:
        try:
            return self.start()
        except BaseException:
            self.stop()  # what did start must not outlive a failed start
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
