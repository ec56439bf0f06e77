"""`make airflow` (scripts/stack.py serve): SIGTERM stops everything it started, as Ctrl-C does; the
UI/API listens on loopback only; the JWT key and the admin's password file are 0600.

Its own stack (own state dir, free ports, the session's demo library), so that the session's
stack is untouched. The stack's components run in their own sessions (start_new_session), so a
signal to the script alone reaches none of them: the script must stop them itself.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aleph2alma_dev.devstack import PROJECT_ROOT, free_port

pytestmark = pytest.mark.e2e

START_TIMEOUT = 600  # airflow standalone on a loaded 2-core machine
STOP_TIMEOUT = 180


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, …]; None once gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.rsplit(")", 1)[1].split()


def processes() -> dict[int, list[str]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            found[int(entry.name)] = fields
    return found


def descendants(root: int) -> dict[int, list[str]]:
    """Every live process below ``root`` (by parent pid), with its stat fields."""
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = table[pid]
        todo += children.get(pid, [])
    return out


def alive(pids: set[int], sessions: set[int]) -> list[int]:
    """Processes (not zombies) that are one of ``pids`` or belong to one of ``sessions``."""
    return sorted(
        pid
        for pid, fields in processes().items()
        if fields[0] != "Z" and (pid in pids or int(fields[3]) in sessions)
    )


def listening(pids: set[int]) -> dict[int, str]:
    """The TCP ports these processes listen on, with the address each is bound to."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    ports: dict[int, str] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.rsplit(":", 1)
                ports[int(port, 16)] = address
    return ports


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1 (/proc's byte order)


def log_server_ports(pids: set[int]) -> set[int]:
    """The ports of Airflow's own log servers (bound to every address by Airflow, not configurable)."""
    ports = set()
    for pid in pids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        for item in env:
            name, _, value = item.partition(b"=")
            if name in (
                b"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
                b"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
            ):
                ports.add(int(value))
    return ports


def test_sigterm_stops_everything_the_stack_started(tiny_library: Path, tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    log = (tmp_path / "stack.log").open("wb")
    script = subprocess.Popen(
        [sys.executable, "scripts/stack.py", "serve", "--port", str(port), "--state-dir", str(state)]
        + ["--data", str(tiny_library)],
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # as from a terminal: its own group, as `make airflow` has
    )
    started: dict[int, list[str]] = {}
    sessions: set[int] = set()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert script.poll() is None, (tmp_path / "stack.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no API within {START_TIMEOUT} s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        while b"Airflow UI:" not in (tmp_path / "stack.log").read_bytes():  # started and printed
            assert script.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)

        started = descendants(script.pid)
        sessions = {int(fields[3]) for fields in started.values()} | {script.pid}
        assert len(sessions - {script.pid}) >= 3, started  # moto, the emulator, airflow: own sessions

        ports = listening(set(started))
        assert ports.get(port) == "0100007F", ports  # the UI/API: 127.0.0.1 only
        exposed = {p for p, address in ports.items() if address not in LOOPBACK_HEX}
        assert exposed <= log_server_ports(set(started)), (ports, exposed)

        assert stat.S_IMODE((state / "jwt_secret").stat().st_mode) == 0o600
        passwords = state / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert stat.S_IMODE(passwords.stat().st_mode) == 0o600 and b"admin" in passwords.read_bytes()

        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=STOP_TIMEOUT) == 0, (tmp_path / "stack.log").read_text()[-3000:]
        left = alive(set(started), sessions)
        assert left == [], {pid: processes().get(pid) for pid in left}
    finally:  # whatever a failed test left behind goes too
        started |= descendants(script.pid)
        if script.poll() is None:
            script.kill()
            script.wait(timeout=30)
        for pid in alive(set(started), sessions | {int(f[3]) for f in started.values()} - {os.getsid(0)}):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
