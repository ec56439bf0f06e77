"""The fix cycle: declarative repairs of the raw extract, and what changed between iterations."""

from aleph2alma.fixes.diff import IterationDiff, RuleDiff, diff_iterations
from aleph2alma.fixes.rules import (
    DROP_REASON,
    DroppedPatrons,
    FixEntry,
    FixLog,
    FixRules,
    FixRulesError,
    apply_fixes,
    fix_rules_for_migration,
    load_fix_rules,
    parse_fix_rules,
    patrons_to_drop,
)

__all__ = ["DROP_REASON", "DroppedPatrons", "FixEntry", "FixLog", "FixRules", "FixRulesError", "IterationDiff",
           "RuleDiff", "apply_fixes", "diff_iterations", "fix_rules_for_migration", "load_fix_rules",
           "parse_fix_rules", "patrons_to_drop"]
