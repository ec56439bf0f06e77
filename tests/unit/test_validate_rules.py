"""Rule registry, thresholds and per-migration rules.toml overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from aleph2alma.errors import ConfigError
from aleph2alma.validate.issues import Severity
from aleph2alma.validate.rules import (
    EXPORT_RULES,
    INPUT_RULES,
    RULES,
    Rule,
    RulesConfigError,
    Threshold,
    apply_overrides,
    evaluate,
    load_rules,
    rules_for_migration,
)
from aleph2alma_dev.demo.defects import DEFECT_RATES

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "include" / "config"

EXPECTED = {
    "invalid_leader": ("bibs", "FIX", True),
    "missing_title": ("bibs", "FIX", True),
    "invalid_indicators": ("bibs", "REVIEW", False),
    "invalid_utf8": ("bibs", "FIX", False),
    "legacy_gbk": ("bibs", "INFO", False),
    "legacy_latin1": ("bibs", "INFO", False),
    "encoding_ambiguous": ("bibs", "REVIEW", False),
    "encoding_evidence": ("bibs", "INFO", False),
    "encoding_conflict": ("bibs", "REVIEW", False),
    "directory_rebuilt": ("bibs", "REVIEW", False),
    "marc_warning": ("bibs", "REVIEW", False),
    "flavour_mismatch": ("bibs", "REVIEW", False),
    "malformed_line": ("bibs", "FIX", False),
    "empty_export": ("bibs", "FIX", False),
    "orphan_holdings": ("holdings", "FIX", True),
    "duplicate_barcode": ("items", "FIX", False),
    "missing_barcode": ("items", "FIX", False),
    "orphan_item": ("items", "FIX", True),
    "unmapped_location": ("items", "FIX", False),
    "unmapped_item_status": ("items", "FIX", False),
    "duplicate_patron_id": ("patrons", "FIX", False),
    "unmapped_user_group": ("patrons", "FIX", False),
    "expired_patron_with_loans": ("patrons", "REVIEW", False),
    "loan_missing_item": ("loans", "FIX", True),
    "loan_missing_patron": ("loans", "FIX", True),
    "request_missing_item": ("requests", "FIX", True),
    "request_missing_patron": ("requests", "FIX", True),
    "fine_missing_patron": ("fines", "FIX", True),
}


def test_registry_has_the_fixed_rule_ids() -> None:
    assert {rid: (r.entity, str(r.severity), r.rejects_record) for rid, r in RULES.items()} == EXPECTED


def test_registry_matches_the_demo_defects() -> None:
    """Every record rule has a demo defect; the export rules judge files the demo keeps whole,
    the input rules encodings and structures its exports do not have."""
    assert {(e, d) for e, ds in DEFECT_RATES.items() for d in ds} == {
        (r.entity, r.id) for r in RULES.values() if r.id not in EXPORT_RULES + INPUT_RULES
    }


@pytest.mark.parametrize("rule", RULES.values(), ids=list(RULES))
def test_every_rule_says_what_to_do(rule: Rule) -> None:
    assert rule.id and len(rule.description) > 60 and "  " not in rule.description


THRESHOLD_CASES = [
    ("no limits: any issue breaches", Threshold(), 1, 0.01, True),
    ("no limits: zero issues never breach", Threshold(), 0, 0.0, False),
    ("count at the limit", Threshold(max_count=5), 5, 50.0, False),
    ("count past the limit", Threshold(max_count=5), 6, 0.1, True),
    ("percent at the limit", Threshold(max_percent=0.5), 50, 0.5, False),
    ("percent past the limit", Threshold(max_percent=0.5), 51, 0.51, True),
    ("both: count past, percent within", Threshold(max_count=3, max_percent=1.0), 4, 0.2, True),
    ("both: percent past, count within", Threshold(max_count=30, max_percent=1.0), 4, 2.0, True),
    ("both within", Threshold(max_count=30, max_percent=1.0), 4, 0.5, False),
]


@pytest.mark.parametrize(
    ("threshold", "count", "percent", "breached"),
    [c[1:] for c in THRESHOLD_CASES],
    ids=[c[0] for c in THRESHOLD_CASES],
)
def test_threshold(threshold: Threshold, count: int, percent: float, breached: bool) -> None:
    assert threshold.breached_by(count, percent) is breached


def _rules(**thresholds: tuple[Severity, Threshold]) -> dict[str, Rule]:
    return {rid: Rule(rid, "items", sev, False, "d", th) for rid, (sev, th) in thresholds.items()}


EVALUATE_CASES = [
    ("FIX over count blocks", Severity.FIX, Threshold(max_count=0), 1, 1000, [(True, 0.1)]),
    ("FIX over percent blocks", Severity.FIX, Threshold(max_percent=0.5), 6, 1000, [(True, 0.6)]),
    ("FIX within percent passes", Severity.FIX, Threshold(max_percent=0.5), 5, 1000, []),
    (
        "REVIEW over threshold is reported, never blocks",
        Severity.REVIEW,
        Threshold(max_count=0),
        9,
        10,
        [(False, 90.0)],
    ),
    ("INFO over threshold never blocks", Severity.INFO, Threshold(max_percent=1), 500, 1000, [(False, 50.0)]),
    ("no issues, no breach", Severity.FIX, Threshold(max_count=0), 0, 1000, []),
]


@pytest.mark.parametrize(
    ("severity", "threshold", "count", "total", "expected"),
    [c[1:] for c in EVALUATE_CASES],
    ids=[c[0] for c in EVALUATE_CASES],
)
def test_evaluate(
    severity: Severity, threshold: Threshold, count: int, total: int, expected: list[tuple[bool, float]]
) -> None:
    breaches = evaluate({"r": count}, {"items": total}, _rules(r=(severity, threshold)))
    assert [(b.blocking, round(b.percent, 4)) for b in breaches] == expected


def test_evaluate_default_rules() -> None:
    counts = {
        "unmapped_location": 1,
        "duplicate_barcode": 2,
        "orphan_item": 20,
        "expired_patron_with_loans": 50,
    }
    totals = {"items": 1000, "patrons": 100}
    breaches = evaluate(counts, totals, RULES)
    assert [(b.rule, b.blocking) for b in breaches] == [("orphan_item", True), ("unmapped_location", True)]
    assert "orphan_item (FIX): 20 of 1000 items (2.00%), allowed ≤ 1%" == breaches[0].describe()


def test_encoding_rules_judge_bibs_and_holdings() -> None:
    # 6 of 300 bibs + 100 holdings = 1.5%: past the 0.5% default, though 6 / 300 bibs alone would be 2%
    breaches = evaluate({"invalid_utf8": 6}, {"bibs": 300, "holdings": 100}, RULES)
    assert [(b.rule, b.total, b.percent) for b in breaches] == [("invalid_utf8", 400, 1.5)]
    assert RULES["legacy_gbk"].entities == ("bibs", "holdings")


def test_evaluate_unknown_rule_and_missing_total() -> None:
    with pytest.raises(ValueError, match="no_such_rule"):
        evaluate({"no_such_rule": 1}, {"items": 1}, RULES)
    with pytest.raises(ValueError, match="'patrons'"):
        evaluate({"duplicate_patron_id": 1}, {"items": 1}, RULES)


def test_overrides_apply() -> None:
    rules = apply_overrides(
        {
            "rules": {
                "duplicate_barcode": {"severity": "REVIEW", "max_count": 10},
                "orphan_item": {"max_percent": 2},
                "invalid_indicators": {"severity": "FIX"},
            }
        }
    )
    assert rules["duplicate_barcode"].severity is Severity.REVIEW
    assert rules["duplicate_barcode"].threshold == Threshold(max_count=10)  # replaces the default percent
    assert rules["orphan_item"].threshold == Threshold(max_percent=2.0)
    assert rules["invalid_indicators"].severity is Severity.FIX
    assert rules["invalid_indicators"].threshold == RULES["invalid_indicators"].threshold
    assert RULES["duplicate_barcode"].severity is Severity.FIX  # defaults untouched
    assert list(rules) == list(RULES)


ERROR_CASES = [
    (
        "unknown rule id",
        {"rules": {"dup_barcode": {}, "no_title": {}}},
        r"rules\.dup_barcode: unknown key; known keys: invalid_leader, .*"
        r"\nrules.toml: rules\.no_title: unknown key",
    ),
    (
        "unknown key",
        {"rules": {"orphan_item": {"max_pct": 1}}},
        r"rules\.orphan_item\.max_pct: unknown key; known keys: severity, max_count, max_percent",
    ),
    ("unknown section", {"thresholds": {}}, r"thresholds: unknown key; known keys: rules"),
    (
        "bad severity",
        {"rules": {"orphan_item": {"severity": "WARN"}}},
        r"rules\.orphan_item\.severity: \"WARN\" is not allowed; allowed: 'FIX', 'REVIEW' or 'INFO'",
    ),
    (
        "negative count",
        {"rules": {"orphan_item": {"max_count": -1}}},
        r"rules\.orphan_item\.max_count: -1 is out of range; allowed: a whole number ≥ 0",
    ),
    (
        "fractional count",
        {"rules": {"orphan_item": {"max_count": 1.5}}},
        r"rules\.orphan_item\.max_count: expected a whole number, got 1.5",
    ),
    (
        "boolean count",
        {"rules": {"orphan_item": {"max_count": True}}},
        r"rules\.orphan_item\.max_count: expected a whole number, got true",
    ),
    (
        "percent over 100",
        {"rules": {"orphan_item": {"max_percent": 120}}},
        r"rules\.orphan_item\.max_percent: 120 is out of range; allowed: a number ≥ 0 and ≤ 100",
    ),
    (
        "percent not a number",
        {"rules": {"orphan_item": {"max_percent": float("nan")}}},
        r"rules\.orphan_item\.max_percent: nan is out of range; allowed: a number ≥ 0 and ≤ 100",
    ),
    (
        "percent as text",
        {"rules": {"orphan_item": {"max_percent": "1%"}}},
        r"rules\.orphan_item\.max_percent: expected a number, got \"1%\"",
    ),
    ("not a table", {"rules": {"orphan_item": 3}}, r"rules\.orphan_item: expected a table, got 3"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_override_errors(data: dict, message: str) -> None:
    with pytest.raises(RulesConfigError, match=f"^rules.toml: {message}") as err:
        apply_overrides(data)
    assert isinstance(err.value, ConfigError)


KINDS_OF_ERROR = {
    "unknown-key": (
        "[rules.duplicate_barcode]\nmax_percnt = 1.0\n",
        "rules.duplicate_barcode.max_percnt",
        "unknown key; known keys: severity, max_count, max_percent",
    ),
    "unknown-rule-id": (
        "[rules.duplicate_barcodes]\nmax_count = 1\n",
        "rules.duplicate_barcodes",
        "unknown key; known keys: invalid_leader, missing_title, ",
    ),
    "wrong-type": (
        '[rules.duplicate_barcode]\nmax_percent = "0.5"\n',
        "rules.duplicate_barcode.max_percent",
        'expected a number, got "0.5"',
    ),
    "bad-enum": (
        '[rules.duplicate_barcode]\nseverity = "fix"\n',
        "rules.duplicate_barcode.severity",
        "\"fix\" is not allowed; allowed: 'FIX', 'REVIEW' or 'INFO'",
    ),
    "table-not-section": ("rules = 3\n", "rules", "expected a table, got 3"),
}
# rules.toml has no required key: every key of a section is optional, and so is every section.


@pytest.mark.parametrize(("text", "key", "allowed"), KINDS_OF_ERROR.values(), ids=KINDS_OF_ERROR.keys())
def test_an_error_names_the_file_the_key_and_what_is_allowed(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    path = tmp_path / "demo" / "rules.toml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesConfigError) as err:
        rules_for_migration("demo", tmp_path)
    assert str(err.value).startswith(f"{path}: {key}: {allowed}")
    assert isinstance(err.value, ConfigError)  # the task fails at once, no retries


def test_overrides_for_another_registry() -> None:
    registry = _rules(r=(Severity.FIX, Threshold(max_count=0)))
    assert apply_overrides({"rules": {"r": {"max_count": 3}}}, registry)["r"].threshold == Threshold(
        max_count=3
    )
    with pytest.raises(RulesConfigError, match=r"rules\.orphan_item: unknown key; known keys: r$"):
        apply_overrides({"rules": {"orphan_item": {"max_count": 3}}}, registry)


def test_load_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[rules.duplicate_barcode]\nseverity = "FIX"\nmax_count = 0\nmax_percent = 0.5\n', encoding="utf-8"
    )
    assert load_rules(path)["duplicate_barcode"].threshold == Threshold(0, 0.5)
    assert load_rules(tmp_path / "absent.toml") == RULES
    path.write_text("[rules.duplicate_barcode\n", encoding="utf-8")
    with pytest.raises(RulesConfigError, match=f"^{path}: not valid TOML: "):
        load_rules(path)
    path.write_text("[rules.duplicate_barcodes]\nmax_count = 1\n", encoding="utf-8")
    with pytest.raises(RulesConfigError, match=f"^{path}: rules.duplicate_barcodes: unknown key"):
        load_rules(path)


def test_demo_rules_toml_loads() -> None:
    rules = rules_for_migration("demo", CONFIG_ROOT)
    assert set(rules) == set(RULES)
    assert rules != RULES
