"""The delivery package: what Ex Libris loads, as one deterministic zip.

Its shape is Ex Libris' *Generic Alma Data Delivery Specifications*: bibs and holdings as MARC,
items and fulfillment as CSV described by a Field Mapping form (``delivery.field_mapping``),
users as Alma's user XML, one member per file. JSON lines are the transform's internal format:
they are turned into CSV here and never delivered.

=============================  ===============  ==================================================
member                         entity           built from
=============================  ===============  ==================================================
``bibs_<BIB library>.mrc``     bibs             the library's ISO 2709 parts, concatenated in order
``bibs_with_items_<lib>.mrc``  bibs_with_items  the same bibs with their items embedded, when
                                                ``items_in_bib_field`` is set (import-profile load)
``holdings.mrc``               holdings         all holdings parts (ISO 2709), concatenated
``items.csv``                  items            CSV parts concatenated under ONE header
``users.xml``                  patrons          the SIS user XML (a single part)
``loans.csv``                  loans            the JSON lines parts as CSV, the columns of
                                                ``field_mapping.LOANS``
``requests.csv``               requests         likewise (``field_mapping.REQUESTS``)
``fines.csv``                  fines            likewise (``field_mapping.FINES``)
``p2e.txt``                    p2e              the P2E file
``migration_form.xlsx``        —                the filled migration form (``write_form``)
``field_mapping.xlsx``         —                each CSV column's Alma field; the delivered files
                                                with their record counts
``MANIFEST.json``              —                per member: bytes, sha256, records, source parts;
                                                per entity: the source manifest URI and its counts
=============================  ===============  ==================================================

Only the entities given are packaged (a cutover inventory package has no fulfillment data; the
fulfillment snapshot has no bibs); the form and ``MANIFEST.json`` are always there.

Bounded memory and disk: parts are downloaded one at a time (each checked against the sha256 in
its manifest), streamed into the zip member and deleted, so the worker needs room for the zip
plus one part. ZIP64 is used when a member may pass 4 GiB.

Deterministic: members in a fixed order, every entry dated 1980-01-01 00:00:00 with mode 0644,
the form workbook's own timestamps normalised and no build time anywhere, so the same inputs
(and the same zlib) give identical zip bytes: a retry writes the same key with the same sha256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from aleph2alma.delivery.field_mapping import DELIMITED, FIELD_MAPPING_MEMBER, csv_cell, write_field_mapping
from aleph2alma.errors import PermanentError
from aleph2alma.storage import ArtifactStore, Manifest, RunScope, StoredFile

PACKAGE_STAGE = "package"
PACKAGE_ENTITY = "delivery"
MANIFEST_MEMBER = "MANIFEST.json"
FORM_MEMBER = "migration_form.xlsx"
PACKAGE_SCHEMA_VERSION = 1
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
FIXED_W3CDTF = "1980-01-01T00:00:00Z"
FILE_MODE = 0o100644  # regular file, rw-r--r--
CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._\-]+")
_CORE_DATES = re.compile(rb"(<dcterms:(created|modified)\b[^>]*>)[^<]*(</dcterms:\2>)")

Join = Literal["bytes", "lines", "csv", "jsonl_csv", "one"]


class PackageError(PermanentError):
    """The package cannot be built from what was given (unknown entity, parts that do not join)."""


@dataclass(frozen=True)
class Layout:
    """How one entity's parts become zip members."""

    entity: str
    member: str  # ``{source}`` is replaced by the part's source when per_source
    # bytes: concatenate; lines: concatenate, newline-terminated; csv: one header;
    # jsonl_csv: JSON lines written as CSV rows; one: single part
    join: Join
    per_source: bool = False


LAYOUTS: tuple[Layout, ...] = (
    Layout("bibs", "bibs_{source}.mrc", "bytes", per_source=True),  # MARC 21 and CNMARC libraries stay apart
    Layout("bibs_with_items", "bibs_with_items_{source}.mrc", "bytes", per_source=True),
    Layout("holdings", "holdings.mrc", "bytes"),
    Layout("items", "items.csv", "csv"),
    Layout("patrons", "users.xml", "one"),  # XML documents cannot be concatenated
    Layout("loans", "loans.csv", "jsonl_csv"),
    Layout("requests", "requests.csv", "jsonl_csv"),
    Layout("fines", "fines.csv", "jsonl_csv"),
    Layout("p2e", "p2e.txt", "lines"),
)
ENTITIES = tuple(layout.entity for layout in LAYOUTS)


@dataclass
class PackageResult:
    """A committed package: its key and URI in the artifact store, size, sha256 and members."""

    key: str
    uri: str
    bytes: int
    sha256: str
    members: list[dict[str, Any]] = field(default_factory=list)  # name, entity, bytes, sha256, records

    @property
    def name(self) -> str:
        """The file name the package is delivered under."""
        return self.key.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        """For XCom (references and counts only)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackageResult:
        return cls(
            data["key"], data["uri"], int(data["bytes"]), data["sha256"], list(data.get("members", []))
        )


@dataclass
class _Member:
    name: str
    entity: str
    join: Join
    parts: list[StoredFile]
    manifest: str

    @property
    def records(self) -> int:
        return sum(p.records for p in self.parts)

    @property
    def upper_bound(self) -> int:
        """Bytes the member can reach (newlines added between parts included): decides ZIP64.

        A CSV row is shorter than its JSON line unless quoting doubles its quotes: twice the
        JSON is a safe bound (ZIP64 from 2 GiB of JSON on, which costs nothing)."""
        json_bytes = sum(p.bytes + 1 for p in self.parts)
        return 2 * json_bytes + 64 * 1024 if self.join == "jsonl_csv" else json_bytes


def package_name(migration_id: str, scope: RunScope) -> str:
    """The default package name: migration, DAG and run, with anything unsafe in a file name as ``-``."""
    return _UNSAFE_CHARS.sub("-", f"{migration_id}_{scope.dag_id}_{scope.run_id}").strip("-.")


def _check_name(name: str) -> str:
    if not _SAFE_NAME.match(name) or name.endswith(".zip"):
        raise PackageError(
            f"package name {name!r} is not a safe file name; use letters, digits and . _ - "
            "(starting with a letter or digit, without the .zip extension)"
        )
    return name


def plan_members(
    store: ArtifactStore, alma_manifests: Mapping[str, str]
) -> tuple[list[_Member], dict[str, Manifest]]:
    """The data members, in package order, from the committed manifests (read before any download)."""
    unknown = sorted(set(alma_manifests) - set(ENTITIES))
    if unknown:
        raise PackageError(
            f"cannot package entity {', '.join(map(repr, unknown))}; accepted: {', '.join(ENTITIES)}"
        )
    members: list[_Member] = []
    manifests: dict[str, Manifest] = {}
    for layout in LAYOUTS:
        uri = alma_manifests.get(layout.entity)
        if uri is None:
            continue
        manifest = store.manifest(uri)
        if manifest.entity != layout.entity:
            raise PackageError(f"{uri} is the manifest of {manifest.entity!r}, given as {layout.entity!r}")
        manifests[layout.entity] = manifest
        parts = sorted(manifest.parts(), key=lambda p: p.key)
        if not layout.per_source:
            parts.sort(key=lambda p: p.source)  # stable: by source, then by key (part index)
            if layout.join == "one" and len(parts) > 1:
                raise PackageError(
                    f"{layout.entity}: {len(parts)} parts in {uri}; {layout.member} must be a "
                    "single part (XML documents cannot be concatenated)"
                )
            members.append(_Member(layout.member, layout.entity, layout.join, parts, uri))
            continue
        for source in sorted({p.source for p in parts}):
            if not _SAFE_NAME.match(source):
                raise PackageError(
                    f"{layout.entity}: source {source!r} in {uri} cannot name a file; "
                    "use letters, digits and . _ -"
                )
            members.append(
                _Member(
                    layout.member.format(source=source),
                    layout.entity,
                    layout.join,
                    [p for p in parts if p.source == source],
                    uri,
                )
            )
    return members, manifests


def member_format(name: str) -> str:
    """What a member is, for the Delivered Files tab."""
    if name.endswith(".mrc"):
        return "MARC (ISO 2709), UTF-8"
    if name.endswith(".csv"):
        return "CSV, UTF-8, comma-separated, header row"
    if name == "users.xml":
        return "Alma user XML (rest_users.xsd), UTF-8"
    if name.endswith(".xlsx"):
        return "Excel workbook"
    return "text, UTF-8"


def _zipinfo(name: str, size_bound: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, whatever the worker's platform
    info.external_attr = FILE_MODE << 16
    info.file_size = size_bound  # only decides ZIP64 (deterministically); the real size replaces it on close
    return info


class _HashingWriter:
    """Counts and hashes what goes into a zip member."""

    def __init__(self, dest: IO[bytes]) -> None:
        self.dest = dest
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.last = b"\n"

    def write(self, data: bytes) -> None:
        if data:
            self.dest.write(data)
            self.digest.update(data)
            self.bytes += len(data)
            self.last = data[-1:]

    def copy(self, src: IO[bytes]) -> None:
        while block := src.read(CHUNK):
            self.write(block)


CSV_ROWS_PER_WRITE = 10_000


def _write_jsonl_as_csv(out: _HashingWriter, member: _Member, store: ArtifactStore, tmp: Path) -> list[str]:
    """The entity's JSON lines as CSV rows under the Field Mapping form's columns; a key the form
    does not describe stops the package (it would be dropped without anyone knowing)."""
    columns = DELIMITED[member.entity].header
    known = set(columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for part in member.parts:
        local = store.download(part.key, tmp / "part", part.sha256)
        with open(local, "rb") as src:
            for number, line in enumerate(src, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                unknown = sorted(set(record) - known)
                if unknown:
                    raise PackageError(
                        f"{store.uri(part.key)} line {number}: {', '.join(unknown)} not a column of "
                        f"{member.name}; add it to delivery.field_mapping.{member.entity.upper()}"
                    )
                writer.writerow([csv_cell(record.get(c)) for c in columns])
                if number % CSV_ROWS_PER_WRITE == 0:
                    out.write(buffer.getvalue().encode("utf-8"))
                    buffer.seek(0)
                    buffer.truncate()
        local.unlink()
    out.write(buffer.getvalue().encode("utf-8"))
    return columns


def _described_columns(store: ArtifactStore, member: _Member, part: StoredFile, header: bytes) -> list[str]:
    """The CSV header's columns; each must be one the Field Mapping form describes."""
    columns = next(csv.reader([header.decode("utf-8")]), [])
    spec = DELIMITED.get(member.entity)
    unknown = [c for c in columns if spec is not None and c not in spec.header]
    if unknown:
        raise PackageError(
            f"{store.uri(part.key)}: column {', '.join(unknown)} of {member.name} has no Alma field in "
            f"the Field Mapping form; add it to delivery.field_mapping.{member.entity.upper()}"
        )
    return columns


def _copy_parts(out: _HashingWriter, member: _Member, store: ArtifactStore, tmp: Path) -> list[str]:
    """The parts one after the other, as the member's join says (one header for CSV); the CSV's columns."""
    header: bytes | None = None
    columns: list[str] = []
    for part in member.parts:
        local = store.download(part.key, tmp / "part", part.sha256)  # StorageError names the key
        with open(local, "rb") as src:
            if member.join in ("lines", "csv") and out.last != b"\n":
                out.write(b"\n")
            if member.join == "csv":
                first = src.readline()
                if header is None:
                    header = first or None  # an empty first part has no header to keep
                    if header:
                        columns = _described_columns(store, member, part, header)
                    out.write(first)
                elif first.rstrip(b"\r\n") != header.rstrip(b"\r\n"):
                    raise PackageError(
                        f"{store.uri(part.key)}: CSV header {first[:200]!r} differs from the "
                        f"first part's {header[:200]!r}; {member.name} takes one header"
                    )
            out.copy(src)
        local.unlink()
    return columns


def _write_member(zf: zipfile.ZipFile, member: _Member, store: ArtifactStore, tmp: Path) -> dict[str, Any]:
    with zf.open(_zipinfo(member.name, member.upper_bound), "w") as raw:
        out = _HashingWriter(raw)
        if member.join == "jsonl_csv":
            columns = _write_jsonl_as_csv(out, member, store, tmp)
        else:
            columns = _copy_parts(out, member, store, tmp)
    return {
        "name": member.name,
        "entity": member.entity,
        "bytes": out.bytes,
        "sha256": out.digest.hexdigest(),
        "records": member.records,
        "manifest": member.manifest,
        "parts": [p.key for p in member.parts],
        **({"columns": columns} if columns else {}),
    }


def _normalised_xlsx(path: Path) -> bytes:
    """The workbook with its build time removed: fixed entry dates and core-properties dates."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "docProps/core.xml":
                data = _CORE_DATES.sub(rb"\g<1>" + FIXED_W3CDTF.encode() + rb"\g<3>", data)
            dst.writestr(_zipinfo(item.filename, len(data)), data)
    return buffer.getvalue()


def _write_bytes(zf: zipfile.ZipFile, name: str, data: bytes, entity: str = "") -> dict[str, Any]:
    zf.writestr(_zipinfo(name, len(data)), data)
    return {
        "name": name,
        "entity": entity,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "records": 0,
    }


def build_package(
    store: ArtifactStore,
    scope: RunScope,
    alma_manifests: Mapping[str, str],
    form_path: Path,
    migration_id: str,
    *,
    name: str | None = None,
    tmp_dir: Path | None = None,
    entity: str = PACKAGE_ENTITY,
) -> PackageResult:
    """Build, upload and commit the delivery package of a run.

    ``alma_manifests`` maps entity (one of :data:`ENTITIES`) to its committed ``alma/`` manifest
    URI; ``form_path`` is the migration form (CSV directory or workbook), checked by ``load_form``
    and packaged as ``.xlsx``. The zip goes to ``<run>/package/delivery/<name>.zip`` and the
    ``package`` stage's manifest is committed last. ``tmp_dir`` is where the zip is built (it needs
    the zip's size plus the largest part). ``entity``: the package stage's entity, for a run that
    delivers more than one package (a cutover: ``inventory``, then ``fulfillment``). Raises
    StorageError when a part does not match its manifest, PackageError when the inputs cannot make
    a package, FormError for a broken form.
    """
    from aleph2alma.alma.form import load_form, write_form

    if migration_id != scope.migration_id:
        raise PackageError(
            f"migration id {migration_id!r} differs from the run scope's {scope.migration_id!r}"
        )
    name = _check_name(name or package_name(migration_id, scope))
    members, manifests = plan_members(store, alma_manifests)
    form = load_form(Path(form_path))
    key = scope.prefix(PACKAGE_STAGE, entity) + f"{name}.zip"

    with tempfile.TemporaryDirectory(prefix="aleph2alma-package-", dir=tmp_dir) as work:
        tmp = Path(work)
        zip_path = tmp / f"{name}.zip"
        write_form(form, tmp / FORM_MEMBER)
        form_bytes = _normalised_xlsx(tmp / FORM_MEMBER)
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            written = [_write_member(zf, member, store, tmp) for member in members]
            written.append(_write_bytes(zf, FORM_MEMBER, form_bytes, "form"))
            mapping = tmp / FIELD_MAPPING_MEMBER
            write_field_mapping(
                mapping,
                [DELIMITED[m["entity"]].only(m["columns"]) for m in written if m.get("columns")],
                [{**m, "format": member_format(m["name"])} for m in written],
            )
            written.append(_write_bytes(zf, FIELD_MAPPING_MEMBER, _normalised_xlsx(mapping), "field_mapping"))
            body = {
                "schema_version": PACKAGE_SCHEMA_VERSION,
                "package": f"{name}.zip",
                "migration_id": migration_id,
                "run": {"dag_id": scope.dag_id, "run_id": scope.run_id},
                "members": written,
                "sources": {entity: alma_manifests[entity] for entity in manifests},
                "counts": {
                    entity: {
                        "records": m.records,
                        "rejected": m.rejected,
                        "records_in": m.extra.get("records_in", m.records + m.rejected),
                    }
                    for entity, m in manifests.items()
                },
            }
            text = (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
            zf.writestr(_zipinfo(MANIFEST_MEMBER, len(text)), text)
        stored = store.put_file(
            key, zip_path, records=sum(m.records for m in manifests.values()), source="package", kind="part"
        )
    summary = [{k: m[k] for k in ("name", "entity", "bytes", "sha256", "records")} for m in written]
    store.commit(
        scope,
        PACKAGE_STAGE,
        entity,
        [stored],
        extra={
            "package": f"{name}.zip",
            "members": summary,
            "sources": body["sources"],
            "counts": body["counts"],
        },
    )
    return PackageResult(key, store.uri(key), stored.bytes, stored.sha256, summary)
