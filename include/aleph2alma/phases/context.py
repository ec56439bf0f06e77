"""What every phase step is given: where it writes, which migration, its settings and rules.

Steps take one ``PhaseContext`` plus typed references to what they read (``RunRef``,
``Committed``, ``PartRef``) and return typed results (``aleph2alma.refs``). The DAG builds
the context from the running task; tests and the command line build it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

from aleph2alma.runs import RunRef
from aleph2alma.settings import MigrationSettings
from aleph2alma.storage import ArtifactStore, Encryption, RunScope


@dataclass
class PhaseContext:
    store: ArtifactStore
    scope: RunScope  # the run this step belongs to: it writes only under it
    settings: MigrationSettings
    as_of: date = field(default_factory=date.today)
    config_root: Path | None = None  # include/config by default
    form_path: Path | None = None  # the migration form, when not <config root>/<migration id>/form
    thresholds: str = "test_load"  # the validation thresholds: test_load, or cutover (rules.cutover.toml)

    def __post_init__(self) -> None:
        # The migration's [storage] settings decide how every artifact is encrypted at rest.
        if isinstance(self.store, ArtifactStore):
            self.store.encryption = Encryption(self.settings.storage.kms_key_id)

    @property
    def migration_id(self) -> str:
        return self.scope.migration_id

    @property
    def run(self) -> RunRef:
        return RunRef(self.scope.dag_id, self.scope.run_id)

    def scope_of(self, run: RunRef) -> RunScope:
        """Another run of the same migration, to read from."""
        return run.scope(self.migration_id)

    @cached_property
    def form_dir(self) -> Path:
        from aleph2alma.alma.form import form_dir

        return self.form_path or form_dir(self.migration_id, self.config_root)

    @cached_property
    def form(self) -> Any:
        """The migration form as the librarian last saved it."""
        from aleph2alma.alma.form import load_form

        return load_form(self.form_dir)

    @cached_property
    def rules(self) -> Any:
        """The validation rules with this migration's thresholds (the cutover's in a cutover transform)."""
        from aleph2alma.validate.rules import rules_for_migration

        return rules_for_migration(self.migration_id, self.config_root, self.thresholds)
