import pytest

from aleph2alma.runs import EXTRACT_DAG, TRANSFORM_DAG, ChildStep, RunRef, RunRefError


def test_child_runs_are_named_after_the_parent() -> None:
    parent = RunRef("migration_test_load", "manual__2026-12-01")
    assert parent.child(ChildStep.EXTRACT) == RunRef(EXTRACT_DAG, "manual__2026-12-01__extract")
    assert parent.child(ChildStep.TRANSFORM) == RunRef(TRANSFORM_DAG, "manual__2026-12-01__transform")
    assert ChildStep.TRANSFORM.run_id_template() == "{{ run_id }}__transform"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("r1", RunRef(EXTRACT_DAG, "r1")),
        ("migration_fix_cycle/r2", RunRef("migration_fix_cycle", "r2")),
        (str(RunRef("migration_fix_cycle", "r3")), RunRef("migration_fix_cycle", "r3")),
    ],
    ids=["bare run id", "dag and run", "round trip"],
)
def test_parse(text: str, expected: RunRef) -> None:
    assert RunRef.parse(text, EXTRACT_DAG) == expected


@pytest.mark.parametrize("text", ["", "a/b/c", "dag/"], ids=["empty", "two slashes", "no run id"])
def test_parse_rejects_what_is_not_a_run(text: str) -> None:
    with pytest.raises(RunRefError, match="expected <run id> or <dag id>/<run id>"):
        RunRef.parse(text, EXTRACT_DAG)


def test_a_child_run_is_told_from_a_run_whose_id_has_double_underscores() -> None:
    from aleph2alma.runs import is_child_run

    parent = RunRef("migration_test_load", "demo__migration_test_load__20261207T041056")
    assert not is_child_run(parent.run_id)
    assert all(is_child_run(parent.child(step).run_id) for step in ChildStep)
