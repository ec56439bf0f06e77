"""The supply-chain audit: pip-audit first, the project JSON for what it skipped, acceptances kept true."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from aleph2alma_dev.supply_chain import audit, load_accepted, read_pins, render

LOCK = """# header
jinja2==3.1.4
    # via apache-airflow
requests[socks]==2.32.0
urllib3==2.8.0
"""


def fake_pip_audit(tmp_path: Path, dependencies: list[dict[str, Any]]) -> str:
    script = tmp_path / "pip-audit"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps({'dependencies': dependencies})}\nEOF\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def project(latest: str, vulns: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"info": {"version": latest}, "vulnerabilities": vulns or []}


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.lock"
    path.write_text(LOCK)
    return path


def test_pins_are_read_without_extras_or_comments(lock: Path) -> None:
    assert read_pins(lock) == {"jinja2": "3.1.4", "requests": "2.32.0", "urllib3": "2.8.0"}


def test_a_pip_audit_finding_fails_the_audit(tmp_path: Path, lock: Path) -> None:
    deps = [
        {
            "name": "jinja2",
            "version": "3.1.4",
            "vulns": [{"id": "GHSA-q2x7-8rv6-6q7h", "fix_versions": ["3.1.5"]}],
        },
        {"name": "requests", "version": "2.32.0", "vulns": []},
        {"name": "urllib3", "version": "2.8.0", "vulns": []},
    ]
    verdict = audit(lock, tmp_path / "none.toml", fake_pip_audit(tmp_path, deps), fetch=lambda n: None)
    assert not verdict.ok
    assert [(f.package, f.vuln_id, f.fixed_in) for f in verdict.open] == [
        ("jinja2", "GHSA-q2x7-8rv6-6q7h", ("3.1.5",))
    ]
    assert "VULNERABLE  jinja2==3.1.4  GHSA-q2x7-8rv6-6q7h  fixed in: 3.1.5" in render(verdict)


def test_skipped_packages_are_audited_from_the_latest_release_or_listed_unaudited(
    tmp_path: Path, lock: Path
) -> None:
    skipped = [
        {"name": n, "skip_reason": "Dependency not found on PyPI"} for n in ("jinja2", "requests", "urllib3")
    ]
    index = {
        "jinja2": project("3.1.6"),  # behind the latest: cannot be audited from this document
        "requests": project("2.32.0", [{"id": "PYSEC-2099-1", "fixed_in": []}]),  # at latest, vulnerable
        "urllib3": project("2.8.0"),  # at latest, clean
    }
    verdict = audit(lock, tmp_path / "none.toml", fake_pip_audit(tmp_path, skipped), fetch=index.get)
    assert [(f.package, f.vuln_id, f.source) for f in verdict.open] == [
        ("requests", "PYSEC-2099-1", "index (latest release)")
    ]
    assert [(u.package, u.latest) for u in verdict.unaudited] == [("jinja2", "3.1.6")]
    assert verdict.audited == 2


def test_an_accepted_finding_passes_and_a_stale_acceptance_fails(tmp_path: Path, lock: Path) -> None:
    deps = [{"name": "urllib3", "version": "2.8.0", "vulns": [{"id": "GHSA-aaaa", "fix_versions": []}]}]
    accepted = tmp_path / "accepted.toml"
    accepted.write_text(
        '[[accepted]]\nid = "GHSA-aaaa"\npackage = "urllib3"\nreason = "only the proxy path is affected"\n'
    )
    verdict = audit(lock, accepted, fake_pip_audit(tmp_path, deps), fetch=lambda n: None)
    assert verdict.ok and [a.reason for _, a in verdict.accepted] == ["only the proxy path is affected"]

    verdict = audit(lock, accepted, fake_pip_audit(tmp_path, []), fetch=lambda n: None)
    assert not verdict.ok and [a.vuln_id for a in verdict.stale] == ["GHSA-aaaa"]


def test_an_acceptance_without_a_reason_is_refused(tmp_path: Path) -> None:
    accepted = tmp_path / "accepted.toml"
    accepted.write_text('[[accepted]]\nid = "GHSA-aaaa"\npackage = "urllib3"\nreason = " "\n')
    with pytest.raises(ValueError, match="needs id, package and a reason"):
        load_accepted(accepted)


def test_the_projects_acceptance_list_parses() -> None:
    root = Path(__file__).resolve().parents[2]
    for acceptance in load_accepted(root / "supply-chain-accepted.toml"):
        assert acceptance.reason
