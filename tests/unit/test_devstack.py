"""The embedded stack's wiring: where it listens, and which of its files only its owner may read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aleph2alma_dev.devstack import EmbeddedStack, private_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_api_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    stack = EmbeddedStack(state_dir=tmp_path, api_port=18080)
    assert stack.env()["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert stack.api_url == "http://127.0.0.1:18080"

    everywhere = EmbeddedStack(state_dir=tmp_path, api_port=18080, listen_host="0.0.0.0")
    assert everywhere.env()["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert everywhere.api_url == "http://127.0.0.1:18080"  # the stack's own clients stay on loopback
    assert everywhere.env()["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"

    one = EmbeddedStack(state_dir=tmp_path, api_port=18080, listen_host="10.1.2.3")
    assert one.api_url == "http://10.1.2.3:18080"


def test_the_jwt_key_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    stack = EmbeddedStack(state_dir=tmp_path / "state")
    secret = stack.jwt_secret()
    key = tmp_path / "state" / "jwt_secret"
    assert len(secret) == 128 and key.read_text() == secret
    assert mode(key) == 0o600
    assert stack.jwt_secret() == secret  # kept across restarts


def test_a_world_readable_key_left_by_an_older_stack_is_closed(tmp_path: Path) -> None:
    key = tmp_path / "jwt_secret"
    key.write_text("a" * 128)
    key.chmod(0o644)
    assert EmbeddedStack(state_dir=tmp_path).jwt_secret() == "a" * 128
    assert mode(key) == 0o600


def test_private_file_creates_an_empty_owner_only_file_and_keeps_content(tmp_path: Path) -> None:
    new = private_file(tmp_path / "passwords.json")
    assert new.read_text() == "" and mode(new) == 0o600
    new.write_text('{"admin": "x"}')
    new.chmod(0o664)
    assert private_file(new).read_text() == '{"admin": "x"}' and mode(new) == 0o600


@pytest.mark.parametrize("content", ["", "{", '{"other": "y"}'])
def test_admin_password_waits_for_the_admin_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    import aleph2alma_dev.devstack as devstack

    stack = EmbeddedStack(state_dir=tmp_path)
    stack.airflow_home.mkdir(parents=True)
    stack.password_file.write_text(content)
    writes = iter(['{"other": "y", "admin": "s3cret"}\n'])

    def sleep(_: float) -> None:  # the API server writes the admin's password meanwhile
        stack.password_file.write_text(next(writes))

    monkeypatch.setattr(devstack.time, "sleep", sleep)
    assert stack.admin_password() == "s3cret"
