"""The product never imports the dev tooling: aleph2alma, dags/ and plugins/ stay free of aleph2alma_dev.

aleph2alma_dev (demo library, Alma API emulator, embedded stack) needs the dev set (moto, and
Flask for its server), which the Docker image does not install; an import of it from the product
would fail in production only. Checked on the source, imports inside functions and under
TYPE_CHECKING included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_DIRS = [ROOT / "include" / "aleph2alma", ROOT / "dags", ROOT / "plugins"]
PRODUCT_FILES = sorted(p for d in PRODUCT_DIRS for p in d.rglob("*.py"))
DEV_PACKAGE = "aleph2alma_dev"


def _dev_imports(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == DEV_PACKAGE or name.startswith(DEV_PACKAGE + "."):
                found.append(f"{path.relative_to(root)}:{node.lineno}: imports {name}")
    return found


def test_the_product_files_are_found() -> None:
    assert any(p.parent.name == "aleph2alma" for p in PRODUCT_FILES)
    assert any(p.parent.name == "dags" for p in PRODUCT_FILES)


@pytest.mark.parametrize("path", PRODUCT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_product_file_imports_the_dev_package(path: Path) -> None:
    found = _dev_imports(path)
    assert found == [], (
        f"the product must not import {DEV_PACKAGE} (dev only, not in the image): " + "; ".join(found)
    )


def test_the_check_sees_every_import_form(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import aleph2alma_dev\nfrom aleph2alma_dev.demo import codes\n"
        "def f():\n    import aleph2alma_dev.devstack as s\n"
        "import aleph2alma_development\nfrom aleph2alma import cli\n"
    )
    assert _dev_imports(probe, tmp_path) == [
        "probe.py:1: imports aleph2alma_dev",
        "probe.py:2: imports aleph2alma_dev.demo",
        "probe.py:4: imports aleph2alma_dev.devstack",
    ]


PHASES = ROOT / "include" / "aleph2alma" / "phases"
SHARED_BY_PHASES = {"aleph2alma.phases.context"}  # what every step is given, not a step


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            if node.module == "aleph2alma.phases":
                found += [(node.lineno, f"aleph2alma.phases.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("path", sorted(PHASES.glob("*.py")), ids=lambda p: p.name)
def test_phase_steps_never_import_each_other(path: Path) -> None:
    """Phase steps are a layer over the domain modules: what two phases share lives below them."""
    others = [
        f"{path.name}:{line}: imports {name}"
        for line, name in _imported_modules(path)
        if name.startswith("aleph2alma.phases") and name not in SHARED_BY_PHASES | {"aleph2alma.phases"}
    ]
    assert others == [], "; ".join(others)
