"""The validation rule registry: what each rule means, how bad it is, when it blocks delivery.

Every data problem the migration looks for is one ``Rule`` here. A rule has

- an ``id`` (the name issues, worklists, reports and the demo ground truth use);
- the ``entity`` whose records it judges (its percentages are of that entity's records;
  ``also_entities`` for a rule that judges more than one, like the encoding rules);
- a ``severity`` (``FIX`` / ``REVIEW`` / ``INFO``, see ``validate.issues``);
- ``rejects_record``: whether a record with this issue is left out of the delivery (written
  to the rejects with the rule id as reason) or delivered as it is;
- a ``description`` a librarian can act on: what the rule means and how to fix it in Aleph;
- a default ``threshold``.

Three levels of error (STYLE.md 9): an issue alone is a field/record warning; a rejecting
rule is a record failure; a ``FIX`` rule past its threshold is a process failure (it blocks
delivery, see ``evaluate``). ``REVIEW`` and ``INFO`` rules never block, whatever their
counts; a threshold on them only marks them "over threshold" in the report.

Thresholds can be changed per migration in ``include/config/<migration_id>/rules.toml``::

    [rules.duplicate_barcode]
    severity = "FIX"        # FIX | REVIEW | INFO
    max_count = 0           # at most this many records with the issue
    max_percent = 0.5       # at most this share (in %) of the entity's records

A rule section that gives ``max_count`` or ``max_percent`` replaces the rule's default
threshold as a whole (a limit it leaves out is no limit); one that gives only ``severity``
keeps the default threshold. ``RuleOverride`` is the model of one section; unknown rule
ids, unknown keys and bad values are a ``RulesConfigError`` (a ``ConfigError``: the task
fails at once) naming the file, the key path and what is allowed, e.g.::

    …/demo/rules.toml: rules.orphan_item.max_percent: 120 is out of range; allowed: a number ≥ 0 and ≤ 100

Adding a rule: one entry in ``RULES`` below and, for a rule over Z-tables, one check
function in ``validate.checks`` (listed in ``checks.CHECKS``).

``EXPORT_RULES`` judge the export files rather than records (``malformed_line``,
``empty_export``): the demo library plants no defect for them, since its exports are whole.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, create_model

from aleph2alma import config
from aleph2alma.errors import ConfigError
from aleph2alma.settings import CONFIG_ROOT
from aleph2alma.validate.issues import Severity


class RulesConfigError(ConfigError):
    """A ``rules.toml`` names an unknown rule or key, or gives a value of the wrong kind."""


@dataclass(frozen=True)
class Threshold:
    """How many issues a rule tolerates before it is breached.

    ``max_count``: at most this many records; ``max_percent``: at most this share (0-100)
    of the entity's records. A count past either limit breaches the threshold. A threshold
    with neither limit tolerates nothing: one issue breaches it.
    """

    max_count: int | None = None
    max_percent: float | None = None

    def breached_by(self, count: int, percent: float) -> bool:
        if count == 0:
            return False
        if self.max_count is None and self.max_percent is None:
            return True
        over_count = self.max_count is not None and count > self.max_count
        over_percent = self.max_percent is not None and percent > self.max_percent
        return over_count or over_percent

    def describe(self) -> str:
        parts = []
        if self.max_count is not None:
            parts.append(f"≤ {self.max_count}")
        if self.max_percent is not None:
            parts.append(f"≤ {self.max_percent:g}%")
        return " and ".join(parts) if parts else "0"

    def to_dict(self) -> dict[str, int | float | None]:
        return {"max_count": self.max_count, "max_percent": self.max_percent}


NONE_ALLOWED = Threshold(max_count=0)
"""Any occurrence breaches: codes that must all be in the migration form."""
SMALL_SHARE = Threshold(max_percent=0.5)
"""Up to 0.5% of the entity's records: bad data a test load can live with."""
REJECT_SHARE = Threshold(max_percent=1.0)
"""Up to 1% of the entity's records rejected."""
NO_LIMIT = Threshold(max_percent=100.0)
"""Never breached (REVIEW/INFO rules: they are reported, not counted against delivery)."""


@dataclass(frozen=True)
class Rule:
    """One validation rule. See the module docstring for the meaning of each field."""

    id: str
    entity: str
    severity: Severity
    rejects_record: bool
    description: str
    threshold: Threshold = SMALL_SHARE
    also_entities: tuple[str, ...] = ()
    """Other entities whose records the rule judges too (the encoding rules run over bibs and
    holdings); issues keep their own entity, and percentages are of all these records."""

    @property
    def entities(self) -> tuple[str, ...]:
        return (self.entity, *self.also_entities)

    def total(self, totals: Mapping[str, int]) -> int:
        """The records the rule judges: the sum of its entities' totals."""
        return sum(int(totals.get(e, 0)) for e in self.entities)

    @property
    def blocks(self) -> bool:
        """Whether passing the threshold blocks delivery (only ``FIX`` rules do)."""
        return self.severity is Severity.FIX


Rules = Mapping[str, Rule]


def _r(
    id: str,
    entity: str,
    severity: Severity,
    rejects: bool,
    threshold: Threshold,
    description: str,
    also: tuple[str, ...] = (),
) -> Rule:
    return Rule(id, entity, severity, rejects, " ".join(description.split()), threshold, also)


FIX, REVIEW, INFO = Severity.FIX, Severity.REVIEW, Severity.INFO

_DEFAULT_RULES: tuple[Rule, ...] = (
    # bibs: emitted by the bib transform while it reads the ALEPHSEQ export
    _r(
        "invalid_leader",
        "bibs",
        FIX,
        True,
        REJECT_SHARE,
        """
       The LDR field is not 24 characters or holds characters a leader cannot hold, so the
       record cannot be loaded. Open the record in the Aleph cataloguing module, correct the
       LDR with the leader editor (use ^ for blanks) and save.""",
    ),
    _r(
        "missing_title",
        "bibs",
        FIX,
        True,
        REJECT_SHARE,
        """
       The record has no title field: no 245 in a MARC 21 library, no 200 in a CNMARC
       library. Alma cannot load it. Add the title field in Aleph cataloguing, or delete
       the record if it is a leftover stub with no holdings.""",
    ),
    _r(
        "invalid_indicators",
        "bibs",
        REVIEW,
        False,
        NO_LIMIT,
        """
       A field has an indicator outside 0-9 and blank. The record loads with the
       indicator blanked. Check the field in Aleph cataloguing and set the right
       indicator (e.g. 245 second indicator = number of non-filing characters).""",
    ),
    _r(
        "invalid_utf8",
        "bibs",
        FIX,
        False,
        SMALL_SHARE,
        """
       A field of a bib or holdings record holds bytes that are neither UTF-8 nor GBK, so
       some characters cannot be converted; the record loads with them replaced by U+FFFD.
       Retype the affected text (the detail names the field) in Aleph cataloguing.""",
        also=("holdings",),
    ),
    _r(
        "legacy_gbk",
        "bibs",
        INFO,
        False,
        NO_LIMIT,
        """
       A field of a bib or holdings record was encoded in GBK/GB2312 instead of UTF-8 and
       was converted. Nothing to fix; listed for the reconciliation. Spot-check a few
       records in Alma after the load.""",
        also=("holdings",),
    ),
    _r(
        "legacy_latin1",
        "bibs",
        INFO,
        False,
        NO_LIMIT,
        """
       A field of a bib or holdings record was encoded in Latin-1 / Windows-1252 (e.g. the
       bytes E7 E3 for "çã") instead of UTF-8 and was converted. Nothing to fix;
       listed for the reconciliation. Spot-check a few records in Alma after the load.""",
        also=("holdings",),
    ),
    _r(
        "encoding_ambiguous",
        "bibs",
        REVIEW,
        False,
        NO_LIMIT,
        """
       A field that is not UTF-8 reads as plausible text both in GBK (Chinese) and in
       Latin-1 / Windows-1252 (Western), and nothing in the text told them apart, so the
       library's MARC flavour chose (GBK for CNMARC, Latin-1 for MARC 21). The detail shows
       both readings: if the wrong one was taken, retype the field in Aleph cataloguing.""",
        also=("holdings",),
    ),
    _r(
        "encoding_evidence",
        "bibs",
        INFO,
        False,
        NO_LIMIT,
        """
       An ISO 2709 record's character set was decided from evidence other than leader/09
       'a': CNMARC/UNIMARC 100 $a/26-29, bytes that are valid UTF-8, or MARC-8 because
       nothing said otherwise. The detail names the evidence. Nothing to fix; spot-check a
       few such records in Alma after the load.""",
        also=("holdings",),
    ),
    _r(
        "encoding_conflict",
        "bibs",
        REVIEW,
        False,
        NO_LIMIT,
        """
       An ISO 2709 record carries evidence of two character sets (e.g. leader/09 'a' but
       100 $a/26-29 declaring another set, MARC-8 escape sequences beside UTF-8, a 066 in
       a UTF-8 record). It was read by the stronger evidence (the detail says which);
       check its non-Latin text in Alma and correct the leader or 100 in the source.""",
        also=("holdings",),
    ),
    _r(
        "directory_rebuilt",
        "bibs",
        REVIEW,
        False,
        NO_LIMIT,
        """
       An ISO 2709 record's directory disagreed with its field terminators (lengths counted
       in characters instead of bytes, or a field edited without its entry), so its fields
       would have been cut. The directory was rebuilt from the terminators; check the
       record's fields (the detail names them) and fix the exporting system.""",
        also=("holdings",),
    ),
    _r(
        "marc_warning",
        "bibs",
        REVIEW,
        False,
        NO_LIMIT,
        """
       pymarc warned while reading the record: a MARC-8 character it cannot map (written
       as a blank), missing or extra indicators, a subfield code that is not ASCII. The
       detail gives pymarc's words; check the field in the source record.""",
        also=("holdings",),
    ),
    _r(
        "flavour_mismatch",
        "bibs",
        REVIEW,
        False,
        NO_LIMIT,
        """
       A record has the other MARC flavour's shape than its library (a MARC 21 record, with
       245, in a CNMARC library, or a CNMARC record, with 200 and coded 100, in a MARC 21
       library). It was transformed as what it is, not rejected. Check whether it belongs in
       another BIB library, and that the Alma import profile for this file accepts it.""",
    ),
    # the export files themselves: emitted by the MARC transform while it reads each raw part
    _r(
        "malformed_line",
        "bibs",
        FIX,
        False,
        SMALL_SHARE,
        """
       A line of the BIB or HOL ALEPHSEQ export is not an ALEPHSEQ line (too short, no
       9-digit system number, bad tag or columns, longer than any field, or garbage), so
       it was skipped and its field is missing from the record. Many such lines mean the
       file is not an ALEPHSEQ export or was damaged in transfer: export the library again
       with p_print_03 (ALEPHSEQ format) and check the detail for the line and its start.""",
        also=("holdings",),
    ),
    _r(
        "empty_export",
        "bibs",
        FIX,
        False,
        NONE_ALLOWED,
        """
       The BIB or HOL ALEPHSEQ export of a library holds no record at all: the file is
       empty, or nothing in it is an ALEPHSEQ line. Nothing of that library would be
       delivered. Check that the export (p_print_03) finished and that the right file was
       landed, then export the library again.""",
        also=("holdings",),
    ),
    # holdings: the HOL records' LKR links against the bib index
    _r(
        "orphan_holdings",
        "holdings",
        FIX,
        True,
        REJECT_SHARE,
        """
       The holdings record's LKR field points to a bib system number that does not exist
       in the BIB library (the bib was deleted). The holdings record is not delivered.
       In Aleph, relink the holdings (LKR $$b) to the right bib record, or delete the
       holdings record and its items. (Holdings whose bib exists but was rejected by
       another rule are not orphans: fix that bib's issue.)""",
    ),
    # items: Z30
    _r(
        "duplicate_barcode",
        "items",
        FIX,
        False,
        SMALL_SHARE,
        """
       Several items share one barcode; Alma requires unique barcodes. Every item of the
       group is listed. In Aleph's item form, check which physical copy carries the
       barcode and give the others their own barcode.""",
    ),
    _r(
        "missing_barcode",
        "items",
        FIX,
        False,
        SMALL_SHARE,
        """
       The item has no barcode (Z30_BARCODE blank). Alma loads it without one, and it
       cannot circulate. Barcode the copy and enter the barcode in Aleph's item form.""",
    ),
    _r(
        "orphan_item",
        "items",
        FIX,
        True,
        REJECT_SHARE,
        """
       The item's holdings link (Z30_HOL_DOC_NUMBER_X) names a HOL record that does not
       exist, or is blank and the item's ADM record has no link (Z103) to an existing bib,
       so the item has no holdings or bib in Alma and is not delivered. In Aleph's item
       form, link the item to the right holdings record (or its ADM record to its bib),
       or delete the item.""",
    ),
    _r(
        "unmapped_location",
        "items",
        FIX,
        False,
        NONE_ALLOWED,
        """
       The item's sub-library and collection are not in the migration form's locations
       tab (not even through a * fallback row). Add the pair to the locations tab
       (or correct the item's sub-library/collection in Aleph if the code is a typo).""",
    ),
    _r(
        "unmapped_item_status",
        "items",
        FIX,
        False,
        NONE_ALLOWED,
        """
       The item status (Z30_ITEM_STATUS) is not in the migration form's item-policy tab.
       Add the status to the tab, or change the items to a current status in Aleph
       (global change of item status, e.g. with the item-update service).""",
    ),
    # patrons: Z303 global and Z305 local records
    _r(
        "duplicate_patron_id",
        "patrons",
        FIX,
        False,
        SMALL_SHARE,
        """
       Several patron records share one primary id (Z303_PRIMARY_ID); Alma user ids
       must be unique. Every patron of the group is listed. Merge the duplicates in Aleph
       (move loans and fines to one record, delete the others) or correct the wrong id.""",
    ),
    _r(
        "unmapped_user_group",
        "patrons",
        FIX,
        False,
        NONE_ALLOWED,
        """
       A local patron record (Z305) has a borrower status and type that the migration
       form's user-group tab does not map (not even through a * fallback row). Add the
       pair to the user-group tab, or update the patron's status in Aleph.""",
    ),
    _r(
        "expired_patron_with_loans",
        "patrons",
        REVIEW,
        False,
        NO_LIMIT,
        """
       Every registration of the patron (Z305_EXPIRY_DATE) lapsed before the migration
       date, but the patron still has active loans. Alma loads them as expired users
       who hold items. Renew the registration in Aleph or have the items returned.""",
    ),
    # loans: Z36
    _r(
        "loan_missing_item",
        "loans",
        FIX,
        True,
        REJECT_SHARE,
        """
       The loan (Z36) is on an item key that has no item record (Z30), typically an ILL
       or temporary item deleted after the loan. The loan is not delivered. Return the
       loan in Aleph, or recreate the item and lend it again.""",
    ),
    _r(
        "loan_missing_patron",
        "loans",
        FIX,
        True,
        REJECT_SHARE,
        """
       The loan's patron (Z36_ID) has no patron record (Z303), so the loan is not
       delivered. Return the loan in Aleph or restore the patron record.""",
    ),
    # requests: Z37
    _r(
        "request_missing_item",
        "requests",
        FIX,
        True,
        REJECT_SHARE,
        """
       The request (Z37) is on an item key that has no item record (Z30), so it cannot be
       placed in Alma and is not delivered. Cancel the request in Aleph and, if the
       patron still wants the title, place it again on an existing copy.""",
    ),
    _r(
        "request_missing_patron",
        "requests",
        FIX,
        True,
        REJECT_SHARE,
        """
       The request's patron (Z37_ID) has no patron record (Z303), so the request is not
       delivered. Cancel the request in Aleph.""",
    ),
    # fines: Z31
    _r(
        "fine_missing_patron",
        "fines",
        FIX,
        True,
        REJECT_SHARE,
        """
       The cash transaction (Z31) belongs to a patron id that has no patron record (Z303),
       so the fine is not delivered. Restore the patron record, or settle/waive the
       transaction in Aleph's cash module.""",
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _DEFAULT_RULES}

EXPORT_RULES = ("malformed_line", "empty_export")
"""Rules about the export files, not their records (see the module docstring)."""
"""The default registry: rule id → rule, in report order (by entity)."""

INPUT_RULES = (
    "legacy_latin1",
    "encoding_ambiguous",
    "encoding_evidence",
    "encoding_conflict",
    "directory_rebuilt",
    "marc_warning",
    "flavour_mismatch",
)
"""Rules about how a record was encoded or structured on input (character sets, legacy
encodings other than GBK) that the demo library does not plant: its exports are UTF-8
ALEPHSEQ with GBK as the only legacy encoding. Unit tests build a record per case."""


# --- per-migration overrides --------------------------------------------------------------


class RuleOverride(BaseModel):
    """One ``[rules.<rule_id>]`` table of ``rules.toml``: what it changes of the rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity | None = Field(
        default=None, description="FIX, REVIEW or INFO; only a FIX rule past its threshold blocks delivery"
    )
    max_count: StrictInt | None = Field(
        default=None, ge=0, description="At most this many records with the issue (a whole number ≥ 0)"
    )
    max_percent: StrictFloat | None = Field(
        default=None,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="At most this share, in % (0 to 100), of the entity's records with the issue",
    )

    def applied_to(self, rule: Rule) -> Rule:
        """``rule`` with this override: a limit given replaces the whole default threshold."""
        threshold = rule.threshold
        if self.max_count is not None or self.max_percent is not None:
            threshold = Threshold(self.max_count, self.max_percent)
        return replace(rule, severity=self.severity or rule.severity, threshold=threshold)


@functools.cache
def _file_model(rules: tuple[tuple[str, str], ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        rule_id: (RuleOverride | None, Field(default=None, description=description))
        for rule_id, description in rules
    }
    sections = create_model("RuleSections", __config__=ConfigDict(extra="forbid", frozen=True), **fields)
    return create_model(
        "RulesFile",
        __config__=ConfigDict(extra="forbid", frozen=True),
        rules=(
            sections,
            Field(
                default_factory=sections,
                description="[rules.<rule_id>] tables: overrides of the rules' defaults",
            ),
        ),
    )


def rules_file_model(rules: Rules = RULES) -> type[BaseModel]:
    """The pydantic model of a ``rules.toml`` for the registry ``rules``: one optional
    ``RuleOverride`` per rule id (described by the rule's description), nothing else."""
    return _file_model(tuple((r.id, r.description) for r in rules.values()))


def _overridden(parsed: BaseModel, rules: Rules) -> dict[str, Rule]:
    sections = parsed.rules  # type: ignore[attr-defined]
    out = dict(rules)
    for rule_id in sections.model_fields_set:
        override = getattr(sections, rule_id)
        if override is not None:
            out[rule_id] = override.applied_to(out[rule_id])
    return out


def apply_overrides(
    data: Mapping[str, Any], rules: Rules = RULES, source: str = "rules.toml"
) -> dict[str, Rule]:
    """The registry with the overrides of a parsed ``rules.toml`` applied.

    ``data`` is the whole file: ``{"rules": {rule_id: {key: value}}}``. Raises
    ``RulesConfigError`` naming every unknown section, rule id or key, and bad values.
    """
    return _overridden(config.validate(rules_file_model(rules), data, source, RulesConfigError), rules)


def load_rules(path: Path | None) -> dict[str, Rule]:
    """The registry with the overrides in ``path`` (a ``rules.toml``); defaults if it is None or absent."""
    if path is None or not path.exists():
        return dict(RULES)
    return _overridden(config.load_toml(path, rules_file_model(RULES), RulesConfigError), RULES)


CUTOVER_RULES_FILE = "rules.cutover.toml"
THRESHOLD_SETS = ("test_load", "cutover")


def rules_for_migration(
    migration_id: str, root: Path | None = None, thresholds: str = "test_load"
) -> dict[str, Rule]:
    """The rules of one migration: defaults + ``<config root>/<migration_id>/rules.toml`` if present.

    ``thresholds="cutover"``: then ``rules.cutover.toml`` on top, if present, in the same format:
    the cutover's thresholds (usually stricter: what the fix cycles accepted, nothing more) replace
    those of the rules it names; the others stay as ``rules.toml`` sets them."""
    if thresholds not in THRESHOLD_SETS:
        raise RulesConfigError(f"unknown threshold set {thresholds!r}; known: {', '.join(THRESHOLD_SETS)}")
    directory = (root or CONFIG_ROOT) / migration_id
    rules = load_rules(directory / "rules.toml")
    cutover = directory / CUTOVER_RULES_FILE
    if thresholds == "cutover" and cutover.exists():
        rules = _overridden(config.load_toml(cutover, rules_file_model(rules), RulesConfigError), rules)
    return rules


# --- thresholds ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Breach:
    """A rule whose issues passed its threshold. ``blocking``: it stops delivery (FIX rules)."""

    rule: str
    entity: str
    severity: Severity
    count: int
    total: int
    percent: float
    threshold: Threshold
    blocking: bool

    def describe(self) -> str:
        return (
            f"{self.rule} ({self.severity}): {self.count} of {self.total} {self.entity} "
            f"({self.percent:.2f}%), allowed {self.threshold.describe()}"
        )


def percent_of(count: int, total: int) -> float:
    """``count`` as a share of ``total`` in %; 100 when there is no total to speak of."""
    if total <= 0:
        return 0.0 if count == 0 else 100.0
    return 100.0 * count / total


def evaluate(counts: Mapping[str, int], totals: Mapping[str, int], rules: Rules = RULES) -> list[Breach]:
    """The rules whose issue counts pass their thresholds, in registry order.

    ``counts``: rule id → number of records with the issue; ``totals``: entity → records
    of the entity (a rule's percentage is of all the entities it judges). A breach of a
    ``FIX`` rule is ``blocking``; ``REVIEW``/``INFO`` never are.
    Raises ``ValueError`` for a count of a rule that is not in ``rules``, or a rule
    entity with no total.
    """
    unknown = sorted(set(counts) - set(rules))
    if unknown:
        raise ValueError(
            f"issue counts for unknown rule(s) {', '.join(unknown)}; known rule ids: {', '.join(rules)}"
        )
    breaches = []
    for rule in rules.values():
        count = int(counts.get(rule.id, 0))
        if count == 0:
            continue
        if rule.entity not in totals:
            raise ValueError(
                f"no record total for entity {rule.entity!r} (rule {rule.id}); "
                f"totals given: {', '.join(totals)}"
            )
        total = rule.total(totals)
        percent = percent_of(count, total)
        if rule.threshold.breached_by(count, percent):
            breaches.append(
                Breach(
                    rule.id,
                    rule.entity,
                    rule.severity,
                    count,
                    total,
                    percent,
                    rule.threshold,
                    blocking=rule.blocks,
                )
            )
    return breaches
