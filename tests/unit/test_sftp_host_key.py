"""SFTP connections check the server's host key: the production wiring (``wiring.sftp_client``,
Airflow's SFTPHook) connects to a server whose key is the connection's ``host_key`` and refuses one
whose key differs, or an unknown server when no key is pinned. The test server's connection
(``SftpTestServer.airflow_connection``) and .env.example's SFTP examples pin the key and keep
``no_host_key_check`` false.
"""

from __future__ import annotations

import json
from pathlib import Path

import paramiko
import pytest

from sftp_server import SftpTestServer

# An Ed25519 public key no test server has (generated once for this test).
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKshCDZaf+QsufDzD8iVxHoVKMsozp9tcWrQ0pEAidQW"


@pytest.fixture(autouse=True)
def no_known_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.ssh/known_hosts of the machine running the tests takes part."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def connect(conn: dict, monkeypatch: pytest.MonkeyPatch) -> paramiko.SFTPClient:
    from aleph2alma import wiring

    monkeypatch.setenv("AIRFLOW_CONN_TEST_MFT", json.dumps(conn))
    return wiring.sftp_client("test_mft")


def test_the_test_servers_connection_pins_its_host_key(
    sftp_server: SftpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sftp_server.airflow_connection()
    assert conn["extra"] == {"host_key": sftp_server.host_key_line, "no_host_key_check": False}
    sftp = connect(conn, monkeypatch)
    try:
        assert sftp.listdir("/") == sorted(p.name for p in sftp_server.root.iterdir())
    finally:
        sftp.close()


def test_a_server_with_another_host_key_is_refused(
    sftp_server: SftpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sftp_server.airflow_connection()
    conn["extra"]["host_key"] = OTHER_KEY
    with pytest.raises(paramiko.BadHostKeyException):
        connect(conn, monkeypatch)
    assert sftp_server.bytes_written == 0


def test_an_unknown_server_is_refused_when_no_key_is_pinned(
    sftp_server: SftpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sftp_server.airflow_connection()
    del conn["extra"]["host_key"]
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(conn, monkeypatch)
