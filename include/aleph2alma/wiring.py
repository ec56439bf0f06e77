"""The one place that turns Airflow connections and variables into clients.

Embedded demo, tests and production differ only in what these connections hold:

- ``aws``: the S3 connection (extra ``endpoint_url`` for an S3-compatible store or the
  embedded endpoint; credentials as usual for AWS);
- ``aleph_db``: the Aleph database (Oracle in production; ``extra.sqlalchemy_url`` for the replica);
- an SFTP connection named in an ``sftp://<conn id>/path`` landing URI;
- the Variable ``aleph2alma_bucket``: the artifact bucket.

Called only from inside tasks, never at DAG parse time.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa

from aleph2alma.aleph.db import create_engine, url_from_connection
from aleph2alma.aleph.landing import Landing, parse_landing
from aleph2alma.storage import ArtifactStore

S3_CONN_ID = "aws"
ALEPH_DB_CONN_ID = "aleph_db"
BUCKET_VARIABLE = "aleph2alma_bucket"
DEFAULT_BUCKET = "aleph2alma-artifacts"


def s3_client(conn_id: str = S3_CONN_ID) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def artifact_bucket() -> str:
    from airflow.sdk import Variable

    return str(Variable.get(BUCKET_VARIABLE, default=os.environ.get("ALEPH2ALMA_BUCKET", DEFAULT_BUCKET)))


def artifact_store() -> ArtifactStore:
    return ArtifactStore(s3_client(), artifact_bucket())


def aleph_engine(conn_id: str = ALEPH_DB_CONN_ID) -> sa.Engine:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return create_engine(url_from_connection(conn.conn_type, conn.host, conn.port, conn.login,
                                             conn.password, conn.schema, conn.extra))


def sftp_client(conn_id: str) -> Any:
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    return SFTPHook(ssh_conn_id=conn_id).get_conn()


def landing(uri: str) -> Landing:
    return parse_landing(uri, s3_client=s3_client, sftp_client=sftp_client)


ALMA_CONN_ID = "alma"
ALMA_POOL = "alma_api"


def alma_client(conn_id: str = ALMA_CONN_ID) -> Any:
    """The Alma REST client: ``extra.base_url`` (or the host) and the API key as the password.

    ``extra.per_second`` is the institution's limit (default 25). Tasks that call Alma also
    run in the ``alma_api`` pool, so the workers together stay under it.
    """
    from airflow.sdk import BaseHook

    from aleph2alma.alma.client import AlmaClient

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    base_url = extra.get("base_url") or conn.host or ""
    if not base_url.startswith("http"):
        base_url = f"https://{base_url}/almaws/v1"
    return AlmaClient(base_url=base_url, api_key=conn.password or "", per_second=float(extra.get("per_second", 25)))
