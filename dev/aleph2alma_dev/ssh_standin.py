"""A local stand-in for the Aleph server's SSH access (dev and tests only; not Ex Libris software).

In ``autoextract`` delivery mode the DAG logs in to the Aleph server as the aleph user over SSH,
runs AutoExtract's steps there and fetches their outputs over SFTP. This module is that server
for a developer's machine and the tests: an asyncssh SSH server in a background thread on a free
port of 127.0.0.1, with password authentication and a host key generated at start. It

- runs every exec request as a real process, ``/bin/sh -c <command>``, in :attr:`root` (also its
  ``HOME``), streaming stdout and stderr back and ending with the command's exit status (128 + N
  for a command killed by signal N, as a shell reports it);
- serves SFTP on the **real local filesystem, without a chroot**: the commands run on the real
  filesystem, so the SFTP paths must be the same real paths for ``workdir`` and ``output_dir``
  to mean one directory to both. That is why this server binds 127.0.0.1 only and must never
  be exposed: anyone with its password reads and writes what the developer's user can.

As with OpenSSH without a pty, a command keeps running when the client closes its channel (a
command timeout on the client does not stop it); :meth:`AlephShellStandin.stop` kills whatever
is still running. :attr:`AlephShellStandin.execs` lists every command received, so tests can
count them. :meth:`airflow_connection` gives the Airflow connection with the host key pinned.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path
from typing import Any, Self

import asyncssh
import paramiko

from aleph2alma_dev.loopback_ssh import LoopbackSshServer

USERNAME = "aleph"
CHUNK = 1 << 16


class AlephShellStandin(LoopbackSshServer):
    """``start()`` listens on a free port of 127.0.0.1; ``connect()`` returns a paramiko SSHClient."""

    thread_name = "aleph-ssh-standin"

    def __init__(self, root: Path, *, username: str = USERNAME, password: str | None = None) -> None:
        super().__init__(root, username=username, password=password)
        self.execs: list[str] = []
        self._running: set[asyncio.subprocess.Process] = set()

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        return super().start()

    async def _listen(self) -> Any:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[self._host_key],
            server_factory=lambda: _Auth(self),
            process_factory=self._exec,
            sftp_factory=True,  # asyncssh's SFTPServer without chroot: real local paths
            encoding=None,  # bytes through: commands' output is passed on as it is
            allow_scp=False,
        )

    async def _teardown(self) -> None:
        running = list(self._running)
        for proc in running:
            _kill(proc)
        # reaped here, while the loop runs: a subprocess transport left to the garbage collector
        # would try to close itself on a closed loop
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), timeout=10)

    # --- client side ------------------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        """A fresh paramiko SSHClient, the host key checked; closed by ``stop()`` if the caller does not."""
        client = paramiko.SSHClient()
        client.get_host_keys().add(f"[127.0.0.1]:{self.port}", self.host_key.get_name(), self.host_key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._clients.append(client)
        client.connect(
            "127.0.0.1",
            self.port,
            username=self.username,
            password=self.password,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        return client

    def airflow_connection(self) -> dict[str, Any]:
        """The Airflow connection (``AIRFLOW_CONN_<ID>`` JSON) of this server: host key pinned and
        checked, as a production SSH connection should be."""
        return {
            "conn_type": "ssh",
            "host": "127.0.0.1",
            "port": self.port,
            "login": self.username,
            "password": self.password,
            "extra": {"host_key": self.host_key_line, "no_host_key_check": False},
        }

    # --- exec channel -----------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """A login's environment, not the developer's: sshd does not pass the caller's on either."""
        return {
            "HOME": str(self.root),
            "USER": self.username,
            "LOGNAME": self.username,
            "SHELL": "/bin/sh",
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
        }

    async def _exec(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command
        if command is None:
            process.stderr.write(b"this stand-in runs commands only, no interactive shell\n")
            process.exit(1)
            return
        self.execs.append(command)
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            cwd=self.root,
            env=self._environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: stop() kills the command's children too
        )
        self._running.add(proc)
        try:
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(_forward(proc.stdout, process.stdout), _forward(proc.stderr, process.stderr))
            status = await proc.wait()
        finally:
            self._running.discard(proc)
        process.exit(status if status >= 0 else 128 - status)


async def _forward(source: asyncio.StreamReader, channel: Any) -> None:
    """Copy a command's output to the SSH channel; once the client has gone, read and drop it."""
    forwarding = True
    while chunk := await source.read(CHUNK):
        if not forwarding:
            continue
        try:
            channel.write(chunk)
            await channel.drain()
        except (OSError, asyncssh.Error):
            forwarding = False


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc): a command under GNU ``timeout`` runs in a process
    group of its own, which killing the shell's group does not reach."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _kill(proc: asyncio.subprocess.Process) -> None:
    for pid in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Auth(asyncssh.SSHServer):
    def __init__(self, server: AlephShellStandin) -> None:
        self.server = server

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.server.username and secrets.compare_digest(password, self.server.password)
