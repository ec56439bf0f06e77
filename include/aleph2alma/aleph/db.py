"""Connections to the Aleph database: Oracle in production, the demo replica elsewhere."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

_DIALECTS = {
    "oracle": "oracle+oracledb",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "sqlite": "sqlite",
}


class AlephConnectionError(ValueError):
    """The ``aleph_db`` connection does not describe a database we can read."""


def url_from_connection(
    conn_type: str | None,
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    schema: str | None,
    extra: str | dict[str, Any] | None,
) -> str:
    """A SQLAlchemy URL from an Airflow connection's fields.

    ``extra.sqlalchemy_url`` wins when given (the demo replica uses it). For Oracle, the
    service name comes from ``extra.service_name`` or the connection's schema field.
    """
    extras = connection_extra(extra)
    if extras.get("sqlalchemy_url"):
        return str(extras["sqlalchemy_url"])
    dialect = _DIALECTS.get((conn_type or "").lower())
    if dialect is None:
        raise AlephConnectionError(
            f"aleph_db connection type {conn_type!r} is not supported; use oracle, postgres or sqlite, "
            "or give extra.sqlalchemy_url"
        )
    if dialect == "sqlite":
        return f"sqlite:///{host or schema}"
    query = {}
    database = schema
    if dialect.startswith("oracle"):
        database = None
        query["service_name"] = extras.get("service_name") or schema or ""
    url = sa.URL.create(
        dialect,
        username=login,
        password=password,
        host=host,
        port=port,
        database=database,
        query={k: v for k, v in query.items() if v},
    )
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class DbTimeouts:
    """Seconds a database may keep a task waiting; ``extra.connect_timeout`` / ``extra.call_timeout``.

    ``connect``: opening a connection. ``call``: one round trip — executing a query up to its first
    rows, or fetching the next batch; a bulk read of a large Z-table is many round trips, each
    bounded, so the default leaves room for Oracle to sort a big table before its first row.
    No pool timeout applies: engines use ``NullPool``, nothing ever waits for a pooled connection.
    """

    connect: float = 30.0
    call: float = 1800.0

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> DbTimeouts:
        values = {}
        for key, field in (("connect_timeout", "connect"), ("call_timeout", "call")):
            if extra.get(key) is None:
                continue
            try:
                values[field] = float(extra[key])
            except (TypeError, ValueError):
                values[field] = -1.0
            if not 0 < values[field] < math.inf:
                raise AlephConnectionError(
                    f"aleph_db extra {key}={extra[key]!r} must be a positive number of seconds"
                )
        return cls(**values)


def connection_extra(extra: str | dict[str, Any] | None) -> dict[str, Any]:
    """A connection's extra as a dict ("" and None are {})."""
    extras = json.loads(extra) if isinstance(extra, str) and extra else (extra or {})
    if not isinstance(extras, dict):
        raise AlephConnectionError("aleph_db extra must be a JSON object")
    return extras


def create_engine(url: str, timeouts: DbTimeouts = DbTimeouts()) -> sa.Engine:
    """An engine for bulk reads: no pooling surprises across forked task processes; every wait bounded.

    Oracle (python-oracledb): ``tcp_connect_timeout`` (seconds) and ``Connection.call_timeout``
    (milliseconds, per round trip), https://python-oracledb.readthedocs.io/en/latest/api_manual/
    module.html#oracledb.connect and .../connection.html#Connection.call_timeout. PostgreSQL
    (libpq via psycopg): ``connect_timeout`` (whole seconds, at least 2) and ``statement_timeout``
    (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-CONNECT-TIMEOUT).
    SQLite (the demo replica, a local file): ``timeout``, the wait for a lock.
    """
    backend = sa.make_url(url).get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "oracle":
        connect_args["tcp_connect_timeout"] = timeouts.connect
    elif backend == "postgresql":
        connect_args["connect_timeout"] = max(2, math.ceil(timeouts.connect))
        connect_args["options"] = f"-c statement_timeout={math.ceil(timeouts.call * 1000)}"
    elif backend == "sqlite":
        connect_args["timeout"] = timeouts.connect
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args)
    if backend == "oracle":
        call_timeout_ms = math.ceil(timeouts.call * 1000)

        @sa.event.listens_for(engine, "connect")
        def _bound_each_call(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.call_timeout = call_timeout_ms

    return engine
