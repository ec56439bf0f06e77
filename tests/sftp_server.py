"""A real SFTP server on localhost for tests: asyncssh in a background thread, chrooted to a directory.

It speaks the SSH/SFTP wire protocol, so clients are the real thing: paramiko's
``SFTPClient`` (what Airflow's ``SFTPHook.get_conn()`` returns) connects with a password and
checks the server's generated host key. Faults a migration file-transfer server can show are
switches on :attr:`SftpTestServer.faults`:

- ``flip_byte_at``: every write covering that file offset stores the byte flipped (corruption);
- ``drop_after``: the first write reaching that file offset stores half of its data, then the
  server drops the connection (an interrupted transfer); with ``drop_leaves_hole`` it stores the
  *second* half instead, leaving a hole before it, as a server applying pipelined writes out of
  order can (the ``.part`` is as long as if the whole write had landed);
- ``drop_on_rename``: the next rename drops the connection ``"before"`` renaming, or ``"after"``
  renaming but before answering (the client cannot tell whether it happened);
- ``stall_after``: the first write reaching that file offset is never answered, and neither is
  anything after it on that connection (a hung server: only the client's I/O timeout ends it);
- ``exec_sha256sum``: accept ``sha256sum -- <path>`` over an exec channel (paths inside the
  chroot), as an MFT server with a restricted shell might; otherwise every exec is refused;
- ``exec_wrong_digest``: that command answers a wrong digest (a shell seeing other paths).

Counters (``connections``, ``bytes_written``, ``written_per_connection``, ``execs``, ``renames``)
let tests see what the client did; :meth:`SftpTestServer.wait_closed` waits until the server has
seen every connection close and says how many are still open.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest

from aleph2alma_dev.loopback_ssh import LoopbackSshServer

USERNAME = "mft"


@dataclass
class Faults:
    """Fault switches; see the module docstring. Tests flip them while the server runs."""

    flip_byte_at: int | None = None
    drop_after: int | None = None
    drop_leaves_hole: bool = False
    drop_on_rename: str | None = None  # "before" | "after"
    stall_after: int | None = None
    exec_sha256sum: bool = False
    exec_wrong_digest: bool = False


class SftpTestServer(LoopbackSshServer):
    """``start()`` listens on a free port of 127.0.0.1; ``connect()`` returns a paramiko SFTP client."""

    thread_name = "sftp-test-server"

    def __init__(self, root: Path, *, username: str = USERNAME, password: str | None = None) -> None:
        super().__init__(root, username=username, password=password)
        self.faults = Faults()
        self.connections = 0
        self.bytes_written = 0
        self.written_per_connection: list[int] = []
        self.execs: list[str] = []
        self.renames = 0
        self.open_connections = 0
        self._changed = threading.Condition()
        self._server_conns: list[asyncssh.SSHServerConnection] = []

    async def _listen(self) -> Any:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[self._host_key],
            server_factory=lambda: _Auth(self),
            sftp_factory=lambda chan: _Sftp(chan, self),
            process_factory=self._process,
            allow_scp=False,
        )

    async def _teardown(self) -> None:
        for conn in self._server_conns:
            conn.abort()

    def opened(self, delta: int) -> None:
        with self._changed:
            self.open_connections += delta
            self._changed.notify_all()

    def wait_closed(self, timeout: float = 30) -> int:
        """Wait until no client connection is open (at most ``timeout`` s); the number still open.

        The server learns of a close a moment after the client made it; this waits for that
        event, not for a guessed delay (``timeout`` bounds only a test that is failing anyway).
        """
        with self._changed:
            self._changed.wait_for(lambda: self.open_connections == 0, timeout)
            return self.open_connections

    def count(self, written: int) -> None:
        self.bytes_written += written
        self.written_per_connection[-1] += written

    # --- client side ------------------------------------------------------------------------

    def connect(self) -> paramiko.SFTPClient:
        """A fresh paramiko connection (host key checked); closed by ``stop()`` if the test does not."""
        transport = paramiko.Transport(("127.0.0.1", self.port))
        self._clients.append(transport)
        transport.connect(hostkey=self.host_key, username=self.username, password=self.password)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        return client

    def airflow_connection(self) -> dict[str, Any]:
        """The Airflow connection (``AIRFLOW_CONN_<ID>`` JSON) of this server: its host key pinned,
        host-key checking on (as .env.example's SFTP connections)."""
        return {
            "conn_type": "sftp",
            "host": "127.0.0.1",
            "port": self.port,
            "login": self.username,
            "password": self.password,
            "extra": {"host_key": self.host_key_line, "no_host_key_check": False},
        }

    def local(self, remote_path: str) -> Path:
        """Where a path inside the chroot is on this machine."""
        path = (self.root / remote_path.lstrip("/")).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{remote_path} escapes the chroot {self.root}")
        return path

    # --- exec channel -----------------------------------------------------------------------

    def _process(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or ""
        self.execs.append(command)
        argv = shlex.split(command)
        if not (self.faults.exec_sha256sum and len(argv) == 3 and argv[:2] == ["sha256sum", "--"]):
            process.stderr.write("this server allows SFTP only\n")
            process.exit(126)
            return
        try:
            data = self.local(argv[2]).read_bytes()
        except (OSError, ValueError) as exc:
            process.stderr.write(f"sha256sum: {argv[2]}: {exc}\n")
            process.exit(1)
            return
        digest = hashlib.sha256(data + (b"?" if self.faults.exec_wrong_digest else b"")).hexdigest()
        process.stdout.write(f"{digest}  {argv[2]}\n")
        process.exit(0)


class _Auth(asyncssh.SSHServer):
    def __init__(self, server: SftpTestServer) -> None:
        self.server = server

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.server.connections += 1
        self.server.opened(+1)
        self.server.written_per_connection.append(0)
        self.server._server_conns.append(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.opened(-1)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.server.username and secrets.compare_digest(password, self.server.password)


class _Sftp(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, server: SftpTestServer) -> None:
        super().__init__(chan, chroot=str(server.root).encode())
        self.server = server

    def _drop(self) -> None:
        self.connection.abort()
        raise asyncssh.SFTPConnectionLost("connection dropped by the test server")

    def rename(self, oldpath: bytes, newpath: bytes) -> Any:
        faults = self.server.faults
        when, faults.drop_on_rename = faults.drop_on_rename, None  # once
        if when == "before":
            self._drop()
        super().rename(oldpath, newpath)
        self.server.renames += 1
        if when == "after":
            self._drop()

    def write(self, file_obj: object, offset: int, data: bytes) -> Any:
        faults = self.server.faults
        if faults.stall_after is not None and offset + len(data) > faults.stall_after:
            faults.stall_after = None  # once
            return asyncio.get_running_loop().create_future()  # never answered
        if faults.drop_after is not None and offset + len(data) > faults.drop_after:
            faults.drop_after = None  # once
            half = len(data) // 2
            at, kept = (offset + half, data[half:]) if faults.drop_leaves_hole else (offset, data[:half])
            super().write(file_obj, at, kept)
            self.server.count(len(kept))
            self._drop()
        at = faults.flip_byte_at
        if at is not None and offset <= at < offset + len(data):
            flipped = bytearray(data)
            flipped[at - offset] ^= 0xFF
            data = bytes(flipped)
        self.server.count(len(data))
        return super().write(file_obj, offset, data)


@pytest.fixture(name="sftp_server")
def sftp_server_fixture(tmp_path: Path) -> Iterator[SftpTestServer]:
    """A started SFTP server chrooted to ``<tmp_path>/mft`` with an ``incoming`` directory."""
    root = tmp_path / "mft"
    (root / "incoming").mkdir(parents=True)
    server = SftpTestServer(root).start()
    try:
        yield server
    finally:
        server.stop()
