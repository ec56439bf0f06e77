"""The one place that turns Airflow connections and variables into clients.

Embedded demo, tests and production differ only in what these connections hold:

- ``aws``: the S3 connection (extra ``endpoint_url`` for an S3-compatible store or the
  embedded endpoint; credentials as usual for AWS);
- ``aleph_db``: the Aleph database (Oracle in production; ``extra.sqlalchemy_url`` for the replica);
- an SFTP connection named in an ``sftp://<conn id>/path`` landing URI;
- the Variable ``aleph2alma_bucket``: the artifact bucket.

Called only from inside tasks, never at DAG parse time.

**Timeouts.** Every client built here bounds its waits, each with a default a connection's extra
may change: S3 ``S3_CONFIG`` (botocore connect/read timeouts and standard-mode retries; the
connection's ``config_kwargs`` win), the database :class:`~aleph2alma.aleph.db.DbTimeouts`, SSH/SFTP
:class:`SshTimeouts`. Alma's client has its own per-request timeout (``AlmaClient.timeout``); the
SMTP and Slack notifiers use their providers' (30 s each: the SMTP connection's ``timeout`` extra,
slack_sdk's ``WebhookClient`` default).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from aleph2alma.aleph.db import DbTimeouts, connection_extra, create_engine, url_from_connection
from aleph2alma.aleph.landing import Landing, parse_landing
from aleph2alma.errors import ConfigError
from aleph2alma.storage import ArtifactStore

if TYPE_CHECKING:
    from aleph2alma.delivery.autoextract import RemoteShell

S3_CONN_ID = "aws"
ALEPH_DB_CONN_ID = "aleph_db"
BUCKET_VARIABLE = "aleph2alma_bucket"
DEFAULT_BUCKET = "aleph2alma-artifacts"


S3_CONFIG: dict[str, Any] = {
    "connect_timeout": 10,
    "read_timeout": 120,
    "retries": {"mode": "standard", "max_attempts": 5},
}
"""botocore ``Config`` for S3 (https://docs.aws.amazon.com/botocore/latest/reference/config.html)."""


def s3_client(conn_id: str = S3_CONN_ID) -> Any:
    """An S3 client on the connection ``conn_id``, with ``S3_CONFIG`` under its own ``config_kwargs``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    hook = S3Hook(aws_conn_id=conn_id)
    defaults = Config(**S3_CONFIG)
    configured = hook.conn_config.botocore_config  # the connection's extra config_kwargs, if any
    config = defaults.merge(configured) if configured else defaults
    return hook.get_client_type(region_name=hook.region_name, config=config)


def artifact_bucket() -> str:
    from airflow.sdk import Variable

    return str(Variable.get(BUCKET_VARIABLE, default=os.environ.get("ALEPH2ALMA_BUCKET", DEFAULT_BUCKET)))


def artifact_store() -> ArtifactStore:
    return ArtifactStore(s3_client(), artifact_bucket())


def aleph_engine(conn_id: str = ALEPH_DB_CONN_ID) -> sa.Engine:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    return create_engine(
        url_from_connection(
            conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema, conn.extra
        ),
        DbTimeouts.from_extra(connection_extra(conn.extra)),
    )


@dataclass(frozen=True)
class SshTimeouts:
    """Seconds an SSH/SFTP server may keep a task waiting, each a connection extra of the same name.

    ``conn_timeout`` (TCP connect), ``banner_timeout`` and ``auth_timeout`` are the SSH provider's
    hook arguments, passed to paramiko's ``SSHClient.connect`` (apache-airflow-providers-ssh 7.0:
    https://airflow.apache.org/docs/apache-airflow-providers-ssh/7.0.1/_modules/airflow/providers/
    ssh/hooks/ssh.html — it reads only ``conn_timeout`` from the extra, with no default, so an
    unreachable host would wait for the operating system). ``io_timeout`` is ours: opening the SFTP
    channel and every read or write on it (paramiko ``Transport.channel_timeout`` and
    ``Channel.settimeout``). ``conn_retry_attempts``: the hook's own connect retries.
    """

    conn_timeout: float = 30.0
    banner_timeout: float = 30.0
    auth_timeout: float = 60.0
    io_timeout: float = 300.0
    conn_retry_attempts: int = 3

    @classmethod
    def from_extra(cls, conn_id: str, extra: dict[str, Any]) -> SshTimeouts:
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = extra.get(field.name)
            if raw is None:
                continue
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = -1.0
            if not 0 < value < math.inf or (field.type == "int" and value != int(value)):
                raise ConfigError(
                    f"connection {conn_id!r}: extra {field.name}={raw!r} must be a positive "
                    f"{'whole number' if field.type == 'int' else 'number of seconds'}"
                )
            values[field.name] = int(value) if field.type == "int" else value
        return cls(**values)


def _ssh(conn_id: str) -> tuple[Any, SshTimeouts]:
    """A connected paramiko ``SSHClient`` through the SSH provider's hook (host key, key and
    algorithm extras), its channels bounded by ``io_timeout``; and the connection's timeouts."""
    from airflow.providers.ssh.hooks.ssh import SSHHook
    from airflow.sdk import BaseHook

    t = SshTimeouts.from_extra(conn_id, BaseHook.get_connection(conn_id).extra_dejson)
    ssh = SSHHook(
        ssh_conn_id=conn_id,
        conn_timeout=math.ceil(t.conn_timeout),
        banner_timeout=t.banner_timeout,
        auth_timeout=math.ceil(t.auth_timeout),
        conn_retry_attempts=t.conn_retry_attempts,
    ).get_conn()
    try:
        transport = ssh.get_transport()
        assert transport is not None
        transport.channel_timeout = t.io_timeout
    except BaseException:
        ssh.close()
        raise
    return ssh, t


def sftp_client(conn_id: str) -> Any:
    """A paramiko ``SFTPClient`` on the connection ``conn_id``, every wait bounded (:class:`SshTimeouts`).

    The caller closes it and its SSH transport after use (``transfer.deliver_sftp`` and the SFTP
    landing do).
    """
    ssh, t = _ssh(conn_id)
    try:
        sftp = ssh.open_sftp()
        sftp.get_channel().settimeout(t.io_timeout)
    except BaseException:
        ssh.close()
        raise
    return sftp


def landing(uri: str) -> Landing:
    return parse_landing(uri, s3_client=s3_client, sftp_client=sftp_client)


ALMA_CONN_ID = "alma"


def alma_client(conn_id: str = ALMA_CONN_ID) -> Any:
    """The Alma REST client: ``extra.base_url`` (or the host) and the API key as the password.

    ``extra.per_second`` is the institution's limit (default 25) and ``extra.latency_ms`` the
    expected round trip (default 400): together they size the loader's threads
    (``alma.rate.AlmaRate``). Tasks that call Alma take the whole ``alma_api`` pool, so one
    of them at a time shares the limit.
    """
    from airflow.sdk import BaseHook

    from aleph2alma.alma.client import AlmaClient
    from aleph2alma.alma.rate import AlmaRate

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    base_url = extra.get("base_url") or conn.host or ""
    if not base_url.startswith("http"):
        base_url = f"https://{base_url}/almaws/v1"
    rate = AlmaRate.from_extra(extra)
    return AlmaClient(
        base_url=base_url, api_key=conn.password or "", per_second=rate.per_second, latency=rate.latency
    )


def aleph_shell(conn_id: str) -> RemoteShell:
    """A login on the Aleph server over the SSH connection ``conn_id`` (AutoExtract's steps), every
    wait bounded (:class:`SshTimeouts`); the caller closes it.

    Commands run through paramiko directly (``delivery.autoextract.ParamikoShell``), not the hook's
    ``exec_ssh_client_command``: that one's timeout is the silence between two outputs, not the
    command's run time, and it keeps all the output in memory.
    """
    from aleph2alma.delivery.autoextract import ParamikoShell

    ssh, t = _ssh(conn_id)
    return ParamikoShell(ssh, t.io_timeout)
