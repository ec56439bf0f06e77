"""Reconciliation after a load: every Aleph record accounted for, and a sample checked in Alma."""

from aleph2alma.reconcile.reconcile import (
    SAMPLE_FIELDS,
    EntityReconciliation,
    FieldMismatch,
    Reconciliation,
    SampleCheck,
    reconcile,
)

__all__ = [
    "SAMPLE_FIELDS",
    "EntityReconciliation",
    "FieldMismatch",
    "Reconciliation",
    "SampleCheck",
    "reconcile",
]
