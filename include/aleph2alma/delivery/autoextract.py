"""Ex Libris' AutoExtract, one step per task, run over SSH on the Aleph server; its outputs staged.

In delivery mode ``autoextract`` Ex Libris' AutoExtract package builds the delivery on the Aleph
server. Its menu steps (generate the migration form, validate the P2E file, extract, package,
transfer) are configured as ``[[delivery.autoextract.steps]]``; :func:`run_step` runs one:

1. ``cd <workdir> && <command>`` over SSH, as the connection's user (the aleph user), bounded by
   the step's ``timeout_minutes``;
2. checks that every ``expected_outputs`` pattern matches at least one regular file under
   ``output_dir`` (listed recursively over SFTP);
3. downloads each match, one at a time, and stages it at
   ``<run>/autoextract/<step>/<path relative to output_dir>`` in the artifact store;
4. commits the stage's manifest last, with the command, its exit status, duration, the tails of
   its output and each output's path, size and sha256.

**A step that succeeded never runs again.** Its exit 0 is recorded at once
(``autoextract/<step>/_COMMAND.json``: exit status, the server's time when it started, the tails
of its output); a retry after that only stages the outputs again, and a retry after the commit
returns the committed result: the extract can run for hours and the transfer sends the delivery
to Ex Libris. Only a retry of a step whose command did not succeed runs it again.

**Time limit on the server.** The command runs under GNU ``timeout`` when the server has it
(``timeout_minutes``, then SIGTERM, then SIGKILL a minute later), so a step that overruns stops
on the Aleph server instead of running on beside its retry; exit 124 or 137 after the limit is a
permanent failure ("raise timeout_minutes"). Without ``timeout`` on the server the command runs
as it is; the client gives up two minutes after the limit either way.

**Only this run's outputs.** A file older than the step's start (the server's own clock, read
just before the command) is a leftover of an earlier run: it is not staged, and a pattern that
only such files match is missing.

**Which failures are retried.** A non-zero exit (:class:`AutoExtractStepFailed`) or a missing
output (:class:`AutoExtractOutputMissing`) is permanent: the message (task log and failure alert)
names the step and gives the tail of AutoExtract's own output, the operator fixes the cause and
clears the task. A timeout or a lost connection (:class:`AutoExtractInterrupted`) is retried;
without a pty the command may still be running on the server, which the message says.

**Pattern matching.** A pattern matches a file's path relative to ``output_dir`` when both have
the same number of ``/``-separated segments and each segment matches by ``fnmatch`` rules
(``pathlib.PurePosixPath.match`` with the segment count checked): ``*``, ``?`` and ``[...]`` stay
within one directory level, matching is case-sensitive, ``**`` is not recursive. So
``extract/*.mrc`` matches ``extract/bibs.mrc`` but neither ``extract/old/bibs.mrc`` nor
``x/extract/bibs.mrc``. Only regular files count; symbolic links are not followed.
"""

from __future__ import annotations

import json
import logging
import selectors
import shlex
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

import paramiko

from aleph2alma.errors import ConfigError, PermanentError
from aleph2alma.settings import AutoExtractSettings, AutoExtractStep
from aleph2alma.storage import MANIFEST_NAME, ArtifactStore, RunScope, StoredFile

log = logging.getLogger(__name__)

STAGE = "autoextract"
TAIL_LINES = 20
"""Lines of stdout and stderr kept in a failure message and in the manifest."""
TAIL_BYTES = 64 * 1024
"""Bytes of each output stream :class:`ParamikoShell` keeps (the rest is only logged)."""
LISTED_FILES = 20
"""Files named when an expected output is missing."""
COMMAND_DONE = "_COMMAND.json"
"""Recorded under the stage's prefix once the command exited 0 (see the module docstring)."""
KILL_AFTER_SECONDS = 60
CLIENT_GRACE_SECONDS = 120.0
TIMED_OUT = frozenset({124, 137})  # GNU timeout: 124 after SIGTERM worked, 128+9 after SIGKILL


class AutoExtractStepFailed(PermanentError):
    """The step's command exited non-zero: AutoExtract said why in its output's tail."""


class AutoExtractOutputMissing(PermanentError):
    """The command succeeded but an expected output is not under output_dir."""


class AutoExtractInterrupted(ConnectionError):
    """The command timed out or the connection was lost: worth a retry."""


class RemoteCommandTimeout(TimeoutError):
    """A remote command did not finish in time (raised by a :class:`RemoteShell`)."""


@dataclass(frozen=True)
class CommandResult:
    """How a remote command ended: exit status and (the tails of) its stdout and stderr."""

    exit_status: int
    stdout: str
    stderr: str


class RemoteEntry(Protocol):
    """One entry of an SFTP directory listing (paramiko's ``SFTPAttributes``)."""

    @property
    def filename(self) -> str: ...
    @property
    def st_mode(self) -> int | None: ...
    @property
    def st_size(self) -> int | None: ...
    @property
    def st_mtime(self) -> int | float | None: ...


class RemoteFiles(Protocol):
    """The part of paramiko's ``SFTPClient`` used here."""

    def listdir_attr(self, path: str = ".") -> Sequence[RemoteEntry]: ...
    def getfo(self, remotepath: str, fl: IO[bytes]) -> int: ...


class RemoteShell(Protocol):
    """A login on the Aleph server: commands, and SFTP on the same connection."""

    def run(self, command: str, timeout: float) -> CommandResult:
        """Run ``command``; RemoteCommandTimeout after ``timeout`` s, ConnectionError if the link fails."""
        ...

    def sftp(self) -> RemoteFiles: ...
    def close(self) -> None: ...


@dataclass
class StepResult:
    """A committed AutoExtract step: what ran, how it ended, what it produced and the manifest URI."""

    step: str
    command: str
    exit_status: int
    outputs: list[dict[str, Any]] = field(default_factory=list)  # path, key, bytes, sha256, modified
    manifest: str = ""

    def to_dict(self) -> dict[str, Any]:
        """For XCom (references and counts only)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepResult:
        return cls(
            data["step"],
            data["command"],
            int(data["exit_status"]),
            list(data.get("outputs", [])),
            data.get("manifest", ""),
        )


# --- the shell on a paramiko connection ------------------------------------------------------


class _Tail:
    """Keeps the last ``limit`` bytes of a stream and logs it line by line as it arrives."""

    def __init__(self, limit: int, level: int) -> None:
        self.limit = limit
        self.level = level
        self.data = bytearray()
        self.partial = b""

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        del self.data[: -self.limit]
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            log.log(self.level, "%s", line.decode("utf-8", "replace").rstrip("\r"))

    def text(self) -> str:
        if self.partial:
            log.log(self.level, "%s", self.partial.decode("utf-8", "replace"))
            self.partial = b""
        return self.data.decode("utf-8", "replace")


class ParamikoShell:
    """:class:`RemoteShell` on a connected paramiko ``SSHClient`` (``wiring.aleph_shell`` builds it).

    ``timeout`` of :meth:`run` bounds the command's whole run, not the silence between outputs;
    ``io_timeout`` bounds opening a channel and every SFTP read. The command's output goes to the
    log as it arrives; only the last :data:`TAIL_BYTES` of each stream are kept.
    """

    def __init__(self, client: paramiko.SSHClient, io_timeout: float) -> None:
        self.client = client
        self.io_timeout = io_timeout
        self._sftp: Any = None

    def run(self, command: str, timeout: float) -> CommandResult:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionError("the SSH connection is closed")
        try:
            channel = transport.open_session(timeout=self.io_timeout)
            channel.exec_command(command)
            channel.shutdown_write()
        except paramiko.SSHException as exc:
            raise ConnectionError(f"cannot start the command over SSH: {exc}") from exc
        try:
            return self._wait(channel, timeout)
        finally:
            channel.close()

    def _wait(self, channel: paramiko.Channel, timeout: float) -> CommandResult:
        deadline = time.monotonic() + timeout
        out, err = _Tail(TAIL_BYTES, logging.INFO), _Tail(TAIL_BYTES, logging.WARNING)
        with selectors.DefaultSelector() as selector:
            selector.register(channel, selectors.EVENT_READ)
            while True:
                while channel.recv_ready():
                    out.feed(channel.recv(1 << 16))
                while channel.recv_stderr_ready():
                    err.feed(channel.recv_stderr(1 << 16))
                if channel.exit_status_ready() and not (channel.recv_ready() or channel.recv_stderr_ready()):
                    break
                if channel.closed and not channel.exit_status_ready():
                    raise ConnectionError("the SSH channel closed before the command ended")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RemoteCommandTimeout(f"no exit status after {timeout:g} s")
                selector.select(min(remaining, 1.0))
        status = channel.recv_exit_status()
        if status < 0:  # an exit signal, or the server closed without saying
            raise ConnectionError("the command ended without an exit status (killed by a signal?)")
        return CommandResult(status, out.text(), err.text())

    def sftp(self) -> RemoteFiles:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            self._sftp.get_channel().settimeout(self.io_timeout)
        sftp: RemoteFiles = self._sftp
        return sftp

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()


# --- one step ------------------------------------------------------------------------------


def _step(auto: AutoExtractSettings, name: str) -> AutoExtractStep:
    if (step := auto.step(name)) is not None:
        return step
    configured = ", ".join(s.name for s in auto.steps) or "none"
    raise ConfigError(
        f"AutoExtract step {name!r} is not in [[delivery.autoextract.steps]]; configured: {configured}"
    )


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _failure(step: str, result: CommandResult) -> str:
    parts = [f"AutoExtract step {step} failed with exit status {result.exit_status}"]
    for name, text in (("stderr", result.stderr), ("stdout", result.stdout)):
        tail = _tail(text)
        parts.append(f"last lines of {name}:\n{tail}" if tail else f"{name}: (empty)")
    return "\n".join(parts)


def remote_command(workdir: str, step: AutoExtractStep) -> str:
    """The step's command in ``workdir``, under GNU ``timeout`` when the server has it."""
    limit = step.timeout_minutes * 60
    quoted = shlex.quote(step.command)
    return (
        f"cd {shlex.quote(workdir)} && if command -v timeout >/dev/null 2>&1; "
        f"then timeout -k {KILL_AFTER_SECONDS} {limit} /bin/sh -c {quoted}; else /bin/sh -c {quoted}; fi"
    )


def server_time(shell: RemoteShell) -> float:
    """The Aleph server's clock (epoch seconds): output files are compared with it, not ours."""
    try:
        result = shell.run("date +%s", 60.0)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise AutoExtractInterrupted(
            f"cannot reach the Aleph server over SSH ({type(exc).__name__}: {exc}); nothing was run"
        ) from exc
    try:
        return float(result.stdout.strip())
    except ValueError:
        raise AutoExtractInterrupted(
            f"'date +%s' on the Aleph server answered {result.stdout.strip()[:80]!r} (exit "
            f"{result.exit_status}); cannot tell this run's outputs from earlier ones"
        ) from None


def _run(shell: RemoteShell, step: AutoExtractStep, command: str) -> CommandResult:
    timeout = step.timeout_minutes * 60.0 + KILL_AFTER_SECONDS + CLIENT_GRACE_SECONDS
    try:
        return shell.run(command, timeout)
    except RemoteCommandTimeout as exc:
        raise AutoExtractInterrupted(
            f"AutoExtract step {step.name} timed out ({exc}; timeout_minutes={step.timeout_minutes}): "
            f"{command!r} may still be running on the Aleph server; check there before the retry runs "
            "it again"
        ) from exc
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise AutoExtractInterrupted(
            f"AutoExtract step {step.name}: the SSH connection failed while running {command!r} "
            f"({type(exc).__name__}: {exc}); the command may still be running on the Aleph server"
        ) from exc


def walk_files(sftp: RemoteFiles, root: str) -> Iterator[tuple[str, RemoteEntry]]:
    """Every regular file under ``root`` (recursively; symbolic links not followed), as its path
    relative to ``root`` and its SFTP attributes."""
    pending = [""]
    while pending:
        relative = pending.pop()
        for entry in sorted(sftp.listdir_attr(f"{root.rstrip('/')}/{relative}"), key=lambda e: e.filename):
            path = f"{relative}{entry.filename}"
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                pending.append(path + "/")
            elif stat.S_ISREG(mode):
                yield path, entry


def matches(pattern: str, relative: str) -> bool:
    """Whether ``relative`` matches ``pattern``, segment by segment (see the module docstring)."""
    path, glob = PurePosixPath(relative), PurePosixPath(pattern)
    return len(path.parts) == len(glob.parts) and path.match(pattern)


def _listed(paths: Sequence[str]) -> str:
    there = sorted(paths)
    listed = ", ".join(there[:LISTED_FILES]) or "no files"
    return listed + (f" and {len(there) - LISTED_FILES} more" if len(there) > LISTED_FILES else "")


def find_outputs(
    sftp: RemoteFiles, output_dir: str, patterns: Sequence[str], since: float | None = None
) -> dict[str, RemoteEntry]:
    """The files under ``output_dir`` matching any of ``patterns``, by relative path; every pattern
    must match a file, else :class:`AutoExtractOutputMissing` naming it and what is there. With
    ``since`` (server epoch seconds), files last modified before it are an earlier run's: they
    neither count nor are returned."""
    try:
        files = dict(walk_files(sftp, output_dir))
    except FileNotFoundError as exc:
        raise AutoExtractOutputMissing(
            f"output_dir {output_dir} does not exist on the Aleph server; expected {', '.join(patterns)}"
        ) from exc
    # mtimes are whole seconds on many servers: a file written in the step's first second counts
    fresh = {f: e for f, e in files.items() if since is None or (e.st_mtime or 0) >= int(since)}
    missing = [p for p in patterns if not any(matches(p, f) for f in fresh)]
    if missing:
        stale = [f for f in files if f not in fresh and any(matches(p, f) for p in missing)]
        older = f"; only older than this step: {_listed(stale)}" if stale else ""
        raise AutoExtractOutputMissing(
            f"no file under {output_dir} written by this step matches {', '.join(map(repr, missing))}"
            f"{older}; there: {_listed(list(files))}"
        )
    return {f: entry for f, entry in sorted(fresh.items()) if any(matches(p, f) for p in patterns)}


def _modified(entry: RemoteEntry) -> str:
    if entry.st_mtime is None:
        return ""
    return datetime.fromtimestamp(entry.st_mtime, UTC).isoformat(timespec="seconds")


def _stage(
    store: ArtifactStore, key: str, sftp: RemoteFiles, remote: str, entry: RemoteEntry, tmp: Path, step: str
) -> StoredFile:
    local = tmp / "output"
    try:
        with open(local, "wb") as fh:
            size = sftp.getfo(remote, fh)
        if entry.st_size is not None and size != entry.st_size:
            raise AutoExtractInterrupted(
                f"{remote} was {entry.st_size} bytes when listed and {size} when downloaded: is AutoExtract "
                "still writing it?"
            )
        return store.put_file(key, local, source=step, kind="part")
    finally:
        local.unlink(missing_ok=True)


def _outputs(stored: Sequence[StoredFile], found: Mapping[str, RemoteEntry]) -> list[dict[str, Any]]:
    return [
        {"path": path, "key": f.key, "bytes": f.bytes, "sha256": f.sha256, "modified": _modified(entry)}
        for (path, entry), f in zip(found.items(), stored, strict=True)
    ]


def committed_result(store: ArtifactStore, scope: RunScope, step: str) -> StepResult:
    """The result of a step already committed in this run, read from its manifest."""
    uri = store.uri(scope.prefix(STAGE, step) + MANIFEST_NAME)
    extra = store.manifest(uri).extra
    return StepResult(step, extra["command"], int(extra["exit_status"]), list(extra["outputs"]), uri)


def _command_done(
    store: ArtifactStore,
    scope: RunScope,
    step: AutoExtractStep,
    shell: RemoteShell,
    command: str,
    clock: Callable[[], float],
) -> dict[str, Any]:
    """Run the command unless an earlier try of this task already saw it exit 0; the record of it."""
    key = scope.prefix(STAGE, step.name) + COMMAND_DONE
    if store.exists(key):
        log.info(
            "AutoExtract step %s already exited 0 in an earlier try: staging its outputs only", step.name
        )
        recorded: dict[str, Any] = json.loads(store.get_bytes(key))
        return recorded
    server_started = server_time(shell)
    log.info("AutoExtract step %s: running %s", step.name, command)
    started = clock()
    result = _run(shell, step, command)
    seconds = round(clock() - started, 3)
    if result.exit_status in TIMED_OUT and seconds >= step.timeout_minutes * 60:
        raise AutoExtractStepFailed(
            f"AutoExtract step {step.name} was stopped on the Aleph server after its "
            f"{step.timeout_minutes} minutes (timeout_minutes); raise it if the step needs longer\n"
            + _failure(step.name, result)
        )
    if result.exit_status != 0:
        raise AutoExtractStepFailed(_failure(step.name, result))
    log.info("AutoExtract step %s exited 0 after %.0f s", step.name, seconds)
    record = {
        "command": command,
        "exit_status": 0,
        "seconds": seconds,
        "server_started": server_started,
        "stdout_tail": _tail(result.stdout),
        "stderr_tail": _tail(result.stderr),
    }
    store.put_bytes(key, json.dumps(record, indent=2).encode("utf-8"))
    return record


def run_step(
    store: ArtifactStore,
    scope: RunScope,
    auto: AutoExtractSettings,
    step_name: str,
    shell: RemoteShell,
    tmp_dir: Path | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> StepResult:
    """Run the AutoExtract step ``step_name`` on the Aleph server and stage its outputs (see the
    module docstring); a step already committed in ``scope`` is returned without running it.

    ``tmp_dir`` holds one downloaded output at a time. ``clock`` times the command (seconds in
    the manifest). Raises ConfigError for a step or directories not configured,
    AutoExtractStepFailed, AutoExtractOutputMissing (permanent) or AutoExtractInterrupted (retried).
    """
    step = _step(auto, step_name)
    if not (auto.workdir and auto.output_dir):
        raise ConfigError(
            "[delivery.autoextract] needs workdir and output_dir (absolute paths on the Aleph server)"
        )
    if store.stage_committed(scope, STAGE, step.name):
        log.info("AutoExtract step %s is already committed in this run: not running it again", step.name)
        return committed_result(store, scope, step.name)

    command = remote_command(auto.workdir, step)
    done = _command_done(store, scope, step, shell, command, clock)
    result = CommandResult(done["exit_status"], done["stdout_tail"], done["stderr_tail"])
    seconds = done["seconds"]

    sftp = shell.sftp()
    found = find_outputs(sftp, auto.output_dir, step.expected_outputs, since=done["server_started"])
    if MANIFEST_NAME in found:
        raise AutoExtractOutputMissing(
            f"{auto.output_dir}/{MANIFEST_NAME} matches {step.name}'s expected outputs, but that name is "
            "the stage's own manifest; narrow the pattern"
        )
    prefix = scope.prefix(STAGE, step.name)
    with tempfile.TemporaryDirectory(prefix="aleph2alma-autoextract-", dir=tmp_dir) as work:
        stored = [
            _stage(
                store,
                prefix + path,
                sftp,
                f"{auto.output_dir.rstrip('/')}/{path}",
                entry,
                Path(work),
                step.name,
            )
            for path, entry in found.items()
        ]
    outputs = _outputs(stored, found)
    uri = store.commit(
        scope,
        STAGE,
        step.name,
        stored,
        extra={
            "command": command,
            "exit_status": result.exit_status,
            "seconds": seconds,
            "server_started": done["server_started"],
            "output_dir": auto.output_dir,
            "expected_outputs": list(step.expected_outputs),
            "stdout_tail": _tail(result.stdout),
            "stderr_tail": _tail(result.stderr),
            "outputs": outputs,
        },
    )
    return StepResult(step.name, command, result.exit_status, outputs, uri)


def staged_outputs(store: ArtifactStore, scope: RunScope, auto: AutoExtractSettings) -> list[dict[str, Any]]:
    """Every committed step's outputs in step order (step, path, key, uri, bytes, sha256, modified),
    for the approval gate and the run summary; steps not committed have none."""
    rows = []
    for step in auto.steps:
        if store.stage_committed(scope, STAGE, step.name):
            for output in committed_result(store, scope, step.name).outputs:
                rows.append({"step": step.name, **output, "uri": store.uri(output["key"])})
    return rows
