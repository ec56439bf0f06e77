"""The two kinds of failure a task can have, and why the difference matters to an operator.

A *transient* failure (a dropped connection, an S3 hiccup, Alma's per-second limit) is
worth retrying: Airflow does, with backoff. A *permanent* failure is not: a typo in
``migration.toml``, a form with a missing column, a FIX rule past its threshold, a
delivery whose far side does not match. Retrying those only makes the operator wait
minutes for the same message. Every permanent error derives from ``PermanentError``;
``dagkit.DEFAULT_ARGS`` maps it, in one place, to "fail now, no retries".
"""

from __future__ import annotations


class PermanentError(Exception):
    """A failure that retrying cannot fix: the message says what the operator must change."""


class ConfigError(PermanentError, ValueError):
    """A configuration file (settings, rules, fix rules, the migration form) is missing or invalid.

    The message names the file, the key and what is allowed.
    """
