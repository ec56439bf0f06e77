"""Connections to the Aleph database: Oracle in production, the demo replica elsewhere."""

from __future__ import annotations

import json
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


def url_from_connection(conn_type: str | None, host: str | None, port: int | None, login: str | None,
                        password: str | None, schema: str | None, extra: str | dict[str, Any] | None) -> str:
    """A SQLAlchemy URL from an Airflow connection's fields.

    ``extra.sqlalchemy_url`` wins when given (the demo replica uses it). For Oracle, the
    service name comes from ``extra.service_name`` or the connection's schema field.
    """
    extras = json.loads(extra) if isinstance(extra, str) and extra else (extra or {})
    if not isinstance(extras, dict):
        raise AlephConnectionError("aleph_db extra must be a JSON object")
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
    url = sa.URL.create(dialect, username=login, password=password, host=host, port=port,
                        database=database, query={k: v for k, v in query.items() if v})
    return url.render_as_string(hide_password=False)


def create_engine(url: str) -> sa.Engine:
    """An engine for bulk reads: no pooling surprises across forked task processes."""
    return sa.create_engine(url, poolclass=sa.pool.NullPool)
