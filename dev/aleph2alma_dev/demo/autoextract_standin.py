"""STAND-IN for Ex Libris AutoExtract: it does not read Aleph. Dev and tests only.

Ex Libris' AutoExtract runs on the Aleph server as the aleph user; its menu steps generate the
migration form, validate the P2E file, extract, package and transfer the delivery to Ex Libris'
MFT server. This script imitates the shape of those steps so the DAG's SSH orchestration
(``aleph2alma.delivery.autoextract``) can be run end to end without Ex Libris software: each
step writes small, deterministic placeholder files under ``--out`` and says on stdout what it
did. Nothing here is Ex Libris' format or behaviour beyond the step names and their order.

Usage::

    python autoextract_standin.py <step> --out <output_dir>

A step whose prerequisite has not run (``package`` before ``extract`` …) exits 2 with the reason
on stderr, as a real step would refuse to run. Standard library and openpyxl only, so the script
runs with any Python that has openpyxl, on the stand-in server or anywhere else.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import shlex
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

STEPS = ("generate_form", "validate_p2e", "extract", "package", "transfer")
ENTITIES = ("bibs", "holdings", "items", "patrons", "loans")
SUB_LIBRARIES = (("MAIN", "Main library"), ("LAW", "Law library"), ("MUSIC", "Music library"))
FORM = "form/aleph_migration_form.xlsx"
P2E_REPORT = "p2e/p2e_validation.txt"
PACKAGE = "package/aleph_extract.tar.gz"
TRANSFER_LOG = "transfer/transfer.log"
EXPECTED_OUTPUTS: dict[str, tuple[str, ...]] = {
    "generate_form": (FORM,),
    "validate_p2e": (P2E_REPORT,),
    "extract": ("extract/*.txt",),
    "package": ("package/*.tar.gz",),
    "transfer": (TRANSFER_LOG,),
}
"""Each step's outputs as ``expected_outputs`` globs (relative to ``--out``)."""
BANNER = "STAND-IN for Ex Libris AutoExtract: it does not read Aleph"
_FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CORE_DATES = re.compile(rb"(<dcterms:(created|modified)\b[^>]*>)[^<]*(</dcterms:\2>)")


class PrerequisiteMissing(Exception):
    """A step was asked for before the step that produces its input."""


def command(step: str, output_dir: str, python: str = sys.executable) -> str:
    """The shell command that runs ``step`` of this stand-in, for a step's ``command`` setting."""
    return " ".join(shlex.quote(part) for part in (python, __file__, step, "--out", output_dir))


def _require(out: Path, relative: str, step: str, producer: str) -> Path:
    path = out / relative
    if not path.is_file():
        raise PrerequisiteMissing(f"{step}: {path} is missing; run the {producer} step first")
    return path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path} ({len(data)} bytes)")


def _normalised_xlsx(data: bytes) -> bytes:
    """The workbook without its build time (zip entry dates and core-properties dates fixed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "docProps/core.xml":
                body = _CORE_DATES.sub(rb"\g<1>1980-01-01T00:00:00Z\g<3>", body)
            dst.writestr(
                zipfile.ZipInfo(item.filename, date_time=_FIXED_ZIP_DATE), body, zipfile.ZIP_DEFLATED
            )
    return out.getvalue()


def generate_form(out: Path) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Sub-libraries"
    sheet.append(["Aleph sub-library", "Description", "Alma library"])
    for code, name in SUB_LIBRARIES:
        sheet.append([code, name, ""])
    buffer = io.BytesIO()
    workbook.save(buffer)
    _write(out / FORM, _normalised_xlsx(buffer.getvalue()))


def validate_p2e(out: Path) -> None:
    _require(out, FORM, "validate_p2e", "generate_form")
    report = "P2E validation (stand-in): 0 errors, 0 warnings\n" + "".join(
        f"{code}: no P2E rules checked (stand-in)\n" for code, _ in SUB_LIBRARIES
    )
    _write(out / P2E_REPORT, report.encode())


def extract(out: Path) -> None:
    _require(out, P2E_REPORT, "extract", "validate_p2e")
    for entity in ENTITIES:
        _write(
            out / "extract" / f"{entity}.txt", f"{entity}: placeholder, no Aleph data (stand-in)\n".encode()
        )


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def package(out: Path) -> None:
    members = sorted((out / "extract").glob("*.txt")) if (out / "extract").is_dir() else []
    if not members:
        raise PrerequisiteMissing(f"package: no files in {out / 'extract'}; run the extract step first")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path in members:
                data = path.read_bytes()
                tar.addfile(_tar_info(f"extract/{path.name}", len(data)), io.BytesIO(data))
    _write(out / PACKAGE, buffer.getvalue())


def transfer(out: Path) -> None:
    path = _require(out, PACKAGE, "transfer", "package")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    log = f"{path.name} sha256 {digest}\nnot sent: this stand-in has no MFT server to send to\n"
    _write(out / TRANSFER_LOG, log.encode())


RUNNERS: dict[str, Callable[[Path], None]] = {
    "generate_form": generate_form,
    "validate_p2e": validate_p2e,
    "extract": extract,
    "package": package,
    "transfer": transfer,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=BANNER)
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--out", required=True, type=Path, help="AutoExtract's output directory")
    args = parser.parse_args(argv)
    print(f"{BANNER}; step {args.step}, output {args.out}")
    try:
        RUNNERS[args.step](args.out)
    except PrerequisiteMissing as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"step {args.step} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
