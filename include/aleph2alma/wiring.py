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
