"""Closing SFTP clients: the client and the SSH connection under it, whatever happened.

A paramiko ``SFTPClient`` closed alone leaves its SSH transport (a thread and a socket) open
until the process ends; :func:`close_sftp` closes both. Cheap to import (no paramiko).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def close_sftp(sftp: Any) -> None:
    """Close ``sftp`` and its SSH transport.

    Closing a connection that already died may raise anything paramiko has (``SSHException``,
    ``EOFError``, ``OSError``): ignored, so cleanup never hides the failure that ended the work.
    """
    channel = sftp.get_channel() if hasattr(sftp, "get_channel") else None
    transport = channel.get_transport() if channel is not None else None
    with contextlib.suppress(Exception):
        sftp.close()
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.close()


@contextlib.contextmanager
def sftp_session(open_sftp: Callable[[], Any]) -> Iterator[Any]:
    """A fresh client from ``open_sftp()``, closed with its connection when the block ends."""
    sftp = open_sftp()
    try:
        yield sftp
    finally:
        close_sftp(sftp)
