"""Audit the pinned requirements for known vulnerabilities (``make test`` runs it).

pip-audit is the authority: it asks the package index for each pinned release's advisories
(PyPI's per-release JSON, fed by the Python Packaging Advisory Database and OSV). Some mirrors
serve only the project-level JSON, where pip-audit skips every package. The project-level JSON
still lists the advisories of the project's *latest* release (warehouse docs, JSON API:
"vulnerabilities" of the release the document describes), so a pin at the latest release is
audited from there; a pin behind it is listed as not audited, with both versions, never
passed off as clean.

A finding fails the audit unless ``supply-chain-accepted.toml`` accepts it with a reason; an
acceptance that no longer matches a finding fails too, so the list stays true.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_JSON = "https://pypi.org/pypi/{name}/json"


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    vuln_id: str
    fixed_in: tuple[str, ...]
    source: str  # "pip-audit" | "index (latest release)"


@dataclass(frozen=True)
class Unaudited:
    package: str
    version: str
    latest: str | None
    reason: str


@dataclass(frozen=True)
class Accepted:
    vuln_id: str
    package: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    open: list[Finding]
    accepted: list[tuple[Finding, Accepted]]
    stale: list[Accepted]
    unaudited: list[Unaudited]
    audited: int

    @property
    def ok(self) -> bool:
        return not self.open and not self.stale


def read_pins(lock: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a uv/pip-compile lock file."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")) and "==" in line:
            name, _, version = line.partition("==")
            pins[re.sub(r"\[.*\]", "", name).strip().lower()] = version.split(";")[0].strip()
    return pins


def pip_audit(lock: Path, executable: str) -> tuple[list[Finding], set[str]]:
    """pip-audit's findings, and the packages it skipped (could not audit)."""
    done = subprocess.run(
        [
            executable,
            "-r",
            str(lock),
            "--no-deps",
            "--disable-pip",
            "--progress-spinner",
            "off",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise RuntimeError(
            f"pip-audit gave no report (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        ) from error
    findings, skipped = [], set()
    for dep in report.get("dependencies", []):
        name = dep["name"].lower()
        if dep.get("skip_reason"):
            skipped.add(name)
        for vuln in dep.get("vulns", []):
            fixed = tuple(vuln.get("fix_versions", []))
            findings.append(Finding(name, dep.get("version", "?"), vuln["id"], fixed, "pip-audit"))
    return findings, skipped


def from_project_json(
    pins: dict[str, str], fetch: Callable[[str], dict[str, Any] | None], workers: int = 8
) -> tuple[list[Finding], list[Unaudited]]:
    """Audit from the project-level JSON: exact for a pin at the latest release, else not audited."""
    with ThreadPoolExecutor(workers) as pool:
        documents = dict(zip(pins, pool.map(fetch, pins), strict=True))
    findings, unaudited = [], []
    for name, version in sorted(pins.items()):
        document = documents[name]
        if document is None:
            unaudited.append(Unaudited(name, version, None, "not on the package index"))
            continue
        latest = document["info"]["version"]
        if latest != version:
            unaudited.append(
                Unaudited(
                    name, version, latest, "pinned behind the latest release; no per-release advisories"
                )
            )
            continue
        for vuln in document.get("vulnerabilities") or []:
            fixed = tuple(vuln.get("fixed_in") or ())
            findings.append(Finding(name, version, vuln["id"], fixed, "index (latest release)"))
    return findings, unaudited


def fetch_project_json(name: str) -> dict[str, Any] | None:
    import httpx

    response = httpx.get(PROJECT_JSON.format(name=name), timeout=60, follow_redirects=True)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


def load_accepted(path: Path) -> list[Accepted]:
    if not path.exists():
        return []
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("accepted", [])
    accepted = []
    for entry in entries:
        missing = {"id", "package", "reason"} - set(entry)
        if missing or not str(entry.get("reason", "")).strip():
            raise ValueError(f"{path.name}: an [[accepted]] entry needs id, package and a reason: {entry}")
        accepted.append(Accepted(entry["id"], entry["package"].lower(), entry["reason"].strip()))
    return accepted


def judge(
    findings: Iterable[Finding], accepted: list[Accepted], unaudited: list[Unaudited], audited: int
) -> Verdict:
    by_key = {(a.vuln_id, a.package): a for a in accepted}
    open_, taken = [], []
    for finding in findings:
        acceptance = by_key.get((finding.vuln_id, finding.package))
        if acceptance is None:
            open_.append(finding)
        else:
            taken.append((finding, acceptance))
    used = {(a.vuln_id, a.package) for _, a in taken}
    stale = [a for a in accepted if (a.vuln_id, a.package) not in used]
    return Verdict(open_, taken, stale, unaudited, audited)


def render(verdict: Verdict) -> str:
    lines = [f"audited: {verdict.audited} pinned packages; not audited here: {len(verdict.unaudited)}"]
    for finding in verdict.open:
        fixed = ", ".join(finding.fixed_in) or "no fix released"
        lines.append(
            f"VULNERABLE  {finding.package}=={finding.version}  {finding.vuln_id}  fixed in: {fixed}"
            f"  ({finding.source})"
        )
    for finding, acceptance in verdict.accepted:
        lines.append(
            f"accepted    {finding.package}=={finding.version}  {finding.vuln_id}: {acceptance.reason}"
        )
    for acceptance in verdict.stale:
        lines.append(
            f"STALE       {acceptance.package} {acceptance.vuln_id}: accepted but not found; remove it"
        )
    for item in verdict.unaudited:
        latest = f" (latest {item.latest})" if item.latest else ""
        lines.append(f"unaudited   {item.package}=={item.version}{latest}: {item.reason}")
    lines.append("supply chain: " + ("OK" if verdict.ok else "FAILED"))
    return "\n".join(lines)


def audit(
    lock: Path,
    accepted_file: Path,
    pip_audit_executable: str,
    fetch: Callable[[str], dict[str, Any] | None] = fetch_project_json,
) -> Verdict:
    pins = read_pins(lock)
    findings, skipped = pip_audit(lock, pip_audit_executable)
    fallback, unaudited = from_project_json({n: v for n, v in pins.items() if n in skipped}, fetch)
    audited = len(pins) - len(unaudited)
    return judge([*findings, *fallback], load_accepted(accepted_file), unaudited, audited)
