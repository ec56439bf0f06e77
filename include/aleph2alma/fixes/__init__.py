"""The fix cycle: declarative repairs of the raw extract, and what changed between iterations."""

from aleph2alma.fixes.apply import DROP_REASON, DroppedPatrons, FixEntry, FixLog, apply_fixes, patrons_to_drop
from aleph2alma.fixes.config import (
    FixRules,
    FixRulesError,
    fix_rules_for_migration,
    load_fix_rules,
    parse_fix_rules,
)
from aleph2alma.fixes.diff import IterationDiff, RuleDiff, diff_iterations

__all__ = [
    "DROP_REASON",
    "DroppedPatrons",
    "FixEntry",
    "FixLog",
    "FixRules",
    "FixRulesError",
    "IterationDiff",
    "RuleDiff",
    "apply_fixes",
    "diff_iterations",
    "fix_rules_for_migration",
    "load_fix_rules",
    "parse_fix_rules",
    "patrons_to_drop",
]
