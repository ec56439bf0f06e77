"""The ``[post_go_live]`` tables of ``migration.toml``: the offline circulation files' layout, the
clean-up worklists (which patrons are test patrons, which process statuses are acquisitions, how
suppression is marked) and the archive (storage class, retention)."""

from __future__ import annotations

import codecs
import re
from datetime import UTC, datetime
from typing import Annotated, Literal, get_args

from pydantic import ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic import dataclasses as pydantic_dataclasses
from pydantic.dataclasses import dataclass as settings_dataclass

from aleph2alma import config

_MODEL = ConfigDict(extra="forbid")


@settings_dataclass(frozen=True, config=_MODEL)
class WorklistSettings:
    """The ``[post_go_live.worklists]`` table: which records the post-go-live clean-up worklists list."""

    test_patron_bor_statuses: tuple[str, ...] = Field(
        default=(),
        description="Aleph bor statuses (Z305_BOR_STATUS) given only to test or dummy patrons; every "
        "patron with one of them is listed. BNU's code table has none, so none by default",
    )
    test_patron_name_patterns: tuple[str, ...] = Field(
        default=(r"(?i)(?<![a-z])(test|dummy)(?![a-z])", "测试|測試"),
        description="Python regular expressions searched in Z303_NAME; a match lists the patron (the "
        "name itself is never written to a worklist). Defaults: TEST or DUMMY as a word, any case, "
        "and 测试/測試 ('test')",
    )
    test_patron_id_patterns: tuple[str, ...] = Field(
        default=(r"(?i)^(test|dummy)",),
        description="Python regular expressions searched in the patron's Z303 key, primary id and Z308 "
        "identifiers (barcode, other ids); a match lists the patron. Default: ids starting TEST or DUMMY",
    )
    acquisition_process_statuses: tuple[str, ...] = Field(
        default=("OR", "AC"),
        description="Z30_ITEM_PROCESS_STATUS codes of items still in acquisition (BNU: OR on order; "
        "AC in acquisition at sites that use it); each such item is listed",
    )
    suppressed_tag: str = Field(
        default="STA",
        description="The ALEPHSEQ tag whose $a marks a bib or holdings record suppressed from discovery",
    )
    suppressed_values: tuple[str, ...] = Field(
        default=("SUPPRESSED",),
        description="Values of that tag's $a (compared in upper case) that mean suppressed from discovery",
    )
    list_api_loan_dates: StrictBool = Field(
        default=False,
        description="When the loans went in through Alma's API: also list every loan it created, "
        "whose loan date in Alma is the day of the load (Aleph's loan date is in the worklist)",
    )

    @field_validator("test_patron_name_patterns", "test_patron_id_patterns")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"{config.show(pattern)} is not a regular expression ({exc}); allowed: Python "
                    'regular expressions, e.g. "(?i)^test"'
                ) from None
        return patterns

    @field_validator("test_patron_bor_statuses", "acquisition_process_statuses", "suppressed_values")
    @classmethod
    def _codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        if any(not c.strip() for c in codes):
            raise ValueError('a code must not be blank; give the Aleph codes, e.g. ["OR"]')
        return tuple(c.strip() for c in codes)

    @field_validator("suppressed_tag")
    @classmethod
    def _tag(cls, tag: str) -> str:
        if not re.fullmatch(r"[0-9A-Z]{3}", tag):
            raise ValueError(
                f"{config.show(tag)} is not an ALEPHSEQ tag; allowed: 3 letters or digits, e.g. STA"
            )
        return tag


StorageClass = Literal["STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"]
LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


@settings_dataclass(frozen=True, config=_MODEL)
class ArchiveSettings:
    """The ``[post_go_live.archive]`` table: how the final snapshot and the delivered packages are kept."""

    storage_class: StorageClass = Field(
        default="STANDARD_IA",
        description="S3 storage class of the archived copies: STANDARD_IA (default), GLACIER_IR, ONEZONE_IA, "
        "INTELLIGENT_TIERING or STANDARD; classes that need a restore before a read (GLACIER, "
        "DEEP_ARCHIVE) are refused, because every copy is verified by reading its checksum",
    )
    retention_days: StrictInt = Field(
        default=3650,
        gt=0,
        description="Days after the run's as-of date the archive is kept: its retain-until date (an "
        "Object Lock retention when the bucket has Object Lock, else the retain-until tag a lifecycle "
        "rule must honour)",
    )
    object_lock_mode: LockMode = Field(
        default="GOVERNANCE",
        description="Object Lock mode when the bucket has Object Lock enabled: GOVERNANCE (users with "
        "s3:BypassGovernanceRetention can still delete) or COMPLIANCE (nobody can, until the date)",
    )


Action = Literal["loan", "return", "renew"]
ACTIONS: tuple[Action, ...] = get_args(Action)
_SAMPLE = datetime(2026, 11, 2, 9, 30, 5, tzinfo=UTC)


def _default_actions() -> dict[Action, tuple[str, ...]]:
    return {
        "loan": ("loan", "checkout", "借出"),
        "return": ("return", "checkin", "归还"),
        "renew": ("renew", "续借"),
    }


@pydantic_dataclasses.dataclass(frozen=True, config=_MODEL)
class CircDesk:
    """One ``[post_go_live.offline_circulation.desks.<name>]`` table: the Alma desk a file's desk is."""

    library: str = Field(description="Alma library code of the desk, e.g. BNUZG")
    circ_desk: str = Field(
        default="DEFAULT_CIRC_DESK", description="Alma circulation desk code in that library"
    )

    @field_validator("library", "circ_desk")
    @classmethod
    def _code(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: an Alma code, e.g. BNUZG or DEFAULT_CIRC_DESK")
        return value.strip()


@pydantic_dataclasses.dataclass(frozen=True, config=_MODEL)
class OfflineCircSettings:
    """The ``[post_go_live.offline_circulation]`` table: the layout of the desks' CSV files."""

    time_column: str = Field(default="time", description="Header of the column with the transaction's time")
    desk_column: str = Field(default="circ_desk", description="Header of the circulation desk column")
    action_column: str = Field(
        default="action", description="Header of the action column (loan/return/renew)"
    )
    patron_column: str = Field(
        default="patron_id",
        description="Header of the patron column: any unique identifier Alma knows (barcode, primary id); "
        "may be empty on a return",
    )
    barcode_column: str = Field(default="item_barcode", description="Header of the item barcode column")
    time_format: str = Field(
        default="%Y-%m-%d %H:%M:%S",
        description='strptime format of the time column, e.g. "%Y-%m-%d %H:%M:%S" or "%Y%m%d%H%M%S"; '
        "with %z the file's offset is used, else time_zone",
    )
    time_zone: str = Field(
        default="UTC", description="IANA time zone of times without an offset, e.g. Asia/Shanghai"
    )
    actions: dict[Action, tuple[str, ...]] = Field(
        default_factory=_default_actions,
        description="The words the files use for each action (loan, return, renew), matched ignoring "
        'case and surrounding blanks, e.g. {loan = ["loan", "checkout", "借出"], ...}',
    )
    desks: dict[str, CircDesk] = Field(
        default_factory=dict,
        description="The files' desk names → Alma library and circulation desk, one "
        "[post_go_live.offline_circulation.desks.<name>] table each",
    )
    default_library: str = Field(
        default="",
        description="For a desk not in desks: its name is taken as the Alma circulation desk code in this "
        "library; '' = such a row is rejected (unknown_circ_desk)",
    )
    delimiter: str = Field(
        default=",", description='Field delimiter, one character, e.g. "," or ";" or "\\t"'
    )
    encoding: str = Field(
        default="utf-8-sig", description="Encoding of the files, e.g. utf-8-sig (UTF-8, BOM or not) or gbk"
    )
    checkpoint_every: Annotated[StrictInt, Field(gt=0)] = Field(
        default=100,
        description="Transactions between two writes of the checkpoint (a retry re-checks at most "
        "these in Alma); each write holds every outcome so far",
    )

    @field_validator("time_column", "desk_column", "action_column", "patron_column", "barcode_column")
    @classmethod
    def _column(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: the column's header as the files have it")
        return value.strip()

    @field_validator("time_format")
    @classmethod
    def _time_format(cls, value: str) -> str:
        try:
            datetime.strptime(_SAMPLE.strftime(value), value)
            ok = "%" in value
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{config.show(value)} is not a strptime format that reads back what it writes; "
                'allowed: e.g. "%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S" or "%d/%m/%Y %H:%M"'
            )
        return value

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        return config.time_zone(value)

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: dict[Action, tuple[str, ...]]) -> dict[Action, tuple[str, ...]]:
        missing = [a for a in ACTIONS if not any(w.strip() for w in value.get(a, ()))]
        if missing:
            raise ValueError(
                f"no words for {', '.join(missing)}; give at least one word for each of {ACTIONS}"
            )
        owner: dict[str, str] = {}
        for action, words in value.items():
            for word in words:
                if owner.setdefault(word.strip().casefold(), action) != action:
                    raise ValueError(
                        f"{config.show(word)} stands for both {owner[word.strip().casefold()]} and {action}; "
                        "a word may name one action only"
                    )
        return {a: tuple(w.strip() for w in value[a] if w.strip()) for a in ACTIONS}

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if len(value) != 1 or value in '\r\n"':
            raise ValueError(
                f"{config.show(value)} is not a delimiter; allowed: one character such as , ; | or tab"
            )
        return value

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            ascii_lines = "a,\n".encode(value).endswith(b"a,\n")  # utf-8-sig: a BOM first
        except LookupError:
            ascii_lines = False
        if not ascii_lines:
            raise ValueError(
                f"{config.show(value)} is not an encoding whose line ends and delimiters are ASCII; "
                'allowed: e.g. "utf-8-sig", "utf-8", "gbk", "gb18030"'
            )
        return codecs.lookup(value).name

    def __post_init__(self) -> None:
        columns = [
            self.time_column,
            self.desk_column,
            self.action_column,
            self.patron_column,
            self.barcode_column,
        ]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise ValueError(
                f"column {', '.join(twice)} named for more than one field; each field has its own"
            )

    def desk(self, name: str) -> CircDesk | None:
        """The Alma desk a file's desk name stands for; None when unknown."""
        if name in self.desks:
            return self.desks[name]
        return CircDesk(self.default_library, name) if self.default_library and name else None


@settings_dataclass(frozen=True, config=_MODEL)
class PostGoLiveSettings:
    """The ``[post_go_live]`` table of ``migration.toml``."""

    offline_circulation: OfflineCircSettings = Field(
        default_factory=OfflineCircSettings,
        description="[post_go_live.offline_circulation]: the layout of the desks' offline circulation files",
    )
    worklists: WorklistSettings = Field(
        default_factory=WorklistSettings,
        description="[post_go_live.worklists]: which records the clean-up worklists list",
    )
    archive: ArchiveSettings = Field(
        default_factory=ArchiveSettings,
        description="[post_go_live.archive]: storage class and retention of the archive",
    )
