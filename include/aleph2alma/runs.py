"""Names of runs: which DAG run a phase's artifacts belong to, and the child runs a phase starts.

A phase DAG (test load, fix cycle, cutover …) runs the extract and the transform as child
DAG runs named ``<parent run id>__<step>``. This module is the only place that builds or
parses those names; everything else passes ``RunRef`` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aleph2alma.storage import RunScope

DEFAULT_MIGRATION_ID = "demo"
"""The trigger forms' default migration: what a run triggered without ``migration_id`` works on."""
EXTRACT_DAG = "migration_extract"
TRANSFORM_DAG = "migration_transform"
TEST_LOAD_DAG = "migration_test_load"
FIX_CYCLE_DAG = "migration_fix_cycle"
NIGHTLY_DELTA_DAG = "aleph_nightly_delta"
POST_GO_LIVE_DAG = "migration_post_go_live"
CUTOVER_DAG = "migration_cutover"
_CHILD_SEPARATOR = "__"


class RunRefError(ValueError):
    """A run reference is not ``<run id>`` or ``<dag id>/<run id>``."""


class ChildStep(StrEnum):
    """A step a phase runs as a child DAG run; the value is the run-id suffix."""

    EXTRACT = "extract"
    TRANSFORM = "transform"
    # The cutover extracts and transforms twice: the inventory at the technical-services freeze,
    # then the final snapshot (EXTRACT, TRANSFORM) at the fulfillment freeze.
    INVENTORY_EXTRACT = "inventory_extract"
    INVENTORY_TRANSFORM = "inventory_transform"

    @property
    def dag_id(self) -> str:
        transforms = (ChildStep.TRANSFORM, ChildStep.INVENTORY_TRANSFORM)
        return TRANSFORM_DAG if self in transforms else EXTRACT_DAG

    def run_id_template(self) -> str:
        """The child's run id as a Jinja template of the parent's (for ``TriggerDagRunOperator``)."""
        return "{{ run_id }}" + _CHILD_SEPARATOR + self.value


PHASE_CHILDREN = (ChildStep.EXTRACT, ChildStep.TRANSFORM)
"""What a test load or a fix cycle's transform step runs: one extract, one transform."""


@dataclass(frozen=True)
class RunRef:
    """One DAG run whose artifacts another step reads."""

    dag_id: str
    run_id: str

    def child(self, step: ChildStep) -> RunRef:
        """The child run this run started for ``step``."""
        return RunRef(step.dag_id, f"{self.run_id}{_CHILD_SEPARATOR}{step.value}")

    def fixed(self, extract: ChildStep) -> RunRef:
        """Where this run keeps its ``extract`` child's raw stage with the fix rules applied (the
        cutover's): a scope of this run's DAG, not a DAG run of its own; the transform reads it."""
        return RunRef(self.dag_id, f"{self.run_id}{_CHILD_SEPARATOR}{extract.value}_fixed")

    @staticmethod
    def fixed_template(dag_id: str, extract: ChildStep) -> str:
        """``fixed(extract)`` of this run as a Jinja template (for the transform's conf)."""
        return f"{dag_id}/{{{{ run_id }}}}{_CHILD_SEPARATOR}{extract.value}_fixed"

    def scope(self, migration_id: str) -> RunScope:
        return RunScope(migration_id, self.dag_id, self.run_id)

    def __str__(self) -> str:
        return f"{self.dag_id}/{self.run_id}"

    @staticmethod
    def template(dag_id: str) -> str:
        """This run's reference as a Jinja template (for a child's conf): ``str()`` of it, rendered."""
        return f"{dag_id}/{{{{ run_id }}}}"

    @classmethod
    def parse(cls, text: str, default_dag: str) -> RunRef:
        """``<dag id>/<run id>``, or a bare ``<run id>`` of ``default_dag``."""
        dag_id, _, run_id = text.strip().rpartition("/")
        if not run_id or "/" in dag_id:
            raise RunRefError(f"not a run reference: {text!r}; expected <run id> or <dag id>/<run id>")
        return cls(dag_id or default_dag, run_id)


def is_child_run(run_id: str) -> bool:
    """True for a run a phase started for one of its steps (``<parent run id>__<step>``)."""
    return any(run_id.endswith(_CHILD_SEPARATOR + step.value) for step in ChildStep)
