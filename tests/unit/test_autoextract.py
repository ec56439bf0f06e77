"""AutoExtract's steps run over SSH and their outputs are staged: against a real SSH server (the
dev stand-in for the Aleph server) with a real paramiko client, running the stand-in AutoExtract
script as real processes."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aleph2alma.delivery.autoextract import (
    STAGE,
    AutoExtractInterrupted,
    AutoExtractOutputMissing,
    AutoExtractStepFailed,
    CommandResult,
    ParamikoShell,
    RemoteCommandTimeout,
    StepResult,
    matches,
    run_step,
    staged_outputs,
)
from aleph2alma.errors import PermanentError
from aleph2alma.settings import AutoExtractSettings, AutoExtractStep
from aleph2alma.storage import ArtifactStore, RunScope
from aleph2alma.storage_local import LocalObjectClient
from aleph2alma_dev.demo import autoextract_standin
from aleph2alma_dev.ssh_standin import AlephShellStandin

SCOPE = RunScope("demo", "migration_test_load", "manual__2026-11-01T00:00:00+00:00")


def clock() -> float:
    return 100.0


def step_commands(server: AlephShellStandin) -> list[str]:
    """The steps' commands the server ran (not the ``date`` that reads its clock before each)."""
    return [c for c in server.execs if c != "date +%s"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AlephShellStandin]:
    with AlephShellStandin(tmp_path / "aleph") as standin:
        yield standin


@pytest.fixture
def shell(server: AlephShellStandin) -> Iterator[ParamikoShell]:
    shell = ParamikoShell(server.connect(), io_timeout=10)
    yield shell
    shell.close()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(LocalObjectClient(tmp_path / "s3"), "artifacts")
    store.ensure_bucket()
    return store


def settings(server: AlephShellStandin, *steps: AutoExtractStep) -> AutoExtractSettings:
    output_dir = server.root / "autoextract" / "output"
    output_dir.mkdir(parents=True, exist_ok=True)
    if not steps:
        steps = tuple(
            AutoExtractStep(
                name=step,
                command=autoextract_standin.command(step, str(output_dir)),
                expected_outputs=autoextract_standin.EXPECTED_OUTPUTS[step],
                timeout_minutes=1,
            )
            for step in autoextract_standin.STEPS
        )
    return AutoExtractSettings(
        ssh_conn_id="aleph_ssh", workdir=str(server.root), output_dir=str(output_dir), steps=steps
    )


def test_all_five_steps_run_in_order_and_every_output_is_staged_with_its_sha256(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore, tmp_path: Path
) -> None:
    auto = settings(server)
    results = [run_step(store, SCOPE, auto, s.name, shell, tmp_path, clock=clock) for s in auto.steps]

    assert [r.step for r in results] == list(autoextract_standin.STEPS)
    assert len(step_commands(server)) == 5 and all(
        c.startswith(f"cd {shlex.quote(str(server.root))} && ") for c in step_commands(server)
    )
    extract = results[2]
    assert [o["path"] for o in extract.outputs] == [
        f"extract/{e}.txt" for e in sorted(autoextract_standin.ENTITIES)
    ]
    output_dir = Path(auto.output_dir)
    for result in results:
        manifest = store.manifest(result.manifest)
        assert manifest.stage == STAGE and manifest.entity == result.step
        assert manifest.extra["exit_status"] == 0 and manifest.extra["seconds"] == 0
        assert autoextract_standin.BANNER in manifest.extra["stdout_tail"]
        for output, part in zip(result.outputs, manifest.files, strict=True):
            local = (output_dir / output["path"]).read_bytes()
            assert output["sha256"] == part.sha256 == hashlib.sha256(local).hexdigest()
            assert output["bytes"] == part.bytes == len(local)
            assert part.key == SCOPE.prefix(STAGE, result.step) + output["path"]
            assert store.get_bytes(part.key) == local
    package = (output_dir / autoextract_standin.PACKAGE).read_bytes()
    assert hashlib.sha256(package).hexdigest() in (output_dir / autoextract_standin.TRANSFER_LOG).read_text()

    rows = staged_outputs(store, SCOPE, auto)
    assert [(r["step"], r["path"]) for r in rows][:2] == [
        ("generate_form", autoextract_standin.FORM),
        ("validate_p2e", autoextract_standin.P2E_REPORT),
    ]
    assert len(rows) == 9 and all(r["uri"] == store.uri(r["key"]) for r in rows)
    assert json.loads(json.dumps(results[0].to_dict())) == results[0].to_dict()
    assert StepResult.from_dict(results[3].to_dict()) == results[3]


def test_a_retry_after_the_commit_returns_the_committed_step_without_running_it_again(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    auto = settings(server)
    first = run_step(store, SCOPE, auto, "generate_form", shell, clock=clock)
    again = run_step(store, SCOPE, auto, "generate_form", shell, clock=clock)

    assert again == first
    assert len(step_commands(server)) == 1
    assert [r["step"] for r in staged_outputs(store, SCOPE, auto)] == ["generate_form"]


def test_a_failing_command_is_a_permanent_error_with_the_tail_of_its_output(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    noisy = "for i in $(seq 1 40); do echo line$i >&2; done; echo done-so-far; exit 3"
    auto = settings(server, AutoExtractStep(name="extract", command=noisy, expected_outputs=("extract/*",)))

    with pytest.raises(AutoExtractStepFailed) as failed:
        run_step(store, SCOPE, auto, "extract", shell)

    message = str(failed.value)
    assert "step extract failed with exit status 3" in message
    assert "line40" in message and "line21" in message and "line20\n" not in message
    assert "done-so-far" in message
    assert not store.stage_committed(SCOPE, STAGE, "extract")


def test_a_step_before_its_prerequisite_fails_with_the_stand_ins_reason(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    auto = settings(server)
    with pytest.raises(AutoExtractStepFailed, match="exit status 2(.|\n)*run the extract step first"):
        run_step(store, SCOPE, auto, "package", shell)


def test_a_missing_expected_output_is_a_permanent_error_naming_the_pattern_and_what_is_there(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    out = server.root / "autoextract" / "output"
    command = f"mkdir -p {shlex.quote(str(out))}/extract && echo x > {shlex.quote(str(out))}/extract/bibs.txt"
    step = AutoExtractStep(
        name="extract", command=command, expected_outputs=("extract/*.txt", "extract/*.mrc")
    )
    auto = settings(server, step)

    with pytest.raises(AutoExtractOutputMissing) as missing:
        run_step(store, SCOPE, auto, "extract", shell)

    assert isinstance(missing.value, PermanentError)
    assert (
        f"no file under {out} written by this step matches 'extract/*.mrc'; there: extract/bibs.txt"
        in str(missing.value)
    )
    assert not store.stage_committed(SCOPE, STAGE, "extract")

    # The operator puts the missing file there and clears the task: the command does not run again.
    (out / "extract" / "bibs.mrc").write_bytes(b"00024nam  2200025   4500\x1e\x1d")
    result = run_step(store, SCOPE, auto, "extract", shell)
    assert [o["path"] for o in result.outputs] == ["extract/bibs.mrc", "extract/bibs.txt"]
    assert len(step_commands(server)) == 1


def test_files_older_than_the_step_are_an_earlier_runs_and_not_staged(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    out = server.root / "autoextract" / "output" / "extract"
    out.mkdir(parents=True)
    (out / "bibs.mrc").write_bytes(b"old")
    os.utime(out / "bibs.mrc", (time.time() - 3600, time.time() - 3600))
    step = AutoExtractStep(name="extract", command="true", expected_outputs=("extract/*.mrc",))
    with pytest.raises(AutoExtractOutputMissing, match="only older than this step: extract/bibs.mrc"):
        run_step(store, SCOPE, settings(server, step), "extract", shell)


def test_a_step_stopped_by_the_servers_timeout_is_a_permanent_error(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    ticks = iter([0.0, 61.0])  # the command "ran" a minute and a second: past timeout_minutes = 1
    step = AutoExtractStep(name="extract", command="echo busy; exit 124", timeout_minutes=1)
    with pytest.raises(AutoExtractStepFailed, match="stopped on the Aleph server after its 1 minutes"):
        run_step(store, SCOPE, settings(server, step), "extract", shell, clock=lambda: next(ticks))
    assert "timeout -k 60 60 /bin/sh -c" in step_commands(server)[0]


def test_a_missing_output_dir_is_named(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    step = AutoExtractStep(name="extract", command="true", expected_outputs=("*.mrc",))
    auto = AutoExtractSettings(
        workdir=str(server.root), output_dir=str(server.root / "nowhere"), steps=(step,)
    )
    with pytest.raises(AutoExtractOutputMissing, match="nowhere does not exist"):
        run_step(store, SCOPE, auto, "extract", shell)


class ShortTimeout(ParamikoShell):
    """The real shell, every command given half a second (timeout_minutes cannot say less than 1)."""

    def run(self, command: str, timeout: float) -> CommandResult:
        return super().run(command, 0.5)


def test_a_command_past_its_timeout_is_a_retryable_error(
    server: AlephShellStandin, store: ArtifactStore
) -> None:
    auto = settings(server, AutoExtractStep(name="extract", command="sleep 30", expected_outputs=()))
    shell = ShortTimeout(server.connect(), io_timeout=10)
    try:
        with pytest.raises(AutoExtractInterrupted, match="timed out.*may still be running") as interrupted:
            run_step(store, SCOPE, auto, "extract", shell)
    finally:
        shell.close()
    assert not isinstance(interrupted.value, PermanentError)
    assert isinstance(interrupted.value.__cause__, RemoteCommandTimeout)


def test_a_lost_connection_is_a_retryable_error(server: AlephShellStandin, store: ArtifactStore) -> None:
    auto = settings(server, AutoExtractStep(name="extract", command="true"))
    shell = ParamikoShell(server.connect(), io_timeout=10)
    shell.close()
    with pytest.raises(AutoExtractInterrupted, match="cannot reach the Aleph server over SSH") as interrupted:
        run_step(store, SCOPE, auto, "extract", shell)
    assert not isinstance(interrupted.value, PermanentError)


def test_a_step_without_expected_outputs_commits_an_empty_stage(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    auto = settings(server, AutoExtractStep(name="transfer", command="echo sent"))
    result = run_step(store, SCOPE, auto, "transfer", shell, clock=clock)
    assert result.outputs == [] and store.manifest(result.manifest).extra["stdout_tail"] == "sent"


def test_an_unknown_step_is_a_config_error(
    server: AlephShellStandin, shell: ParamikoShell, store: ArtifactStore
) -> None:
    with pytest.raises(PermanentError, match="'extrakt' is not in .*configured: generate_form, validate_p2e"):
        run_step(store, SCOPE, settings(server), "extrakt", shell)
    assert server.execs == []


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("extract/*.mrc", "extract/bibs.mrc", True),
        ("extract/*.mrc", "extract/old/bibs.mrc", False),
        ("extract/*.mrc", "x/extract/bibs.mrc", False),
        ("*.tar.gz", "aleph_extract.tar.gz", True),
        ("extract/*.MRC", "extract/bibs.mrc", False),
        ("form/aleph_migration_form.xlsx", "form/aleph_migration_form.xlsx", True),
    ],
    ids=lambda v: str(v),
)
def test_patterns_match_segment_by_segment(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


def test_the_stand_in_writes_identical_bytes_when_run_again(tmp_path: Path) -> None:
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        for step in autoextract_standin.STEPS:
            assert autoextract_standin.main([step, "--out", str(out)]) == 0
        runs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert runs[0] == runs[1] and len(runs[0]) == 9


def test_the_airflow_connection_logs_in_with_the_host_key_checked(
    server: AlephShellStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aleph2alma import wiring

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no known_hosts of this machine takes part
    monkeypatch.setenv("AIRFLOW_CONN_ALEPH_SSH_STANDIN", json.dumps(server.airflow_connection()))
    shell = wiring.aleph_shell("aleph_ssh_standin")
    try:
        result = shell.run(f"{shlex.quote(sys.executable)} -c 'import os; print(os.getcwd())'", timeout=30)
        assert result == CommandResult(0, f"{server.root}\n", "")
        assert {e.filename for e in shell.sftp().listdir_attr(str(server.root))} == {
            p.name for p in server.root.iterdir()
        }
    finally:
        shell.close()


def test_the_demos_autoextract_config_runs_every_step_through_the_phase_step(
    server: AlephShellStandin, store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each task of the autoextract group calls, on the configuration `make demo --autoextract`
    writes, through the Airflow connection the demo gives the stack."""
    from aleph2alma import settings as migration_settings
    from aleph2alma import wiring
    from aleph2alma.phases.context import PhaseContext
    from aleph2alma.phases.test_load import autoextract_step
    from aleph2alma_dev.demo.autoextract_demo import config_for, stack_env

    root = config_for(server, tmp_path / "config", "demo")
    env = stack_env(server, root)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW_CONN_ALEPH_SSH", env["AIRFLOW_CONN_ALEPH_SSH"])
    loaded = migration_settings.load("demo", root)
    assert loaded.delivery.mode == "autoextract"
    assert [s.name for s in loaded.delivery.autoextract.steps] == list(autoextract_standin.STEPS)
    ctx = PhaseContext(store, SCOPE, loaded, config_root=root)

    results = [autoextract_step(ctx, step, wiring.aleph_shell) for step in autoextract_standin.STEPS]

    assert [r["exit_status"] for r in results] == [0] * 5
    assert [r["path"] for r in staged_outputs(store, SCOPE, loaded.delivery.autoextract)][-1] == (
        autoextract_standin.TRANSFER_LOG
    )
    assert len(step_commands(server)) == 5
