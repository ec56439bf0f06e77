"""Per-migration settings: which Aleph libraries exist, where they live, how to split work.

Read from ``include/config/<migration_id>/migration.toml`` into ``MigrationSettings``, a
frozen pydantic dataclass (so ``dataclasses.replace`` works and re-checks the values).
Every key has a default and a description (``describe()``); ``migration_id`` defaults to
the directory name. An unknown key, a value of the wrong type or outside its allowed
values is a ``SettingsError`` (a ``ConfigError``: the task fails at once) naming the file,
the key and what is allowed, e.g.::

    …/demo/migration.toml: bib_libraries[2].flavour: "MARK21" is not allowed; allowed: 'MARC21' or 'CNMARC'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic.dataclasses import dataclass

from aleph2alma import config
from aleph2alma.errors import ConfigError
from aleph2alma.postlive.settings import PostGoLiveSettings

MarcFlavour = Literal["MARC21", "CNMARC"]
SCHEMA_LIBRARIES = ("adm", "usr")
"""The Aleph libraries whose Z-tables are read from the database (``aleph.ztables``)."""

CONFIG_ROOT = Path(os.environ.get("ALEPH2ALMA_CONFIG_ROOT", Path(__file__).resolve().parents[1] / "config"))

_MODEL = ConfigDict(extra="forbid")


class SettingsError(ConfigError):
    """The migration settings file is missing, malformed, or has an unknown key or a bad value."""


@dataclass(frozen=True, config=_MODEL)
class BibLibrary:
    """One ``[[bib_libraries]]`` block."""

    code: Annotated[str, Field(description="Aleph BIB library code, e.g. BNU01")]
    flavour: MarcFlavour = Field(
        default="MARC21", description="MARC flavour of the library's records: MARC21 or CNMARC"
    )
    file: str = Field(
        default="", description="ALEPHSEQ export file name in the landing location, e.g. BNU01.seq"
    )


def _default_schemas() -> dict[str, str | None]:
    return dict.fromkeys(SCHEMA_LIBRARIES)


PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


@dataclass(frozen=True, config=_MODEL)
class NightlySettings:
    """The ``[nightly]`` table: when ``aleph_nightly_delta`` runs and how it finds changes.

    The DAG file reads this table at parse time (``nightly_settings``: the file only, no
    network or database), because a schedule and its time zone are part of the DAG.
    """

    schedule: str = Field(
        default="0 2 * * *",
        description="When aleph_nightly_delta runs: a 5-field cron expression in time_zone "
        '(minute hour day-of-month month day-of-week), e.g. "0 2 * * *" for 02:00',
    )
    time_zone: str = Field(
        default="UTC",
        description="IANA time zone of the schedule and of Aleph's dates (YYYYMMDD update dates and "
        "CAT lines are local days), e.g. Asia/Shanghai; a trigger form's window without an offset "
        "is read in it too",
    )
    by_update_date: StrictBool = Field(
        default=True,
        description="Read Z-tables that have an update-date column (Z30, Z303) by that column, plus "
        "a key-only scan for inserts and deletes, instead of hashing every row; false: every row of "
        "every table is read and hashed each night (use it if a batch job changes rows without "
        "stamping them: the summary's unstamped count shows whether that happens)",
    )
    lookback_days: NonNegativeInt = Field(
        default=1,
        description="Days before the window's start whose update dates are read again (rows already "
        "seen are recognised by their hash): covers clocks or a time zone that disagree with Aleph's",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(
                f"{config.show(value)} is not a cron expression; allowed: 5 fields "
                '(minute hour day-of-month month day-of-week), e.g. "0 2 * * *"'
            )
        return " ".join(fields)

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        return config.time_zone(value)


_KMS_KEY = re.compile(
    r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_+=,.@-]+"
    r"|alias/[A-Za-z0-9/_-]+"
    r"|(mrk-)?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|mrk-[0-9a-f]{32})$"
)


@dataclass(frozen=True, config=_MODEL)
class StorageSettings:
    """The ``[storage]`` table: how the artifact store encrypts what it writes.

    Every object is written with server-side encryption: SSE-S3 (``AES256``) by default, SSE-KMS
    (``aws:kms``) with ``kms_key_id`` when it is set. The key forms are PutObject's
    ``x-amz-server-side-encryption-aws-kms-key-id`` (key id, key ARN, alias name or alias ARN;
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html); a key of another
    account needs its full ARN.
    """

    kms_key_id: str = Field(
        default="",
        description="KMS key for SSE-KMS encryption of every artifact: a key id, key ARN, alias/<name> or "
        "alias ARN; '' = SSE-S3 (AES256, keys managed by S3)",
    )

    @field_validator("kms_key_id")
    @classmethod
    def _kms_key(cls, value: str) -> str:
        value = value.strip()
        if value and not _KMS_KEY.match(value):
            raise ValueError(
                f"{config.show(value)} is not a KMS key; allowed: a key id "
                '("1234abcd-12ab-34cd-56ef-1234567890ab"), a key or alias ARN '
                '("arn:aws:kms:eu-west-1:111122223333:key/…"), "alias/<name>", or "" for SSE-S3'
            )
        return value


DeliveryMode = Literal["generic", "autoextract"]
AUTOEXTRACT_STEPS = ("generate_form", "validate_p2e", "extract", "package", "transfer")
"""AutoExtract's menu steps, in the order they run (Ex Libris' Aleph to Alma AutoExtract package)."""


@dataclass(frozen=True, config=_MODEL)
class AutoExtractStep:
    """One ``[[delivery.autoextract.steps]]`` block: a command run on the Aleph server over SSH."""

    name: str = Field(
        description="Which AutoExtract step this is: " + ", ".join(AUTOEXTRACT_STEPS) + " (they run in that "
        "order; a step not given is skipped)"
    )
    command: str = Field(
        description="The shell command that runs this step of AutoExtract on the Aleph server, as the "
        "SSH connection's user (the aleph user), in workdir; a non-zero exit fails the step"
    )
    expected_outputs: tuple[str, ...] = Field(
        default=(),
        description="Glob patterns, relative to output_dir, that this step must have produced; each "
        "must match at least one file, and every match is staged in S3",
    )
    timeout_minutes: PositiveInt = Field(default=240, description="Minutes the command may run")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value not in AUTOEXTRACT_STEPS:
            raise ValueError(
                f"{config.show(value)} is not an AutoExtract step; allowed: {', '.join(AUTOEXTRACT_STEPS)}"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: the shell command that runs this AutoExtract step")
        return value.strip()

    @field_validator("expected_outputs")
    @classmethod
    def _outputs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if not p.strip() or p.startswith("/") or ".." in p.split("/")]
        if bad:
            raise ValueError(
                f"{', '.join(map(config.show, bad))}: a pattern must be relative to output_dir "
                'and stay inside it, e.g. "extract/*.mrc"'
            )
        return value


@dataclass(frozen=True, config=_MODEL)
class AutoExtractSettings:
    """The ``[delivery.autoextract]`` table: where Ex Libris' AutoExtract runs and its steps."""

    ssh_conn_id: str = Field(
        default="aleph_ssh", description="Airflow SSH connection to the Aleph server (the aleph user)"
    )
    workdir: str = Field(
        default="", description="Directory the commands run in (absolute path on the Aleph server)"
    )
    output_dir: str = Field(
        default="", description="Directory AutoExtract writes into (absolute path on the Aleph server)"
    )
    steps: tuple[AutoExtractStep, ...] = Field(
        default=(),
        description="The AutoExtract steps in the order they run, one [[delivery.autoextract.steps]] "
        f"block each; usually {', '.join(AUTOEXTRACT_STEPS)}",
    )

    @field_validator("workdir", "output_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"{config.show(value)} must be an absolute path on the Aleph server")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[AutoExtractStep, ...]) -> tuple[AutoExtractStep, ...]:
        names = [s.name for s in steps]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"step {', '.join(twice)} given more than once; each step runs once")
        return steps

    def step(self, name: str) -> AutoExtractStep | None:
        """The configured step of that name; None when this site does not run it."""
        return next((s for s in self.steps if s.name == name), None)


@dataclass(frozen=True, config=_MODEL)
class DeliverySettings:
    """The ``[delivery]`` table: which of Ex Libris' documented delivery paths the test load takes.

    ``generic``: the *Generic Alma Data Delivery Specifications* — bibs and holdings as MARC 21,
    items and fulfillment as CSV described by a generated Field Mapping form, users as Alma's user
    XML; we build, package and deliver. ``autoextract``: Ex Libris' AutoExtract runs on the Aleph
    server and builds, packages and transfers the delivery; the DAG runs its steps over SSH and
    stages what they produced. Our own extract and transform run in both modes: they feed the
    validation report, the worklists and the reconciliation.
    """

    mode: DeliveryMode = Field(
        default="generic",
        description="generic (we build the package: MARC + CSV + Field Mapping form) or autoextract "
        "(Ex Libris' AutoExtract builds it on the Aleph server; its steps run over SSH)",
    )
    autoextract: AutoExtractSettings = Field(
        default_factory=AutoExtractSettings,
        description="[delivery.autoextract]: SSH connection, directories and steps of AutoExtract",
    )

    def __post_init__(self) -> None:
        auto = self.autoextract
        if self.mode == "autoextract" and not (auto.steps and auto.workdir and auto.output_dir):
            raise ValueError(
                "mode autoextract needs [delivery.autoextract] workdir, output_dir and at least one "
                "[[delivery.autoextract.steps]] block (name, command, expected_outputs)"
            )


@dataclass(frozen=True, config=_MODEL)
class CutoverSettings:
    """The ``[cutover]`` table: what may block go-live. Read when the task runs: after raising a
    limit, clear the task that stopped."""

    freeze_violation_threshold: StrictInt = Field(
        default=0,
        ge=0,
        description="Records Aleph may stamp as changed (update dates, CAT lines) of bibs, holdings and "
        "items after the technical-services freeze began before go-live is blocked",
    )
    external_id: str = Field(
        default="SIS",
        min_length=1,
        description="The code of Alma's student-information-system integration profile that external "
        "patrons belong to: their external_id when the fulfillment is loaded through the API",
    )


@dataclass(frozen=True, config=_MODEL)
class MigrationSettings:
    """The keys of ``migration.toml``."""

    migration_id: Annotated[
        str,
        Field(
            description="Names the migration; prefixes every artifact in S3. "
            "Defaults to the name of the config directory"
        ),
    ]
    institution: str = Field(default="", description="Institution name shown in reports")
    bib_libraries: tuple[BibLibrary, ...] = Field(
        default=(BibLibrary("XXX01", "MARC21", "XXX01.seq"),),
        description="BIB libraries and their MARC flavour, one [[bib_libraries]] block each "
        "(code, flavour, file)",
    )
    hol_library: str = Field(default="XXX60", description="Aleph HOL library code")
    hol_file: str = Field(default="XXX60.seq", description="ALEPHSEQ export of the HOL library")
    adm_library: str = Field(default="XXX50", description="Aleph ADM library code")
    schemas: dict[str, str | None] = Field(
        default_factory=_default_schemas,
        description="Database schema of the ADM and USR libraries (Oracle user, e.g. XXX50); "
        "keys adm and usr, '' = the connection's default schema",
    )
    part_rows: PositiveInt = Field(default=250_000, description="Z-table rows per extracted part")
    part_bytes: PositiveInt = Field(default=64 * 1024 * 1024, description="ALEPHSEQ bytes per extracted part")
    db_chunk_rows: PositiveInt = Field(default=50_000, description="Rows fetched per database round trip")
    nightly: NightlySettings = Field(
        default_factory=NightlySettings,
        description="The nightly delta ([nightly] table): schedule, time zone, how changes are found",
    )
    storage: StorageSettings = Field(
        default_factory=StorageSettings,
        description="The artifact store ([storage] table): kms_key_id for SSE-KMS, else SSE-S3",
    )
    delivery: DeliverySettings = Field(
        default_factory=DeliverySettings,
        description="The delivery ([delivery] table): mode generic or autoextract, and AutoExtract's steps",
    )
    post_go_live: PostGoLiveSettings = Field(
        default_factory=PostGoLiveSettings,
        description="After go-live ([post_go_live] table): offline circulation files, worklists, archive",
    )
    cutover: CutoverSettings = Field(
        default_factory=CutoverSettings,
        description="The cutover ([cutover] table): the freeze-violation threshold that blocks go-live",
    )
    items_in_bib_field: str = Field(
        default="",
        description="Also deliver the bibs with their items embedded in this field (e.g. 949, a tag "
        "the records do not use), for an import-profile load; '' = items only as their own file",
    )

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        unknown = sorted(set(value) - set(SCHEMA_LIBRARIES))
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)}; known keys: {', '.join(SCHEMA_LIBRARIES)}"
            )
        return {library: (value.get(library) or None) for library in SCHEMA_LIBRARIES}

    @field_validator("items_in_bib_field")
    @classmethod
    def _items_field(cls, tag: str) -> str:
        from aleph2alma.marc.bibs import is_data_field_tag

        if tag and not is_data_field_tag(tag):
            raise ValueError(
                f"{config.show(tag)} is not a data-field tag; allowed: a tag from 010 to 999 that "
                'the records do not use, e.g. "949", or "" (items only as their own file)'
            )
        return tag

    @field_validator("bib_libraries")
    @classmethod
    def _libraries(cls, libraries: tuple[BibLibrary, ...]) -> tuple[BibLibrary, ...]:
        if not libraries:
            raise ValueError("must not be empty; give one [[bib_libraries]] block per BIB library")
        codes = [lib.code for lib in libraries]
        twice = sorted({c for c in codes if codes.count(c) > 1})
        if twice:
            raise ValueError(f"code {', '.join(twice)} given more than once; one block per BIB library")
        return libraries

    @property
    def qualified_bib_ids(self) -> bool:
        """Several BIB libraries number their bibs alike: bib 001s are then ``<library><sysno>``."""
        return len(self.bib_libraries) > 1


def describe() -> dict[str, str]:
    """Key → description of ``migration.toml``, for the README and error messages."""
    return config.describe(MigrationSettings)


def from_mapping(data: dict[str, Any], source: str = "migration.toml") -> MigrationSettings:
    """Settings from a parsed ``migration.toml``; ``SettingsError`` lists every problem."""
    return config.validate(MigrationSettings, data, source, SettingsError)


def nightly_settings(migration_id: str, root: Path | None = None) -> NightlySettings:
    """The ``[nightly]`` table of ``<root>/<migration_id>/migration.toml`` alone, checked.

    Cheap enough for DAG parse time: one small file, no other validation (the task loads and
    checks the whole file); a missing file or a bad value is the same ``SettingsError``.
    """
    path = (root or CONFIG_ROOT) / migration_id / "migration.toml"
    data = config.read_toml(path, SettingsError)
    return config.validate(
        _NightlyOnly, {"nightly": data.get("nightly", {})}, str(path), SettingsError
    ).nightly


@dataclass(frozen=True, config=ConfigDict(extra="ignore"))
class _NightlyOnly:
    """``migration.toml`` seen for its ``[nightly]`` table only (errors keep the key path)."""

    nightly: NightlySettings


def load(migration_id: str, root: Path | None = None) -> MigrationSettings:
    """Load ``<root>/<migration_id>/migration.toml`` (root: ``CONFIG_ROOT``)."""
    root = root or CONFIG_ROOT
    known = sorted(p.parent.name for p in root.glob("*/migration.toml"))
    return config.load_toml(
        root / migration_id / "migration.toml",
        MigrationSettings,
        SettingsError,
        defaults={"migration_id": migration_id},
        missing_hint=f"no settings for migration {migration_id!r}; migrations with settings "
        f"under {root}: {', '.join(known) or 'none'}",
    )
