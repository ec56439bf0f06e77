"""Delivering the package: over SFTP to the migration file-transfer server, and/or to S3.

A target is a URI (:func:`parse_target`):

- ``sftp://<Airflow connection id>/<remote dir>``: the migration file-transfer (MFT) server;
  the caller supplies ``sftp_client(conn_id)`` (``wiring.sftp_client``: ``SFTPHook.get_conn()``);
- ``s3://<bucket>/<prefix>``: an S3 prefix, reached with the caller's ``s3_client()``.

**SFTP, publish protocol.** The package is uploaded as ``<name>.zip.part``, verified on the far
side, then renamed to ``<name>.zip`` with the plain SFTP rename, which never replaces an existing
file: whoever picks files up on the MFT server only ever sees complete, verified packages. A final
file already there with the same sha256 means "already delivered" (idempotent success, nothing is
sent); a different one is a :class:`DeliveryError` — nothing is ever overwritten silently. A
connection that drops during the rename leaves the client unsure whether it happened; the next
attempt finds either the final file (verified, reported ``already``) or the complete ``.part`` (its
tail re-sent, verified, renamed).

**SFTP, verification.** Size by ``stat``, then the sha256 of the far side, from the cheapest source
that works: (1) the SFTP ``check-file`` extension (draft-ietf-secsh-filexfer-extensions; rare), (2)
``sha256sum`` over an SSH exec channel (servers with a shell; chrooted MFT servers usually refuse),
(3) otherwise **reading the file back over SFTP and hashing it**. Reading back costs a full download
of the package — as many bytes again as the upload and, with paramiko, about as long (200 MiB on
localhost: upload 6-11 s, read-back 9 s, a remote ``sha256sum`` 0.5 s); for a package of tens of GB
over a long link, budget roughly twice the upload time in the task's timeout. A fast digest that
disagrees is confirmed by reading back before anything is called a mismatch (a shell may see other
paths than a chrooted SFTP session).

**SFTP, retries.** Transient failures (connection reset, EOF, a dropped SSH transport, timeouts)
are retried with exponential backoff on a fresh connection, resuming the ``.part``. Writes are
pipelined (essential over a long link), and servers may apply them out of order, so when a
connection drops the last bytes of the ``.part`` can hold holes: the upload resumes
``resume_margin`` bytes (default 64 MiB, well above an SSH channel window) before the ``.part``'s
size, and the full checksum still decides; a resumed file that fails it is uploaded once more
from the start. A verified mismatch, a conflicting final file or a refusal (permissions, missing
directory, failed login) is a permanent :class:`DeliveryError`; transient failures past the last
attempt raise :class:`TransferInterrupted`, which the task's own retries may take up later.

**SFTP, timeouts and connections.** Every wait for the server is bounded: connecting, the banner
and authentication by the connection's own timeouts (``wiring.sftp_client``), each read or write on
the SFTP channel by its I/O timeout — a client that comes without one gets ``io_timeout`` (paramiko
``Channel.settimeout``: a server that stops answering raises ``TimeoutError``, a transient failure
retried on a fresh connection). Connections :func:`deliver_sftp` opens are closed with their SSH
transport after each attempt, whatever its outcome.

**S3.** A server-side managed copy (multipart for large objects) when source and destination share
an endpoint, else a download (sha256-checked) and upload through the worker. The object carries the
sha256 as metadata and is encrypted at rest (SSE-S3); verification is ``head_object`` size + that
metadata, or (``reread=True``) streaming the object back and hashing it. Same idempotence: an equal
object is success, a different one an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import posixpath
import re
import shlex
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paramiko
from botocore.exceptions import ClientError

from aleph2alma.delivery.package import PackageResult
from aleph2alma.errors import PermanentError
from aleph2alma.sftp_session import close_sftp
from aleph2alma.storage import ArtifactStore, S3UriError, parse_s3_uri, sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PART_SUFFIX = ".part"
ATTEMPTS = 4
BACKOFF_SECONDS = 2.0
EXEC_OPEN_TIMEOUT = 30.0
IO_TIMEOUT = 300.0  # seconds one wait for the server may last, for a client that comes without a timeout
RESUME_MARGIN = 64 << 20  # bytes re-sent before the .part's size when resuming
READ_AHEAD_REQUESTS = 128  # 32 KiB SFTP reads in flight while reading back (4 MiB)
HASH_RATE = 50 << 20  # bytes/s assumed for a remote sha256sum, to size its timeout
_SHA256SUM_LINE = re.compile(rb"^([0-9a-fA-F]{64})[ \t]")

RemoteHash = Callable[[Any, str], str | None]
"""``(sftp client, absolute remote path) -> hex sha256``, or None when the server cannot tell."""


class DeliveryError(PermanentError):
    """Permanent: the far side does not match, a different file is in the way, or the server refuses."""


class DeliveryTargetError(PermanentError, ValueError):
    """A delivery target URI is malformed or of an unsupported kind."""


class TransferInterrupted(ConnectionError):
    """Transient failures outlasted the retries; retrying the task later may succeed."""


@dataclass
class Delivered:
    """One package delivered to one target, verified; ``method`` says how, ``already`` if it was there."""

    target: str
    remote_path: str
    bytes: int
    sha256: str
    verified: bool
    method: str = ""
    already: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    uri: str
    scheme: str  # sftp | s3
    location: str  # Airflow connection id, or bucket
    path: str  # absolute remote directory, or key prefix


def parse_target(uri: str) -> Target:
    """``sftp://<conn id>/<dir>`` or ``s3://<bucket>/<prefix>``; anything else is a DeliveryTargetError."""
    accepted = "accepted: sftp://<connection id>/<remote dir>, s3://<bucket>/<prefix>"
    parsed = urlparse(uri)
    if parsed.scheme == "sftp":
        if not parsed.netloc or parsed.query or parsed.fragment:
            raise DeliveryTargetError(
                f"bad delivery target {uri!r}: no connection id or extra parts; {accepted}"
            )
        return Target(uri, "sftp", parsed.netloc, parsed.path or "/")
    if parsed.scheme == "s3":
        try:
            bucket, prefix = parse_s3_uri(uri if parsed.path else uri + "/")
        except S3UriError as exc:
            raise DeliveryTargetError(f"bad delivery target {uri!r}: {exc}; {accepted}") from exc
        return Target(uri, "s3", bucket, prefix.strip("/"))
    raise DeliveryTargetError(f"unsupported delivery target {uri!r}; {accepted}")


# --- transient or permanent ----------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """A failure of the connection, not of the request: worth a retry on a fresh connection."""
    if isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException):
        return False
    if isinstance(exc, EOFError | ConnectionError | TimeoutError | paramiko.SSHException):
        return True
    # paramiko raises a bare OSError("Socket is closed") once its transport has died
    return isinstance(exc, OSError) and exc.errno is None and "closed" in str(exc).lower()


# --- remote checksums ------------------------------------------------------------------------


def check_file_sha256(sftp: Any, path: str) -> str | None:
    """The SFTP ``check-file`` extension, if the server implements it with sha256."""
    with sftp.open(path, "rb") as fh:
        try:
            raw = fh.check("sha256", 0, 0, 0)
        except OSError as exc:
            if is_transient(exc):
                raise
            return None  # unsupported request or algorithm
    return bytes(raw).hex() if len(raw) == 32 else None


def exec_sha256sum(sftp: Any, path: str) -> str | None:
    """``sha256sum`` run on the server over an exec channel of the same SSH connection, if allowed."""
    channel = sftp.get_channel() if hasattr(sftp, "get_channel") else None
    transport = channel.get_transport() if channel is not None else None
    if transport is None:
        return None
    size = int(sftp.stat(path).st_size)
    try:
        session = transport.open_session(timeout=EXEC_OPEN_TIMEOUT)
    except paramiko.ChannelException:
        return None  # the server refuses session channels
    try:
        session.settimeout(EXEC_OPEN_TIMEOUT + size / HASH_RATE)
        session.exec_command(f"sha256sum -- {shlex.quote(path)}")
        out = session.makefile("rb").read(4096)
        status = session.recv_exit_status()
    except (paramiko.SSHException, TimeoutError) as exc:
        if isinstance(exc, paramiko.SSHException) and not transport.is_active():
            raise
        return None  # exec refused ("Channel closed") or too slow: fall back
    finally:
        session.close()
    match = _SHA256SUM_LINE.match(out)
    return match[1].decode().lower() if status == 0 and match else None


def read_back_sha256(sftp: Any, path: str) -> str:
    """Read the file back over SFTP and hash it: always possible, costs one full download."""
    digest = hashlib.sha256()
    size = int(sftp.stat(path).st_size)
    with sftp.open(path, "rb", bufsize=CHUNK) as fh:
        fh.prefetch(size, READ_AHEAD_REQUESTS)  # pipelined reads, a bounded number in flight
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def no_remote_hash(sftp: Any, path: str) -> None:
    """Pass as ``verify`` to always read back."""
    return None


FAST_HASHES: tuple[tuple[str, RemoteHash], ...] = (
    ("check-file", check_file_sha256),
    ("sha256sum", exec_sha256sum),
)


def remote_sha256(sftp: Any, path: str, expected: str, verify: RemoteHash | None = None) -> tuple[str, str]:
    """The far side's sha256 and how it was obtained (see the module doc for the order)."""
    fast: Sequence[tuple[str, RemoteHash]] = (
        FAST_HASHES if verify is None else ((getattr(verify, "__name__", "custom"), verify),)
    )
    for method, hasher in fast:
        digest = hasher(sftp, path)
        if digest is None:
            continue
        if digest == expected:
            return digest, method
        log.warning(
            "%s of %s gave %s, expected %s: confirming by reading back", method, path, digest, expected
        )
        break
    return read_back_sha256(sftp, path), "read-back"


# --- SFTP --------------------------------------------------------------------------------------


def _stat(sftp: Any, path: str) -> Any | None:
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if is_transient(exc) or exc.errno is not None:
            raise
        return None  # some servers answer a missing file with a bare failure


def _upload(sftp: Any, local: Path, remote: str, offset: int) -> None:
    # unbuffered: our 1 MiB blocks go out as pipelined 32 KiB requests at once, and a handle whose
    # connection died has no buffer left for paramiko's __del__ to flush into a closed socket
    with open(local, "rb") as src, sftp.open(remote, "r+b" if offset else "wb", bufsize=0) as dst:
        dst.set_pipelined(True)
        if offset:
            src.seek(offset)
            dst.seek(offset)
        while block := src.read(CHUNK):
            dst.write(block)


@dataclass
class _Sftp:
    """One delivery attempt over one connection."""

    sftp: Any
    local: Path
    size: int
    sha256: str
    remote_dir: str
    target: str
    verify: RemoteHash | None
    resume_margin: int

    def run(self) -> Delivered:
        base = self._remote_dir()
        final = posixpath.join(base, self.local.name)
        part = final + PART_SUFFIX
        if _stat(self.sftp, final) is not None:
            return self._already(final)
        existing = _stat(self.sftp, part)
        offset = 0
        if existing is not None and existing.st_size <= self.size:
            offset = max(0, int(existing.st_size) - self.resume_margin)
        if offset:
            log.info("resuming %s at byte %d of %d", part, offset, self.size)
        _upload(self.sftp, self.local, part, offset)
        problem, method = self._check(part)
        if problem and offset:
            log.warning("resumed %s did not verify (%s): uploading it whole", part, problem)
            _upload(self.sftp, self.local, part, 0)
            problem, method = self._check(part)
        if problem:
            with contextlib.suppress(OSError):
                self.sftp.remove(part)
            raise DeliveryError(
                f"{self.target}: {part} does not match {self.local.name} after upload "
                f"({problem}); removed it, nothing published"
            )
        try:
            self.sftp.rename(part, final)  # plain SFTP rename: fails rather than replace an existing file
        except OSError as exc:
            if is_transient(exc) or _stat(self.sftp, final) is None:
                raise
            delivered = self._already(final)  # another attempt published it meanwhile
            self.sftp.remove(part)
            return delivered
        log.info("delivered %s (%d bytes, sha256 %s, verified by %s)", final, self.size, self.sha256, method)
        return Delivered(self.target, final, self.size, self.sha256, True, method)

    def _remote_dir(self) -> str:
        attrs = _stat(self.sftp, self.remote_dir)
        if attrs is None or not stat.S_ISDIR(attrs.st_mode or 0):
            raise DeliveryError(
                f"{self.target}: remote directory {self.remote_dir} does not exist on the server"
            )
        return str(self.sftp.normalize(self.remote_dir))

    def _check(self, path: str) -> tuple[str, str]:
        """``("", method)`` when ``path`` is the package, else what differs."""
        size = int(self.sftp.stat(path).st_size)
        if size != self.size:
            return f"{size} bytes on the server, {self.size} sent", "stat"
        digest, method = remote_sha256(self.sftp, path, self.sha256, self.verify)
        if digest != self.sha256:
            return f"sha256 {digest} by {method}, expected {self.sha256}", method
        return "", method

    def _already(self, final: str) -> Delivered:
        problem, method = self._check(final)
        if problem:
            raise DeliveryError(
                f"{self.target}: a different {posixpath.basename(final)} is already on the server "
                f"({problem}); refusing to overwrite it — remove or rename it there if obsolete"
            )
        log.info("%s is already delivered (verified by %s)", final, method)
        return Delivered(self.target, final, self.size, self.sha256, True, method, already=True)


def _bounded(sftp: Any, io_timeout: float) -> Any:
    """``sftp`` with every wait on its channel bounded: ``io_timeout`` unless it has a timeout already."""
    channel = sftp.get_channel() if hasattr(sftp, "get_channel") else None
    if channel is not None and channel.gettimeout() is None:
        channel.settimeout(io_timeout)
    return sftp


def deliver_sftp(
    local: Path,
    sftp: Any,
    remote_dir: str,
    *,
    verify: RemoteHash | None = None,
    target: str | None = None,
    attempts: int = ATTEMPTS,
    backoff: float = BACKOFF_SECONDS,
    resume_margin: int = RESUME_MARGIN,
    io_timeout: float = IO_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivered:
    """Publish ``local`` as ``<remote_dir>/<its name>``: upload ``.part``, verify, rename (see module doc).

    ``sftp`` is a paramiko-compatible ``SFTPClient``, or a zero-argument callable returning a fresh
    one — needed to reconnect between retries; clients it returns are closed (with their SSH
    transport) after use, a client passed in is left open. ``verify`` replaces the fast remote
    checksums (``check-file``, ``sha256sum``); :func:`no_remote_hash` forces reading back.
    ``io_timeout`` bounds each wait for the server on a client whose channel has no timeout set.
    """
    local = Path(local)
    size, digest = local.stat().st_size, sha256_file(local)
    target = target or f"sftp:{remote_dir}"
    owned = callable(sftp) and not hasattr(sftp, "stat")
    connect: Callable[[], Any] = sftp if owned else (lambda: sftp)
    for attempt in range(1, attempts + 1):
        client = None
        try:
            client = _bounded(connect(), io_timeout)
            return _Sftp(client, local, size, digest, remote_dir, target, verify, resume_margin).run()
        except DeliveryError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if not is_transient(exc):
                raise DeliveryError(f"{target}: the server refused delivering {local.name}: {exc!r}") from exc
            if attempt == attempts:
                raise TransferInterrupted(
                    f"{target}: delivering {local.name} failed {attempts} times, last: {exc!r}"
                ) from exc
            delay = backoff * 2 ** (attempt - 1)
            log.warning(
                "%s: attempt %d of %d failed (%r); retrying in %.1fs", target, attempt, attempts, exc, delay
            )
            sleep(delay)
        finally:
            if owned and client is not None:
                close_sftp(client)
    raise AssertionError("unreachable: attempts must be at least 1")


# --- S3 -----------------------------------------------------------------------------------------


def _head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return dict(client.head_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _s3_sha256(client: Any, bucket: str, key: str) -> str:
    digest = hashlib.sha256()
    for block in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(CHUNK):
        digest.update(block)
    return digest.hexdigest()


def _same_endpoint(a: Any, b: Any) -> bool:
    return a is b or getattr(a.meta, "endpoint_url", None) == getattr(b.meta, "endpoint_url", None)


def deliver_s3(
    store: ArtifactStore,
    key: str,
    dest_client: Any,
    dest_bucket: str,
    dest_prefix: str,
    *,
    sha256: str | None = None,
    reread: bool = False,
    server_side: bool | None = None,
    target: str | None = None,
) -> Delivered:
    """Copy the stored object ``key`` to ``s3://<dest_bucket>/<dest_prefix>/<its name>`` and verify it.

    ``sha256`` defaults to the source object's ``sha256`` metadata. ``server_side`` None copies
    server-side when both clients share an endpoint (and falls back to streaming on AccessDenied).
    """
    source = _head(store.client, store.bucket, key)
    if source is None:
        raise DeliveryError(f"{store.uri(key)} does not exist: nothing to deliver")
    size = int(source["ContentLength"])
    digest = sha256 or source.get("Metadata", {}).get("sha256")
    if not digest:
        raise DeliveryError(f"{store.uri(key)} carries no sha256 to verify against; pass sha256=")
    prefix = dest_prefix.strip("/")
    dest_key = f"{prefix}/{posixpath.basename(key)}" if prefix else posixpath.basename(key)
    target = target or f"s3://{dest_bucket}/{prefix}"
    where = f"s3://{dest_bucket}/{dest_key}"

    def check() -> tuple[str, str]:
        head = _head(dest_client, dest_bucket, dest_key)
        assert head is not None
        if int(head["ContentLength"]) != size:
            return f"{head['ContentLength']} bytes, expected {size}", "head"
        meta = head.get("Metadata", {}).get("sha256")
        if reread or not meta:
            found, method = _s3_sha256(dest_client, dest_bucket, dest_key), "reread"
        else:
            found, method = meta, "head+metadata"
        return ("" if found == digest else f"sha256 {found} by {method}, expected {digest}"), method

    if _head(dest_client, dest_bucket, dest_key) is not None:
        problem, method = check()
        if problem:
            raise DeliveryError(
                f"{where}: a different object is already there ({problem}); refusing to overwrite"
            )
        return Delivered(target, dest_key, size, digest, True, method, already=True)

    # SSE-S3, never our KMS key: the destination bucket is usually another account's (Ex Libris'),
    # whose principals could not decrypt with a key of ours.
    extra = {
        "Metadata": {"sha256": digest},
        "ContentType": "application/zip",
        "ServerSideEncryption": "AES256",
    }
    copied = False
    if server_side or (server_side is None and _same_endpoint(store.client, dest_client)):
        try:
            dest_client.copy(
                {"Bucket": store.bucket, "Key": key},
                dest_bucket,
                dest_key,
                ExtraArgs={**extra, "MetadataDirective": "REPLACE"},
                SourceClient=store.client,
            )
            copied = True
        except ClientError as exc:
            if server_side or exc.response.get("Error", {}).get("Code") != "AccessDenied":
                raise
            log.warning("server-side copy to %s denied; streaming through the worker", where)
    if not copied:
        with tempfile.TemporaryDirectory(prefix="aleph2alma-deliver-") as tmp:
            local = store.download(key, Path(tmp) / posixpath.basename(key), digest)
            dest_client.upload_file(str(local), dest_bucket, dest_key, ExtraArgs=extra)
    problem, method = check()
    if problem:
        raise DeliveryError(f"{where}: does not match {store.uri(key)} after the copy ({problem})")
    log.info("delivered %s (%d bytes, sha256 %s, verified by %s)", where, size, digest, method)
    return Delivered(target, dest_key, size, digest, True, method)


# --- all targets --------------------------------------------------------------------------------


def deliver(
    store: ArtifactStore,
    package: PackageResult,
    targets: list[str],
    *,
    sftp_client: Callable[[str], Any],
    s3_client: Callable[[], Any],
    verify: RemoteHash | None = None,
    s3_reread: bool = False,
    tmp_dir: Path | None = None,
) -> list[Delivered]:
    """Deliver the package to every target, in order; all URIs are checked before anything is sent.

    For SFTP targets the package is downloaded once to ``tmp_dir`` (room for the whole package;
    checked against its sha256) and each attempt opens its own connection through
    ``sftp_client(conn_id)``. Returns one :class:`Delivered` per target, in the order given.
    """
    parsed = [parse_target(t) for t in targets]
    if not parsed:
        raise DeliveryTargetError(
            "no delivery target given; accepted: sftp://<connection id>/<remote dir>, s3://<bucket>/<prefix>"
        )
    results: list[Delivered] = []
    with tempfile.TemporaryDirectory(prefix="aleph2alma-deliver-", dir=tmp_dir) as work:
        local: Path | None = None
        for t in parsed:
            if t.scheme == "sftp":
                if local is None:
                    local = store.download(package.key, Path(work) / package.name, package.sha256)
                results.append(
                    deliver_sftp(
                        local, functools.partial(sftp_client, t.location), t.path, verify=verify, target=t.uri
                    )
                )
            else:
                results.append(
                    deliver_s3(
                        store,
                        package.key,
                        s3_client(),
                        t.location,
                        t.path,
                        sha256=package.sha256,
                        reread=s3_reread,
                        target=t.uri,
                    )
                )
    return results
