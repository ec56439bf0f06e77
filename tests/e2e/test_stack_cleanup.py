"""What a killed distributed stack leaves behind, cleaned by the next start, on the real PostgreSQL and Redis.

A stack's owner (the process that started it) provisions a throw-away metadata database and claims
a Redis database, recording itself with both (devstack.Owner). Killed with SIGKILL it cannot drop
or release them; the next stack's start (``provision_backends``) does, and leaves a live stack's alone.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from aleph2alma_dev.devstack import (
    PG_ADMIN_URL,
    REDIS_CLAIM_KEY,
    REDIS_URL,
    EmbeddedStack,
    Owner,
    distributed_problems,
    drop_database,
    reap_stale_backends,
    stack_databases,
)

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("ALEPH2ALMA_TEST_PG", PG_ADMIN_URL)

# A stack's owner that provisions its backends, says where, and waits to be killed.
OWNER_SCRIPT = """
import json, sys, time
from pathlib import Path
import redis
from aleph2alma_dev.devstack import EmbeddedStack
stack = EmbeddedStack(executor="celery", state_dir=Path(sys.argv[1]), pg_admin_url=sys.argv[2],
                      redis_url=sys.argv[3])
stack.provision_backends()
redis.Redis.from_url(stack.broker_url).set("celery-message", "unacked")  # what a broker holds
print(json.dumps({"db": stack.sql_alchemy_conn.rsplit("/", 1)[1], "broker": stack.broker_url}), flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module", autouse=True)
def _backends() -> None:
    problems = distributed_problems(PG_URL, REDIS_URL)
    if problems:
        pytest.skip("the clean-up needs PostgreSQL and Redis: " + "; ".join(problems))


def _killed_owner(state_dir: Path) -> dict[str, str]:
    """The backends of a stack whose owner was SIGKILLed once they were provisioned."""
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(state_dir), PG_URL, REDIS_URL],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        provisioned = json.loads(proc.stdout.readline())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return dict(provisioned)


@pytest.fixture
def live_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """A stack whose owner (this process) lives: its backends provisioned, nothing else started."""
    stack = EmbeddedStack(
        executor="celery", state_dir=tmp_path / "live", pg_admin_url=PG_URL, redis_url=REDIS_URL
    )
    try:
        stack.provision_backends()
        yield stack
    finally:
        stack.stop()


def _claim(url: str) -> bytes | None:
    value = redis.Redis.from_url(url).get(REDIS_CLAIM_KEY)
    return value if isinstance(value, bytes) else None


def test_a_killed_stack_s_database_and_broker_are_cleaned_at_the_next_start(
    tmp_path: Path, live_stack: EmbeddedStack
) -> None:
    dead = _killed_owner(tmp_path / "dead")
    owner = stack_databases(PG_URL)[dead["db"]]
    assert owner is not None and owner.lock == str(tmp_path / "dead" / "stack.lock")
    assert not owner.alive() and _claim(dead["broker"]) == owner.to_json().encode()

    nxt = EmbeddedStack(
        executor="celery", state_dir=tmp_path / "next", pg_admin_url=PG_URL, redis_url=REDIS_URL
    )
    try:
        nxt.provision_backends()  # cleans up first
        databases = stack_databases(PG_URL)
        assert dead["db"] not in databases
        # Flushed; the next stack may have claimed the freed database itself.
        assert redis.Redis.from_url(dead["broker"]).get("celery-message") is None
        assert _claim(dead["broker"]) in (None, nxt.owner.to_json().encode())
        live_db = live_stack.sql_alchemy_conn.rsplit("/", 1)[1]
        assert databases[live_db] == live_stack.owner
        assert _claim(live_stack.broker_url) == live_stack.owner.to_json().encode()
    finally:
        nxt.stop()


def test_reaping_keeps_what_it_cannot_tell_dead(tmp_path: Path, live_stack: EmbeddedStack) -> None:
    """A live owner, another host's owner, a live pid whose lock file is gone and a database
    without a recorded owner (an older stack's) are kept; a recorded pid that lives but does not
    hold its lock (reused since) is dead."""
    assert live_stack.owner.alive()
    assert Owner("another-host", 1, str(tmp_path / "gone.lock")).alive()
    unlocked = tmp_path / "unlocked.lock"
    unlocked.touch()
    assert not Owner(socket.gethostname(), os.getpid(), str(unlocked)).alive()
    assert Owner(socket.gethostname(), os.getpid(), str(tmp_path / "removed.lock")).alive()
    assert Owner.from_json(b"aleph2alma-8080") is None and Owner.from_json(None) is None

    legacy = f"aleph2alma_af_legacy{secrets.token_hex(4)}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{legacy}"')
    try:
        dropped, released = reap_stale_backends(PG_URL, REDIS_URL)
        databases = stack_databases(PG_URL)
        assert legacy in databases and databases[legacy] is None
        live_db = live_stack.sql_alchemy_conn.rsplit("/", 1)[1]
        assert live_db in databases and live_db not in dropped
        assert live_stack.broker_url not in released
        assert _claim(live_stack.broker_url) == live_stack.owner.to_json().encode()
    finally:
        drop_database(PG_URL, legacy)
