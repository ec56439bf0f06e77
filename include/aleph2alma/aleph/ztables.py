"""Aleph Z-tables the migration reads: columns, keys and which entity each belongs to.

Column names and types follow Aleph 500's Oracle schema: CHAR columns are blank-padded to
their width, dates are NUMBER(8) holding YYYYMMDD (0 when unset). Only the columns the
migration uses are listed; a real Aleph table has more and they are simply not selected.

Secret columns (PINs, passwords: ``secret=True``) are listed so that the demo replica has
them as Aleph does, but they are never selected: patron PINs never leave Aleph, not even
into the raw extract (``ZTable.extracted``).

The same definitions build the SQLAlchemy tables for the demo replica (SQLite or
PostgreSQL) and the SELECTs against a production Oracle, so both read alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

ColumnKind = Literal["char", "date", "int"]


@dataclass(frozen=True)
class ZColumn:
    name: str
    kind: ColumnKind = "char"
    width: int = 0  # CHAR width; 0 for date/int
    secret: bool = False  # a PIN or password: in Aleph (and the demo replica), never extracted

    def sa_type(self) -> sa.types.TypeEngine:
        if self.kind == "char":
            return sa.CHAR(self.width)
        if self.kind == "date":
            return sa.Integer()
        return sa.Integer()


@dataclass(frozen=True)
class ZTable:
    """One Z-table: its name, the Aleph library it lives in, and the entity it feeds."""

    name: str
    library: Literal["adm", "usr"]
    entity: str
    key: str
    columns: tuple[ZColumn, ...]
    updated: str = ""
    """The column Aleph stamps with the day a row last changed (YYYYMMDD), where the table has one:
    the nightly delta reads such a table by it instead of hashing every row."""

    @property
    def column_names(self) -> list[str]:
        """Every listed column, in the table's order (the demo replica's rows follow it)."""
        return [c.name for c in self.columns]

    @property
    def extracted(self) -> tuple[ZColumn, ...]:
        """What extraction selects and the raw extract holds: every column but the secret ones."""
        return tuple(c for c in self.columns if not c.secret)

    def sa_table(self, metadata: sa.MetaData, schema: str | None = None) -> sa.Table:
        return sa.Table(
            self.name.lower(),
            metadata,
            *(sa.Column(c.name.lower(), c.sa_type(), primary_key=(c.name == self.key)) for c in self.columns),
            schema=schema,
        )


def _c(name: str, width: int, *, secret: bool = False) -> ZColumn:
    return ZColumn(name, "char", width, secret)


def _d(name: str) -> ZColumn:
    return ZColumn(name, "date")


def _i(name: str) -> ZColumn:
    return ZColumn(name, "int")


Z30 = ZTable(
    "Z30",
    "adm",
    "items",
    "Z30_REC_KEY",
    (
        _c("Z30_REC_KEY", 15),  # ADM doc number (9) + item sequence (6)
        _c("Z30_BARCODE", 30),
        _c("Z30_SUB_LIBRARY", 5),
        _c("Z30_MATERIAL", 5),
        _c("Z30_ITEM_STATUS", 2),
        _c("Z30_ITEM_PROCESS_STATUS", 2),
        _c("Z30_COLLECTION", 5),
        _c("Z30_CALL_NO_TYPE", 1),
        _c("Z30_CALL_NO", 80),
        _c("Z30_CALL_NO_2", 80),
        _c("Z30_DESCRIPTION", 200),
        _c("Z30_NOTE_OPAC", 200),
        _c("Z30_NOTE_CIRCULATION", 200),
        _c("Z30_NOTE_INTERNAL", 200),
        _c("Z30_INVENTORY_NUMBER", 20),
        _c("Z30_PRICE", 10),
        _d("Z30_OPEN_DATE"),
        _d("Z30_UPDATE_DATE"),
        _c("Z30_HOL_DOC_NUMBER_X", 9),
        _i("Z30_NO_LOANS"),
        _c("Z30_ENUMERATION_A", 20),
        _c("Z30_ENUMERATION_B", 20),
        _c("Z30_CHRONOLOGICAL_I", 20),
        _c("Z30_CHRONOLOGICAL_J", 20),
        _c("Z30_UPD_TIME_STAMP", 15),
    ),
    updated="Z30_UPDATE_DATE",
)

Z303 = ZTable(
    "Z303",
    "usr",
    "patrons",
    "Z303_REC_KEY",
    (
        _c("Z303_REC_KEY", 12),
        _c("Z303_PRIMARY_ID", 12),
        _c("Z303_NAME", 200),
        _c("Z303_HOME_LIBRARY", 5),
        _d("Z303_BIRTH_DATE"),
        _d("Z303_OPEN_DATE"),
        _d("Z303_UPDATE_DATE"),
        _c("Z303_DELINQ_1", 2),
        _c("Z303_DELINQ_N_1", 200),
        _c("Z303_UPD_TIME_STAMP", 15),
    ),
    updated="Z303_UPDATE_DATE",
)

Z304 = ZTable(
    "Z304",
    "usr",
    "patrons",
    "Z304_REC_KEY",
    (
        _c("Z304_REC_KEY", 14),  # patron id (12) + sequence (2)
        _c("Z304_ADDRESS_0", 200),
        _c("Z304_ADDRESS_1", 200),
        _c("Z304_ADDRESS_2", 200),
        _c("Z304_ZIP", 9),
        _c("Z304_EMAIL_ADDRESS", 60),
        _c("Z304_TELEPHONE", 30),
        _d("Z304_DATE_FROM"),
        _d("Z304_DATE_TO"),
        _c("Z304_ADDRESS_TYPE", 2),
    ),
)

Z305 = ZTable(
    "Z305",
    "adm",
    "patrons",
    "Z305_REC_KEY",
    (
        _c("Z305_REC_KEY", 17),  # patron id (12) + sub-library (5)
        _c("Z305_BOR_TYPE", 2),
        _c("Z305_BOR_STATUS", 2),
        _d("Z305_EXPIRY_DATE"),
        _d("Z305_LAST_ACTIVITY_DATE"),
    ),
)

Z308 = ZTable(
    "Z308",
    "usr",
    "patrons",
    "Z308_REC_KEY",
    (
        _c("Z308_REC_KEY", 257),  # key type (2) + identifier value
        _c("Z308_ID", 12),  # the Z303 key
        _c("Z308_VERIFICATION", 20, secret=True),  # the PIN: never leaves Aleph
        _c("Z308_STATUS", 2),
    ),
)

Z36 = ZTable(
    "Z36",
    "adm",
    "loans",
    "Z36_REC_KEY",
    (
        _c("Z36_REC_KEY", 15),  # item key (Z30_REC_KEY)
        _c("Z36_ID", 12),  # patron
        _c("Z36_NUMBER", 9),
        _c("Z36_SUB_LIBRARY", 5),
        _c("Z36_STATUS", 1),  # A active, C claimed returned, L lost
        _d("Z36_LOAN_DATE"),
        _d("Z36_DUE_DATE"),
        _d("Z36_RETURNED_DATE"),
        _c("Z36_NOTE_1", 50),
    ),
)

Z37 = ZTable(
    "Z37",
    "adm",
    "requests",
    "Z37_REC_KEY",
    (
        _c("Z37_REC_KEY", 19),  # item key (15) + priority/sequence (4)
        _c("Z37_ID", 12),
        _c("Z37_STATUS", 1),  # A active, S on hold shelf
        _c("Z37_PRIORITY", 2),
        _d("Z37_OPEN_DATE"),
        _d("Z37_END_REQUEST_DATE"),
        _d("Z37_END_HOLD_DATE"),
        _c("Z37_PICKUP_LOCATION", 5),
        _c("Z37_REQUEST_NUMBER", 9),
    ),
)

Z31 = ZTable(
    "Z31",
    "adm",
    "fines",
    "Z31_REC_KEY",
    (
        _c("Z31_REC_KEY", 29),  # patron id (12) + date/time (13) + sequence (4)
        _c("Z31_STATUS", 1),  # O open, C closed
        _c("Z31_CREDIT_DEBIT", 1),
        _c("Z31_SUM", 14),
        _c("Z31_TYPE", 4),
        _c("Z31_SUB_LIBRARY", 5),
        _c("Z31_DESCRIPTION", 100),
        _c("Z31_REC_KEY_ITEM", 15),
        _d("Z31_DATE_X"),
    ),
)

Z68 = ZTable(
    "Z68",
    "adm",
    "orders",
    "Z68_REC_KEY",
    (
        _c("Z68_REC_KEY", 14),  # ADM doc number (9) + sequence (5)
        _c("Z68_ORDER_NUMBER", 30),
        _c("Z68_VENDOR_CODE", 20),
        _c("Z68_ORDER_STATUS", 3),
        _c("Z68_ORDER_TYPE", 1),
        _c("Z68_MATERIAL_TYPE", 1),
        _c("Z68_SUB_LIBRARY", 5),
        _i("Z68_NO_UNITS"),
        _c("Z68_E_LISTING_PRICE", 14),
        _c("Z68_E_CURRENCY", 3),
        _d("Z68_OPEN_DATE"),
    ),
)

Z70 = ZTable(
    "Z70",
    "adm",
    "vendors",
    "Z70_REC_KEY",
    (
        _c("Z70_REC_KEY", 20),  # vendor code
        _c("Z70_VENDOR_NAME", 100),
        _c("Z70_VENDOR_STATUS", 2),
        _c("Z70_CURRENCY", 3),
    ),
)

Z76 = ZTable(
    "Z76",
    "adm",
    "budgets",
    "Z76_REC_KEY",
    (
        _c("Z76_REC_KEY", 50),  # budget number
        _c("Z76_NAME", 100),
        _c("Z76_SUB_LIBRARY", 5),
        _c("Z76_ALLOCATED", 14),
        _c("Z76_CURRENCY", 3),
        _i("Z76_YEAR"),
    ),
)

Z103 = ZTable(
    "Z103",
    "adm",
    "links",
    "Z103_REC_KEY",
    # Links between records, one row per direction. An ADM record's link to its bib
    # (Z103_LKR_TYPE "ADM") has the ADM record in Z103_REC_KEY and the bib in
    # Z103_REC_KEY_1, as sites query it (5-C-Folio/ACQ-Queries HAM_ORDERS.sql:
    # substr(Z103_REC_KEY,6,9) ADM, substr(Z103_REC_KEY_1,1,5) BIB library,
    # substr(Z103_REC_KEY_1,6,9) BIB doc). The sequence is 2 bytes (Ex Libris Knowledge
    # Center, "Maximum number of z103 LKR fields per record").
    (
        _c("Z103_REC_KEY", 16),  # library (5) + doc number (9) + sequence (2)
        _c("Z103_LKR_TYPE", 5),  # ADM, HOL, UP, DN, PAR, ANA, ITM
        _c("Z103_REC_KEY_1", 16),  # the linked record: library (5) + doc number (9) first
    ),
)

Z_TABLES: dict[str, ZTable] = {
    t.name: t for t in (Z103, Z30, Z303, Z304, Z305, Z308, Z36, Z37, Z31, Z68, Z70, Z76)
}


def table_entities() -> list[str]:
    """Entities read from Z-tables (as opposed to ALEPHSEQ exports)."""
    return list(dict.fromkeys(t.entity for t in Z_TABLES.values()))


def build_metadata(schemas: dict[str, str | None]) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    """SQLAlchemy tables for every Z-table, each in the schema of its Aleph library.

    ``schemas`` maps ``"adm"``/``"usr"`` to a database schema (``None`` = the default).
    """
    metadata = sa.MetaData()
    tables = {name: zt.sa_table(metadata, schemas.get(zt.library)) for name, zt in Z_TABLES.items()}
    return metadata, tables
