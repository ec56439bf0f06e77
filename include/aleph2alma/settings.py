"""Per-migration settings: which Aleph libraries exist, where they live, how to split work.

Read from ``include/config/<migration_id>/migration.toml``. Every field has a default and
a description; an unknown or mistyped key is an error that names the key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

MarcFlavour = Literal["MARC21", "CNMARC"]

CONFIG_ROOT = Path(os.environ.get("ALEPH2ALMA_CONFIG_ROOT", Path(__file__).resolve().parents[1] / "config"))


class SettingsError(ValueError):
    """The migration settings file is missing, malformed, or has an unknown key."""


@dataclass(frozen=True)
class BibLibrary:
    code: str = field(metadata={"doc": "Aleph BIB library code, e.g. BNU01"})
    flavour: MarcFlavour = field(default="MARC21", metadata={"doc": "MARC21 or CNMARC"})
    file: str = field(default="", metadata={"doc": "ALEPHSEQ export file name in the landing location"})


@dataclass(frozen=True)
class MigrationSettings:
    migration_id: str = field(metadata={"doc": "Names the migration; prefixes every artifact in S3"})
    institution: str = field(default="", metadata={"doc": "Institution name shown in reports"})
    bib_libraries: tuple[BibLibrary, ...] = field(
        default=(BibLibrary("XXX01", "MARC21", "XXX01.seq"),),
        metadata={"doc": "BIB libraries and their MARC flavour"},
    )
    hol_library: str = field(default="XXX60", metadata={"doc": "Aleph HOL library code"})
    hol_file: str = field(default="XXX60.seq", metadata={"doc": "ALEPHSEQ export of the HOL library"})
    adm_library: str = field(default="XXX50", metadata={"doc": "Aleph ADM library code"})
    schemas: dict[str, str | None] = field(
        default_factory=lambda: {"adm": None, "usr": None},
        metadata={"doc": "Database schema of the ADM and USR libraries (Oracle user, e.g. XXX50)"},
    )
    part_rows: int = field(default=250_000, metadata={"doc": "Z-table rows per extracted part"})
    part_bytes: int = field(default=64 * 1024 * 1024, metadata={"doc": "ALEPHSEQ bytes per extracted part"})
    db_chunk_rows: int = field(default=50_000, metadata={"doc": "Rows fetched per database round trip"})
    items_in_bib_field: str = field(default="", metadata={
        "doc": "Also deliver the bibs with their items embedded in this field (e.g. 949, a tag the records "
               "do not use), for an import-profile load; '' = items only as their own file"})

    @property
    def qualified_bib_ids(self) -> bool:
        """Several BIB libraries number their bibs alike: bib 001s are then ``<library><sysno>``."""
        return len(self.bib_libraries) > 1

    @property
    def adm_library_lower(self) -> str:
        return self.adm_library.lower()


def describe() -> dict[str, str]:
    """Field name → description, for the README and error messages."""
    return {f.name: f.metadata.get("doc", "") for f in fields(MigrationSettings)}


def from_mapping(data: dict[str, Any]) -> MigrationSettings:
    known = {f.name for f in fields(MigrationSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(known))}")
    if "migration_id" not in data:
        raise SettingsError("setting 'migration_id' is required")
    values = dict(data)
    if "bib_libraries" in values:
        bib_known = {f.name for f in fields(BibLibrary)}
        libs = []
        for lib in values["bib_libraries"]:
            bad = sorted(set(lib) - bib_known)
            if bad:
                raise SettingsError(f"unknown bib_libraries key(s) {', '.join(bad)}; known: {', '.join(sorted(bib_known))}")
            if lib.get("flavour", "MARC21") not in ("MARC21", "CNMARC"):
                raise SettingsError(f"bib library {lib.get('code')!r}: flavour must be MARC21 or CNMARC, not {lib['flavour']!r}")
            libs.append(BibLibrary(**lib))
        values["bib_libraries"] = tuple(libs)
    tag = values.get("items_in_bib_field", "")
    if tag:
        from aleph2alma.marc.bibs import is_data_field_tag

        if not is_data_field_tag(str(tag)):
            raise SettingsError(f"items_in_bib_field must be a data-field tag such as 949, or '', not {tag!r}")
    if "schemas" in values:
        values["schemas"] = {k: (v or None) for k, v in values["schemas"].items()}
    return MigrationSettings(**values)


def load(migration_id: str, root: Path | None = None) -> MigrationSettings:
    """Load ``<root>/<migration_id>/migration.toml``."""
    path = (root or CONFIG_ROOT) / migration_id / "migration.toml"
    if not path.exists():
        raise SettingsError(f"no settings for migration {migration_id!r}: {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    data.setdefault("migration_id", migration_id)
    return from_mapping(data)
