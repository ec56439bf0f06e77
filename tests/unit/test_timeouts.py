"""Every network client built from an Airflow connection bounds its waits (issue 9, C9).

Servers that never answer are endless stalls, so no test races a timeout: the timeout is the
only way out of the wait. What stays unverified here: a real Oracle listener (the Oracle timeouts
are checked as the arguments python-oracledb receives), a real S3 endpoint that stalls.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import sqlalchemy as sa

from aleph2alma import wiring
from aleph2alma.aleph.db import AlephConnectionError, DbTimeouts, create_engine
from aleph2alma.delivery.transfer import is_transient
from aleph2alma.errors import ConfigError
from sftp_server import SftpTestServer, sftp_server_fixture  # noqa: F401  (the sftp_server fixture)


@pytest.fixture
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port that accepts connections and never says a word; the accepted sockets, counted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def _sftp_connection(server: SftpTestServer, **extra: Any) -> str:
    key = server.host_key
    extra = {"host_key": f"{key.get_name()} {key.get_base64()}", **extra}  # host-key checking on
    return json.dumps({**server.airflow_connection(), "extra": extra})


# --- SSH / SFTP ------------------------------------------------------------------------------


def test_sftp_client_bounds_connect_banner_auth_and_every_channel_wait(
    sftp_server: SftpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MFT", _sftp_connection(sftp_server, io_timeout=7, banner_timeout=4, auth_timeout=5)
    )
    sftp = wiring.sftp_client("mft")
    transport = sftp.get_channel().get_transport()
    assert (transport.banner_timeout, transport.auth_timeout) == (4, 5)
    assert (transport.channel_timeout, sftp.get_channel().gettimeout()) == (7, 7)
    assert sftp.stat("/incoming").st_size is not None
    sftp.close()
    transport.close()
    assert sftp_server.wait_closed() == 0


def test_sftp_client_defaults_when_the_connection_says_nothing(
    sftp_server: SftpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MFT", _sftp_connection(sftp_server))
    sftp = wiring.sftp_client("mft")
    transport = sftp.get_channel().get_transport()
    defaults = wiring.SshTimeouts()
    assert (transport.banner_timeout, transport.auth_timeout, sftp.get_channel().gettimeout()) == (
        defaults.banner_timeout,
        defaults.auth_timeout,
        defaults.io_timeout,
    )
    transport.close()


def test_an_ssh_server_that_never_sends_its_banner_is_given_up(
    silent_server: tuple[int, list[socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, accepted = silent_server
    extra = {"banner_timeout": 0.5, "conn_retry_attempts": 1, "no_host_key_check": False}
    monkeypatch.setenv(
        "AIRFLOW_CONN_MUTE",
        json.dumps({"conn_type": "sftp", "host": "127.0.0.1", "port": port, "login": "x", "extra": extra}),
    )
    with pytest.raises(paramiko.SSHException, match="banner") as caught:
        wiring.sftp_client("mute")
    assert is_transient(caught.value), "a delivery retries it on a fresh connection"
    assert len(accepted) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"io_timeout": "soon"}, "extra io_timeout='soon' must be a positive number of seconds"),
        ({"conn_timeout": 0}, "extra conn_timeout=0 must be a positive number of seconds"),
        ({"conn_retry_attempts": 1.5}, "extra conn_retry_attempts=1.5 must be a positive whole number"),
    ],
)
def test_bad_ssh_timeouts_are_a_one_line_config_error(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"connection 'mft': {message}"):
        wiring.SshTimeouts.from_extra("mft", extra)


# --- database --------------------------------------------------------------------------------


def test_oracle_gets_a_tcp_connect_timeout_and_a_call_timeout_per_round_trip() -> None:
    """python-oracledb's ``tcp_connect_timeout`` covers the TCP connect only: a listener that
    accepts and never answers is left to the task's execution_timeout (python-oracledb has no
    overall connect timeout: https://github.com/oracle/python-oracledb/issues/451)."""
    engine = create_engine(
        "oracle+oracledb://u:p@db.invalid:1521/?service_name=ALEPH", DbTimeouts(connect=12, call=90)
    )
    seen: dict[str, Any] = {}

    @sa.event.listens_for(engine, "do_connect")
    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise ConnectionAbortedError("captured")

    with pytest.raises(ConnectionAbortedError):
        engine.connect()
    assert seen["tcp_connect_timeout"] == 12

    class DbapiConnection:
        call_timeout = 0

    conn = DbapiConnection()
    [bound] = [fn for fn in engine.pool.dispatch.connect if fn.__name__ == "_bound_each_call"]
    bound(conn, None)
    assert conn.call_timeout == 90_000, "milliseconds, set on every new connection"


def test_postgresql_connect_to_a_silent_server_times_out(
    silent_server: tuple[int, list[socket.socket]],
) -> None:
    port, accepted = silent_server
    engine = create_engine(f"postgresql+psycopg://u:p@127.0.0.1:{port}/aleph", DbTimeouts(connect=0.5))
    with pytest.raises(sa.exc.OperationalError, match="timeout"):
        engine.connect()
    assert len(accepted) >= 1


def test_db_timeouts_come_from_the_connection_extra() -> None:
    assert DbTimeouts.from_extra({"connect_timeout": "5", "call_timeout": 60}) == DbTimeouts(5, 60)
    assert DbTimeouts.from_extra({}) == DbTimeouts()
    with pytest.raises(AlephConnectionError, match="call_timeout=-1 must be a positive number of seconds"):
        DbTimeouts.from_extra({"call_timeout": -1})


# --- S3 --------------------------------------------------------------------------------------


def test_s3_client_has_connect_and_read_timeouts_and_the_connection_may_change_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = {"conn_type": "aws", "login": "k", "password": "s", "extra": {"region_name": "eu-west-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_S3_PLAIN", json.dumps(plain))
    config = wiring.s3_client("s3_plain").meta.config
    assert (config.connect_timeout, config.read_timeout) == (10, 120)
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}  # botocore: 1 + 5 retries
    tuned = {**plain, "extra": {"region_name": "eu-west-1", "config_kwargs": {"read_timeout": 600}}}
    monkeypatch.setenv("AIRFLOW_CONN_S3_TUNED", json.dumps(tuned))
    config = wiring.s3_client("s3_tuned").meta.config
    assert (config.connect_timeout, config.read_timeout) == (10, 600)


# --- SSH connections closed after use ---------------------------------------------------------


def test_the_sftp_landing_closes_every_connection_it_opens(
    sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    from aleph2alma.aleph.landing import LandingError, parse_landing

    (sftp_server.root / "exports").mkdir()
    (sftp_server.root / "exports" / "BNU01.seq").write_bytes(b"000000001 LDR   L ^^^^^nam^^22^^^^^^a^4500\n")
    landing = parse_landing("sftp://aleph/exports", sftp_client=lambda conn_id: sftp_server.connect())
    size = landing.size("BNU01.seq")
    assert b"".join(landing.read_range("BNU01.seq", 0, size)).startswith(b"000000001")
    landing.fetch("BNU01.seq", tmp_path / "BNU01.seq")
    with pytest.raises(LandingError, match="BNU09.seq is not on the Aleph server"):
        landing.size("BNU09.seq")
    assert sftp_server.connections == 4 and sftp_server.wait_closed() == 0
