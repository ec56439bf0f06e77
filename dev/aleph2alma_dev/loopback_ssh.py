"""What every SSH server the dev tooling and the tests start on 127.0.0.1 has in common.

An asyncssh server runs in its own event loop on a background thread, listens on a free port of
127.0.0.1 with a host key generated at start, and takes one user and password. Subclasses say
what it serves (:meth:`LoopbackSshServer._listen`) and what closing it takes besides the
listener (:meth:`LoopbackSshServer._teardown`): the Aleph server stand-in
(``ssh_standin.AlephShellStandin``) and the tests' migration file-transfer server
(``tests/sftp_server.py``).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from pathlib import Path
from typing import Any, Self

import asyncssh
import paramiko


class LoopbackSshServer:
    """``start()`` listens on a free port of 127.0.0.1; ``stop()`` closes every client it gave out."""

    thread_name = "loopback-ssh"

    def __init__(self, root: Path, *, username: str, password: str | None = None) -> None:
        self.root = Path(root).resolve()
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.port = 0
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.thread_name, daemon=True)
        self._acceptor: Any = None
        self._clients: list[Any] = []  # paramiko clients or transports handed out: closed by stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        self._thread.start()
        self._acceptor = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=30)
        self.port = int(self._acceptor.get_port())
        return self

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        if self._acceptor is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _listen(self) -> Any:
        """``asyncssh.listen(...)`` on 127.0.0.1, port 0, with :attr:`_host_key`."""
        raise NotImplementedError

    async def _teardown(self) -> None:
        """What closing takes besides the listener (processes to kill, connections to abort)."""

    async def _close(self) -> None:
        self._acceptor.close()  # no new connections; the open ones are the subclass's to end
        await self._acceptor.wait_closed()
        await self._teardown()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def host_key_line(self) -> str:
        """The server's public host key as ``ssh-keyscan`` prints it, without the host name."""
        key_type, data = self._host_key.export_public_key("openssh").split()[:2]
        return f"{key_type.decode()} {data.decode()}"

    @property
    def host_key(self) -> paramiko.PKey:
        """The server's public host key, as paramiko checks it."""
        key_type, data = self.host_key_line.split()
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(data))
