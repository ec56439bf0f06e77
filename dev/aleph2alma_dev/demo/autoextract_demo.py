"""`make demo ARGS=--autoextract`: the test load in delivery mode autoextract, against stand-ins.

A local SSH server (:class:`aleph2alma_dev.ssh_standin.AlephShellStandin`) stands in for the
Aleph server and a script (:mod:`aleph2alma_dev.demo.autoextract_standin`) for Ex Libris'
AutoExtract: both are STAND-INS, labelled so in everything they write. The demo copies the
project's configuration to ``<data>/config`` and sets ``[delivery] mode = "autoextract"`` there
with the stand-in's commands, directories and expected outputs; the stack reads that copy
(``ALEPH2ALMA_CONFIG_ROOT``) and reaches the stand-in through the connection ``aleph_ssh``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from aleph2alma import settings
from aleph2alma.settings import AUTOEXTRACT_STEPS, CONFIG_ROOT
from aleph2alma_dev.demo import autoextract_standin
from aleph2alma_dev.ssh_standin import AlephShellStandin


def autoextract_delivery(server: AlephShellStandin) -> dict[str, Any]:
    """The ``[delivery]`` table running every AutoExtract step on the stand-in."""
    output_dir = server.root / "autoextract" / "output"
    output_dir.mkdir(parents=True, exist_ok=True)
    return {
        "mode": "autoextract",
        "autoextract": {
            "ssh_conn_id": "aleph_ssh",
            "workdir": str(server.root),
            "output_dir": str(output_dir),
            "steps": [
                {
                    "name": step,
                    "command": autoextract_standin.command(step, str(output_dir)),
                    "expected_outputs": list(autoextract_standin.EXPECTED_OUTPUTS[step]),
                    "timeout_minutes": 10,
                }
                for step in AUTOEXTRACT_STEPS
            ],
        },
    }


def delivery_toml(delivery: dict[str, Any]) -> str:
    """``[delivery]`` as TOML (JSON strings and arrays of strings are TOML too)."""
    auto = delivery["autoextract"]
    lines = ["[delivery]", f"mode = {json.dumps(delivery['mode'])}", "", "[delivery.autoextract]"]
    lines += [f"{key} = {json.dumps(auto[key])}" for key in ("ssh_conn_id", "workdir", "output_dir")]
    for step in auto["steps"]:
        lines += ["", "[[delivery.autoextract.steps]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in step.items()]
    return "\n".join(lines) + "\n"


def without_delivery(text: str) -> str:
    """``migration.toml`` without its ``[delivery]`` tables (every other table kept)."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = line.strip()
        if header.startswith("["):
            skipping = header.strip("[]").split(".")[0] == "delivery"
        if not skipping:
            kept.append(line)
    return "".join(kept)


def config_for(server: AlephShellStandin, root: Path, migration_id: str) -> Path:
    """A copy of the configuration under ``root`` whose ``migration_id`` delivers through AutoExtract."""
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(CONFIG_ROOT, root)
    path = root / migration_id / "migration.toml"
    kept = without_delivery(path.read_text(encoding="utf-8"))
    path.write_text(
        kept
        + "\n# Written by make demo --autoextract: delivery through the AutoExtract STAND-IN.\n"
        + delivery_toml(autoextract_delivery(server)),
        encoding="utf-8",
    )
    settings.load(migration_id, root)  # the copy is what the DAGs will read: check it now
    return root


def stack_env(server: AlephShellStandin, config_root: Path) -> dict[str, str]:
    """What the embedded stack needs to reach the stand-in and read the copied configuration."""
    return {
        "ALEPH2ALMA_CONFIG_ROOT": str(config_root),
        "AIRFLOW_CONN_ALEPH_SSH": json.dumps(server.airflow_connection()),
    }
