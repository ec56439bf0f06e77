"""The defects the demo library is seeded with, and how many of each.

Each defect is a real migration problem (DOMAIN.md, "What goes wrong"). The generator seeds
``max(MIN_OCCURRENCES, round(rate × records of the entity))`` records with each defect,
keeps the defects of one entity disjoint (a record carries at most one), and writes the
exact sets to ``ground_truth.jsonl`` so validation can be checked set for set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_OCCURRENCES = 2

DEFECT_RATES: dict[str, dict[str, float]] = {
    "bibs": {
        "missing_title": 0.002,  # no 245 (MARC 21) / no 200 (CNMARC)
        "invalid_leader": 0.001,  # LDR of the wrong length or with characters a leader cannot hold
        "invalid_indicators": 0.002,  # title field (245 / 200) with an indicator outside 0-9 and blank
        "invalid_utf8": 0.001,  # a note line holding bytes that are neither UTF-8 nor GBK/GB18030
        "legacy_gbk": 0.004,  # CNMARC 200 line encoded in GBK instead of UTF-8 (convertible); BNU01 only
    },
    "holdings": {
        "orphan_holdings": 0.002,  # LKR to a BIB system number that does not exist (deleted bib)
    },
    "items": {
        "duplicate_barcode": 0.002,  # every item of a group sharing one Z30_BARCODE
        "missing_barcode": 0.003,  # blank Z30_BARCODE
        "orphan_item": 0.001,  # Z30_HOL_DOC_NUMBER_X names a HOL record that does not exist
        "unmapped_location": 0.002,  # Z30 sub-library/collection pair missing from the code tables
        "unmapped_item_status": 0.002,  # Z30_ITEM_STATUS missing from the code tables
    },
    "patrons": {
        "duplicate_patron_id": 0.004,  # every patron of a group sharing one Z303_PRIMARY_ID
        "unmapped_user_group": 0.004,  # Z305_BOR_STATUS missing from the code tables
        "expired_patron_with_loans": 0.008,  # Z305_EXPIRY_DATE before as_of, ≥ 1 active loan
    },
    "loans": {
        "loan_missing_item": 0.002,  # Z36_REC_KEY names no Z30 item (ILL item added after the freeze)
        "loan_missing_patron": 0.002,  # Z36_ID names no Z303 patron (patron deleted)
    },
    "requests": {
        "request_missing_item": 0.01,  # Z37 item part of the key names no Z30 item
        "request_missing_patron": 0.01,  # Z37_ID names no Z303 patron
    },
    "fines": {
        "fine_missing_patron": 0.01,  # Z31 patron part of the key names no Z303 patron
    },
}
"""entity → defect → share of the entity's records that carry it (at least 2 each)."""

INVALID_BYTES = b"\xff\xfe\x80"
"""Neither UTF-8 nor GBK/GB18030: 0xFF is not a lead byte in any of them."""


def defect_count(entity: str, defect: str, total: int) -> int:
    return max(MIN_OCCURRENCES, round(DEFECT_RATES[entity][defect] * total))


def defect_names(entity: str) -> list[str]:
    return list(DEFECT_RATES[entity])


def defect_code(entity: str, defect: str) -> int:
    """Small-int code of a defect within its entity (0 = clean), for numpy arrays."""
    return defect_names(entity).index(defect) + 1


@dataclass
class DefectPicker:
    """Draws disjoint sets of records for the defects of one entity.

    ``codes[i]`` is 0 for a clean record, else the entity's ``defect_code``.
    """

    entity: str
    codes: np.ndarray
    rng: np.random.Generator

    @classmethod
    def for_entity(cls, entity: str, size: int, rng: np.random.Generator) -> DefectPicker:
        return cls(entity, np.zeros(size, dtype=np.int8), rng)

    def pick(self, defect: str, count: int, candidates: np.ndarray | None = None) -> np.ndarray:
        """Mark ``count`` clean records (among ``candidates``, indices) with ``defect``; sorted indices."""
        pool = np.arange(len(self.codes)) if candidates is None else np.asarray(candidates)
        pool = pool[self.codes[pool] == 0]
        if len(pool) < count:
            raise ValueError(
                f"{self.entity}: only {len(pool)} records can carry {defect!r}, {count} wanted; "
                "the scale is too small for the defect rates"
            )
        chosen = np.sort(self.rng.choice(pool, size=count, replace=False))
        self.codes[chosen] = defect_code(self.entity, defect)
        return chosen

    def clean(self) -> np.ndarray:
        return np.flatnonzero(self.codes == 0)


def group_sizes(count: int) -> list[int]:
    """Split ``count`` (≥ 2) duplicate records into groups of two, one group of three if odd."""
    groups = [2] * (count // 2)
    if count % 2:
        groups[-1] = 3
    return groups


def gbk_bytes(text: str) -> bytes:
    """``text`` in GBK, checked to be invalid UTF-8 (so the defect is detectable) and valid GBK."""
    raw = text.encode("gbk")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    raise ValueError(f"{text!r} in GBK happens to be valid UTF-8")
