"""Step 2: upload the trained model to OSS (or copy it inside OSS), skipping what is already there.

The step is a thin Prefect task over pure helpers and a small executor:

- **plan** (pure): which files, which object keys. A local model directory ``<base>/<version>/...`` becomes keys
  ``names.model_oss_prefix + <relative path>``; a ``source_uri: oss://bucket/prefix`` becomes the same keys, copied
  from the source objects.
- **decide** (pure): a file is skipped when the object exists with the same size and the same CRC-64/ECMA
  (``x-oss-hash-crc64ecma``, which OSS computes on every write) as the local file (or the source object).
- **execute**: small files go up with ``put_object``; files of at least ``model.multipart_threshold`` bytes with
  ``oss2.resumable_upload`` (parts of ``model.upload_part_size`` bytes, ``model.upload_threads`` in parallel,
  a checkpoint in ``checkpoint_dir`` so that an interrupted upload resumes where it stopped). Copies use
  ``copy_object``, or ``upload_part_copy`` for big objects. Files run in parallel on a bounded thread pool.
  CRC checking stays on (oss2 ``enable_crc``): every put, part and completed object is checked against the CRC OSS
  returns.

Failures: network errors, 5xx, throttling and CRC mismatches are retried with exponential backoff (tenacity); any
other error, or one that persists, fails the task with :class:`UploadError`, whose message names the file, the
object key and the OSS error code, and never carries the AccessKey secret.

``bytes_sent`` in the report counts the payload this run had to transfer: a resumed multipart upload does not count
the parts already on OSS when it started; a skipped file counts zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import oss2
from oss2.exceptions import InconsistentError, NotFound, OssError, RequestError, ServerError
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from blocks.alibaba import AlibabaCloudCredentials
from flows.spec import DeploySpec, check_model_layout

log = logging.getLogger("elastic_inference.model")

ARTIFACT_KEY = "model-upload"
DEFAULT_CHECKPOINT_DIR = Path("~/.cache/elastic-inference/oss-checkpoints")
DEFAULT_FILE_WORKERS = 4
DEFAULT_ATTEMPTS = 5
CRC_CHUNK = 4 * 1024 * 1024
OSS_MAX_PARTS = 10000
# Codes OSS answers when it is busy; retried like 5xx (OSS error code reference).
TRANSIENT_CODES = {"Throttling", "TooManyRequests", "RequestTimeout", "ServiceUnavailable", "InternalError"}


# --- data shapes --------------------------------------------------------------------------------------------------
class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlannedFile(_Shape):
    """One object to make: from a local file (``path``) or from a source object (``source_key``)."""

    key: str = Field(description="Destination object key")
    size: int = Field(ge=0, description="Bytes")
    path: Path | None = Field(default=None, description="Local file (local uploads)")
    source_key: str | None = Field(default=None, description="Source object key (copies inside OSS)")
    source_crc64: int | None = Field(default=None, description="Source object's CRC-64 (copies)")


class UploadPlan(_Shape):
    """What the step will make in the destination bucket."""

    bucket: str
    prefix: str
    mode: Literal["upload", "copy"]
    source_bucket: str | None = None
    source_prefix: str | None = None
    versions: list[int]
    files: list[PlannedFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class RemoteObject(_Shape):
    size: int
    crc64: int | None


class FileResult(_Shape):
    key: str
    size: int
    action: Literal["uploaded", "copied", "skipped"]
    method: Literal["put", "multipart", "copy", "multipart-copy", "none"]
    bytes_sent: int = Field(description="Payload bytes this run transferred for the file")
    crc64: int | None = Field(default=None, description="CRC-64/ECMA of the object")
    seconds: float


class UploadReport(_Shape):
    bucket: str
    prefix: str
    mode: Literal["upload", "copy"]
    files_total: int
    files_uploaded: int
    files_skipped: int
    bytes_total: int
    bytes_sent: int
    bytes_skipped: int
    seconds: float
    throughput_mb_s: float = Field(description="bytes_sent / seconds in MB/s (10^6 bytes)")
    files: list[FileResult]

    def summary(self) -> str:
        verb = "copied" if self.mode == "copy" else "uploaded"
        return (
            f"model at oss://{self.bucket}/{self.prefix}: {self.files_total} files, {self.files_uploaded} {verb} "
            f"({_mb(self.bytes_sent)}), {self.files_skipped} unchanged and skipped ({_mb(self.bytes_skipped)}) "
            f"in {self.seconds:.2f}s, {self.throughput_mb_s:.1f} MB/s"
        )


class UploadError(RuntimeError):
    """A file could not be uploaded. Carries the file, key and OSS error code; never a secret."""

    def __init__(self, message: str, *, key: str | None = None, code: str | None = None,
                 status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.code = code
        self.status = status
        self.request_id = request_id


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --- pure helpers: keys, plans, decisions -------------------------------------------------------------------------
def object_key(prefix: str, relative: str | PurePosixPath) -> str:
    """``prefix`` (``""`` or ending in ``/``) + the POSIX relative path."""
    rel = str(PurePosixPath(relative))
    if rel.startswith("/") or ".." in PurePosixPath(rel).parts:
        raise ValueError(f"{rel!r} is not a relative path inside the model directory")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix + rel


def parse_oss_uri(uri: str) -> tuple[str, str]:
    """``oss://bucket/some/prefix`` → ``("bucket", "some/prefix/")`` (``""`` for the whole bucket)."""
    if not uri.startswith("oss://"):
        raise ValueError(f"{uri!r} is not an oss://bucket/prefix URI")
    bucket, _, prefix = uri[len("oss://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


def plan_local_upload(base_dir: Path, bucket: str, prefix: str, wanted: list[int] | None = None) -> UploadPlan:
    """Check TF Serving's layout and list every regular file under ``base_dir`` with its object key."""
    base = Path(base_dir)
    versions = check_model_layout(base, wanted)
    files: list[PlannedFile] = []
    for root, dirs, names in os.walk(base):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if not path.is_file():
                continue
            rel = path.relative_to(base).as_posix()
            files.append(PlannedFile(key=object_key(prefix, rel), size=path.stat().st_size, path=path))
    return UploadPlan(bucket=bucket, prefix=prefix, mode="upload", versions=versions, files=files)


def check_remote_layout(relative_keys: Iterable[str], where: str, wanted: list[int] | None = None) -> list[int]:
    """:func:`flows.spec.check_model_layout` for object keys relative to the model base prefix."""
    by_version: dict[int, set[str]] = {}
    for rel in relative_keys:
        top, _, rest = rel.partition("/")
        if top.isdigit() and rest:
            by_version.setdefault(int(top), set()).add(rest)
    if not by_version:
        raise ValueError(
            f"{where} holds no version directory: TF Serving expects <base>/<version>/... with a numeric version"
        )
    for v, names in sorted(by_version.items()):
        if not names & {"saved_model.pb", "saved_model.pbtxt", "model.json"}:
            raise ValueError(
                f"{where}{v}/ holds neither a SavedModel (saved_model.pb) nor a demo model (model.json)"
            )
    versions = sorted(by_version)
    if wanted and (missing := [v for v in wanted if v not in versions]):
        raise ValueError(f"version policy names versions {missing} that are not in {where} (found {versions})")
    return versions


def plan_oss_copy(
    listing: Iterable[tuple[str, int]],
    source_bucket: str,
    source_prefix: str,
    bucket: str,
    prefix: str,
    wanted: list[int] | None = None,
) -> UploadPlan:
    """Map source objects ``(key, size)`` under ``source_prefix`` to destination keys under ``prefix``."""
    items = [(k, s) for k, s in listing if k.startswith(source_prefix) and not k.endswith("/")]
    rels = [k[len(source_prefix):] for k, _ in items]
    versions = check_remote_layout(rels, f"oss://{source_bucket}/{source_prefix}", wanted)
    files = [
        PlannedFile(key=object_key(prefix, rel), size=size, source_key=key)
        for (key, size), rel in zip(items, rels, strict=True)
    ]
    return UploadPlan(bucket=bucket, prefix=prefix, mode="copy", source_bucket=source_bucket,
                      source_prefix=source_prefix, versions=versions, files=files)


def is_unchanged(size: int, crc64: Callable[[], int | None], remote: RemoteObject | None) -> bool:
    """True when the object exists with this size and this CRC-64 (computed lazily: only when sizes match)."""
    if remote is None or remote.size != size or remote.crc64 is None:
        return False
    return crc64() == remote.crc64


def is_transient(exc: BaseException) -> bool:
    """Network errors, 5xx, throttling and CRC mismatches are worth another try; nothing else is."""
    if isinstance(exc, RequestError | InconsistentError):
        return True
    if isinstance(exc, ServerError):
        if exc.status == 501 or exc.code == "NotImplemented":
            return False
        return exc.status >= 500 or exc.status == 429 or exc.code in TRANSIENT_CODES
    return False


def describe_oss_error(exc: BaseException, secrets: Iterable[str] = ()) -> tuple[str, str | None]:
    """A one-line description of an oss2 error and its code, with every secret masked."""
    code: str | None = None
    if isinstance(exc, RequestError):
        inner = getattr(exc, "exception", None)
        text = f"network error ({type(inner).__name__ if inner else 'RequestError'}): {inner or exc.body}"
        code = "RequestError"
    elif isinstance(exc, InconsistentError):
        text = f"CRC-64 mismatch between client and OSS: {exc.body}"
        code = "InconsistentError"
    elif isinstance(exc, ServerError):
        code = exc.code or f"HTTP{exc.status}"
        text = f"OSS error {code} (HTTP {exc.status})"
        if exc.message:
            text += f": {exc.message}"
        if exc.request_id:
            text += f" [request id {exc.request_id}]"
    elif isinstance(exc, OssError):
        code = type(exc).__name__
        text = f"{code}: {exc.body}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text, secrets), code


def redact(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


# --- CRC ----------------------------------------------------------------------------------------------------------
def require_crc_extension() -> None:
    """oss2 computes CRC-64 with crcmod; without its C extension that is ~100x slower. Refuse to run without it."""
    try:
        import crcmod._crcfunext  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "crcmod's C extension (crcmod._crcfunext) is not importable, so CRC-64 checks would run in pure Python "
            "(~100x slower). Reinstall crcmod with a C compiler and the Python headers available: "
            "pip install --force-reinstall --no-binary crcmod crcmod"
        ) from exc


def crc64_file(path: Path, chunk: int = CRC_CHUNK) -> int:
    """CRC-64/ECMA of a file, as OSS computes ``x-oss-hash-crc64ecma`` (oss2.utils.Crc64, crcmod C extension)."""
    crc = oss2.utils.Crc64()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            crc.update(block)
    return crc.crc


# --- progress -----------------------------------------------------------------------------------------------------
class _Aborted(Exception):
    """Raised inside a transfer's progress callback to stop it once another file has failed."""


class Progress:
    """Thread-safe byte counter; workers advance it, the calling thread renders it (bar, artifact)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self.abort = threading.Event()

    def advance(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self.done += n

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else min(100.0, 100.0 * self.done / self.total)


class _FileCallback:
    """oss2 progress callback for one file: advances the shared counter and remembers the resumed offset.

    For a multipart upload oss2 reports the bytes of finished parts at the start of each part; its first report is
    what a resumed upload found already on OSS.
    """

    def __init__(self, progress: Progress, key: str, hook: Callable[[str, int, int], None] | None) -> None:
        self.progress = progress
        self.key = key
        self.hook = hook
        self.first: int | None = None
        self.seen = 0
        self._lock = threading.Lock()

    def __call__(self, consumed: int, total: int | None) -> None:
        if self.progress.abort.is_set():
            raise _Aborted(self.key)
        with self._lock:
            if self.first is None:
                self.first = consumed
            delta = consumed - self.seen
            if delta > 0:
                self.seen = consumed
        self.progress.advance(delta)
        if self.hook is not None:
            self.hook(self.key, consumed, total or 0)

    def finish(self, size: int) -> None:
        with self._lock:
            delta = size - self.seen
            self.seen = max(self.seen, size)
        self.progress.advance(delta)


class _Renderer:
    """Renders progress from the calling thread: a rich bar (optional) and a Prefect progress artifact.

    The artifact exists only inside a Prefect flow or task run (outside one there is no API to write to); it is
    updated when the percentage crosses another ``step`` percent. A failing artifact write is logged, not fatal.
    """

    def __init__(self, progress: Progress, description: str, show_progress: bool, step: float = 2.0) -> None:
        self.progress = progress
        self.step = step
        self._artifact_id: Any = None
        self._last_bucket = -1
        self._bar = None
        self._task_id = None
        if show_progress:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            self._task_id = self._bar.add_task(description, total=progress.total)
            self._bar.start()
        if _in_prefect_run():
            try:
                from prefect.artifacts import create_progress_artifact

                self._artifact_id = create_progress_artifact(
                    progress=0.0, key=ARTIFACT_KEY, description=description, _sync=True
                )
            except Exception as exc:  # progress display must never fail the upload
                _logger().warning("could not create the progress artifact: %s", exc)

    def render(self, final: bool = False) -> None:
        if self._bar is not None:
            self._bar.update(self._task_id, completed=self.progress.done)
        if self._artifact_id is not None:
            pct = self.progress.percent
            bucket = int(pct // self.step)
            if bucket != self._last_bucket or final:
                self._last_bucket = bucket
                try:
                    from prefect.artifacts import update_progress_artifact

                    update_progress_artifact(artifact_id=self._artifact_id, progress=round(pct, 1), _sync=True)
                except Exception as exc:
                    _logger().warning("could not update the progress artifact: %s", exc)
                    self._artifact_id = None

    def close(self) -> None:
        self.render(final=True)
        if self._bar is not None:
            self._bar.stop()


def _in_prefect_run() -> bool:
    from prefect.context import get_run_context

    try:
        get_run_context()
    except Exception:
        return False
    return True


def _logger() -> logging.Logger | logging.LoggerAdapter:
    if _in_prefect_run():
        from prefect import get_run_logger

        return get_run_logger()
    return log


# --- executor -----------------------------------------------------------------------------------------------------
class TransferOptions(_Shape):
    part_size: int = Field(default=8 * 1024 * 1024, ge=100 * 1024)
    multipart_threshold: int = Field(default=16 * 1024 * 1024, ge=100 * 1024)
    num_threads: int = Field(default=4, ge=1, le=64)
    file_workers: int = Field(default=DEFAULT_FILE_WORKERS, ge=1, le=64)
    attempts: int = Field(default=DEFAULT_ATTEMPTS, ge=1, le=20)
    backoff_max_s: float = Field(default=20.0, gt=0)
    checkpoint_dir: Path = Field(default=DEFAULT_CHECKPOINT_DIR)


class Executor:
    """Applies an :class:`UploadPlan` to a destination bucket."""

    def __init__(
        self,
        bucket: oss2.Bucket,
        options: TransferOptions,
        *,
        source: oss2.Bucket | None = None,
        secrets: Iterable[str] = (),
        progress_hook: Callable[[str, int, int], None] | None = None,
        endpoint: str = "",
    ) -> None:
        self.bucket = bucket
        self.source = source
        self.options = options
        self.secrets = [s for s in secrets if s]
        self.hook = progress_hook
        ck = Path(options.checkpoint_dir).expanduser()
        # One checkpoint directory per endpoint, so that a sandbox and the cloud never share records.
        scope = hashlib.sha256(endpoint.encode()).hexdigest()[:12] if endpoint else "default"
        self.store = oss2.ResumableStore(root=str(ck), dir=scope)
        self.checkpoint_dir = Path(self.store.dir)

    # -- retries
    def _retrying(self, progress: Progress, what: str) -> Retrying:
        def should_retry(exc: BaseException) -> bool:
            return not progress.abort.is_set() and is_transient(exc)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            text, _ = describe_oss_error(exc, self.secrets) if exc else ("", None)
            _logger().warning("%s: attempt %d failed (%s); retrying", what, state.attempt_number, text)

        return Retrying(
            retry=retry_if_exception(should_retry),
            stop=stop_after_attempt(self.options.attempts),
            wait=wait_exponential(multiplier=0.5, max=self.options.backoff_max_s),
            before_sleep=before_sleep,
            reraise=True,
        )

    def _call(self, progress: Progress, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._retrying(progress, what)(fn, *args, **kwargs)

    def head(self, bucket: oss2.Bucket, key: str, progress: Progress) -> RemoteObject | None:
        try:
            r = self._call(progress, f"HEAD {key}", bucket.head_object, key)
        except NotFound:
            return None
        return RemoteObject(size=r.content_length or 0, crc64=r.server_crc)

    # -- one file
    def transfer(self, plan: UploadPlan, f: PlannedFile, progress: Progress) -> FileResult:
        t0 = time.perf_counter()
        try:
            if plan.mode == "upload":
                return self._upload(f, progress, t0)
            return self._copy(plan, f, progress, t0)
        except _Aborted:
            raise
        except OssError as exc:
            if progress.abort.is_set():
                raise _Aborted(f.key) from None
            text, code = describe_oss_error(exc, self.secrets)
            source = f.path if f.path is not None else f"oss://{plan.source_bucket}/{f.source_key}"
            raise UploadError(
                f"{source} → oss://{self.bucket.bucket_name}/{f.key}: {text}",
                key=f.key, code=code, status=getattr(exc, "status", None),
                request_id=getattr(exc, "request_id", None) or None,
            ) from None

    def _upload(self, f: PlannedFile, progress: Progress, t0: float) -> FileResult:
        assert f.path is not None
        remote = self.head(self.bucket, f.key, progress)
        local_crc: list[int] = []

        def crc() -> int:
            local_crc.append(crc64_file(f.path))
            return local_crc[0]

        if is_unchanged(f.size, crc, remote):
            progress.advance(f.size)
            return FileResult(key=f.key, size=f.size, action="skipped", method="none", bytes_sent=0,
                              crc64=local_crc[0], seconds=time.perf_counter() - t0)
        cb = _FileCallback(progress, f.key, self.hook)
        multipart = f.size >= self.options.multipart_threshold
        if multipart:
            result = self._call(
                progress, f"upload {f.key}", oss2.resumable_upload, self.bucket, f.key, str(f.path),
                store=self.store, multipart_threshold=self.options.multipart_threshold,
                part_size=self._part_size(f.size), progress_callback=cb, num_threads=self.options.num_threads,
            )
        else:
            def put() -> Any:
                with open(f.path, "rb") as fh:
                    return self.bucket.put_object(f.key, fh, progress_callback=cb)

            result = self._call(progress, f"upload {f.key}", put)
        cb.finish(f.size)
        resumed = (cb.first or 0) if multipart else 0
        return FileResult(key=f.key, size=f.size, action="uploaded", method="multipart" if multipart else "put",
                          bytes_sent=f.size - resumed, crc64=result.crc, seconds=time.perf_counter() - t0)

    def _part_size(self, size: int) -> int:
        # OSS allows at most 10,000 parts: grow the part size for huge files (oss2.determine_part_size).
        return oss2.determine_part_size(size, preferred_size=self.options.part_size)

    def _copy(self, plan: UploadPlan, f: PlannedFile, progress: Progress, t0: float) -> FileResult:
        assert self.source is not None and f.source_key is not None and plan.source_bucket is not None
        src = self.head(self.source, f.source_key, progress)
        if src is None:
            raise UploadError(f"source object oss://{plan.source_bucket}/{f.source_key} disappeared", key=f.key,
                              code="NoSuchKey")
        remote = self.head(self.bucket, f.key, progress)
        if is_unchanged(src.size, lambda: src.crc64, remote):
            progress.advance(f.size)
            return FileResult(key=f.key, size=f.size, action="skipped", method="none", bytes_sent=0,
                              crc64=src.crc64, seconds=time.perf_counter() - t0)
        multipart = src.size >= self.options.multipart_threshold
        if multipart:
            # Not retried as a whole: each request inside is (a failed part is copied again, not the object).
            crc = self._multipart_copy(plan.source_bucket, f.source_key, f.key, src.size, progress)
        else:
            result = self._call(progress, f"copy {f.key}", self.bucket.copy_object, plan.source_bucket,
                                f.source_key, f.key)
            crc = result.crc
            progress.advance(f.size)
        if crc is None:
            crc = (self.head(self.bucket, f.key, progress) or RemoteObject(size=0, crc64=None)).crc64
        if src.crc64 is not None and crc is not None and crc != src.crc64:
            raise UploadError(
                f"oss://{plan.source_bucket}/{f.source_key} → {f.key}: CRC-64 of the copy ({crc}) differs from "
                f"the source's ({src.crc64})", key=f.key, code="InconsistentError")
        return FileResult(key=f.key, size=f.size, action="copied",
                          method="multipart-copy" if multipart else "copy", bytes_sent=f.size, crc64=crc,
                          seconds=time.perf_counter() - t0)

    def _multipart_copy(self, source_bucket: str, source_key: str, key: str, size: int,
                        progress: Progress) -> int | None:
        part_size = self._part_size(size)
        upload_id = self._call(progress, f"copy {key}: initiate", self.bucket.init_multipart_upload, key).upload_id
        ranges = [(i + 1, start, min(start + part_size, size) - 1) for i, start in enumerate(range(0, size, part_size))]

        def part(n: int, first: int, last: int) -> oss2.models.PartInfo:
            if progress.abort.is_set():
                raise _Aborted(key)
            r = self._call(progress, f"copy {key} part {n}", self.bucket.upload_part_copy, source_bucket,
                           source_key, (first, last), key, upload_id, n)
            progress.advance(last - first + 1)
            return oss2.models.PartInfo(n, r.etag, size=last - first + 1, part_crc=r.crc)

        try:
            with ThreadPoolExecutor(self.options.num_threads, thread_name_prefix="oss-copy-part") as pool:
                parts = list(pool.map(lambda a: part(*a), ranges))
            # complete_multipart_upload checks the CRC combined from the parts against the object's (enable_crc).
            return self._call(progress, f"copy {key}: complete", self.bucket.complete_multipart_upload, key,
                              upload_id, parts).crc
        except BaseException:
            with contextlib.suppress(OssError):
                self.bucket.abort_multipart_upload(key, upload_id)
            raise

    # -- the whole plan
    def run(self, plan: UploadPlan, *, show_progress: bool = False) -> UploadReport:
        progress = Progress(plan.total_bytes)
        where = f"oss://{plan.bucket}/{plan.prefix}"
        verb = "Copying" if plan.mode == "copy" else "Uploading"
        renderer = _Renderer(progress, f"{verb} model to {where}", show_progress)
        t0 = time.perf_counter()
        results: list[FileResult] = []
        # Biggest first: long multipart uploads start early and the small files fill the gaps.
        ordered = sorted(plan.files, key=lambda f: f.size, reverse=True)
        try:
            with ThreadPoolExecutor(self.options.file_workers, thread_name_prefix="oss-upload") as pool:
                futures: dict[Future, PlannedFile] = {pool.submit(self.transfer, plan, f, progress): f
                                                      for f in ordered}
                pending = set(futures)
                first_error: BaseException | None = None
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        if fut.cancelled():
                            continue
                        exc = fut.exception()
                        if exc is None:
                            results.append(fut.result())
                        elif first_error is None and not isinstance(exc, _Aborted):
                            first_error = exc
                            progress.abort.set()  # stop the other transfers at their next callback
                            for other in pending:
                                other.cancel()
                    renderer.render()
                if first_error is not None:
                    raise first_error
        finally:
            renderer.close()
        seconds = time.perf_counter() - t0
        results.sort(key=lambda r: r.key)
        sent = sum(r.bytes_sent for r in results)
        skipped = [r for r in results if r.action == "skipped"]
        return UploadReport(
            bucket=plan.bucket, prefix=plan.prefix, mode=plan.mode, files_total=len(results),
            files_uploaded=len(results) - len(skipped), files_skipped=len(skipped), bytes_total=plan.total_bytes,
            bytes_sent=sent, bytes_skipped=sum(r.size for r in skipped), seconds=round(seconds, 3),
            throughput_mb_s=round(sent / 1e6 / seconds, 2) if seconds > 0 else 0.0, files=results,
        )


# --- bucket -------------------------------------------------------------------------------------------------------
def retrying(attempts: int = DEFAULT_ATTEMPTS, max_wait_s: float = 20.0) -> Retrying:
    """Retry transient OSS failures (:func:`is_transient`) with exponential backoff; re-raise the last error."""
    return Retrying(retry=retry_if_exception(is_transient), stop=stop_after_attempt(attempts),
                    wait=wait_exponential(multiplier=0.5, max=max_wait_s), reraise=True)


def ensure_bucket(bucket: oss2.Bucket, secrets: Iterable[str] = (), attempts: int = DEFAULT_ATTEMPTS) -> bool:
    """Make sure the bucket exists and is ours; create it (private ACL) if missing. True when created."""
    name = bucket.bucket_name
    retry = retrying(attempts)

    def fail(exc: OssError, doing: str) -> UploadError:
        text, code = describe_oss_error(exc, secrets)
        return UploadError(f"bucket {name!r}: {doing}: {text}", code=code, status=getattr(exc, "status", None))

    try:
        retry(bucket.list_objects, max_keys=1)
        return False
    except oss2.exceptions.NoSuchBucket:
        pass
    except OssError as exc:
        raise fail(exc, "cannot read the bucket") from None
    try:
        retry(bucket.create_bucket, oss2.BUCKET_ACL_PRIVATE)
        return True
    except ServerError as exc:
        if exc.code == "BucketAlreadyExists":
            # Created meanwhile by this account (fine), or the name belongs to another account (fatal).
            try:
                retry(bucket.list_objects, max_keys=1)
                return False
            except OssError:
                raise UploadError(
                    f"bucket {name!r} already exists and belongs to another account: OSS bucket names are global; "
                    "choose another storage.bucket", code="BucketAlreadyExists", status=exc.status,
                ) from None
        raise fail(exc, "cannot create the bucket") from None
    except OssError as exc:
        raise fail(exc, "cannot create the bucket") from None


# --- entry points -------------------------------------------------------------------------------------------------
def _secrets(credentials: AlibabaCloudCredentials) -> list[str]:
    out = [credentials.access_key_secret.get_secret_value()]
    if credentials.security_token is not None:
        out.append(credentials.security_token.get_secret_value())
    return out


def _session(options: TransferOptions) -> oss2.Session:
    # Enough pooled connections for every file worker's parallel parts, so none is opened and thrown away.
    return oss2.Session(pool_size=options.file_workers * options.num_threads + 4)


def build_plan(spec: DeploySpec, list_source: Callable[[str], Iterable[tuple[str, int]]] | None = None) -> UploadPlan:
    """The plan for ``spec``: from ``model.local_dir``, or from ``model.source_uri`` (listed by ``list_source``)."""
    m, names = spec.model, spec.names
    if m.local_dir is not None and m.source_uri is not None:
        raise ValueError("model: set local_dir or source_uri, not both")
    if m.local_dir is not None:
        return plan_local_upload(m.local_dir, spec.storage.bucket, names.model_oss_prefix, m.versions_wanted())
    if m.source_uri is not None:
        src_bucket, src_prefix = parse_oss_uri(m.source_uri)
        if list_source is None:
            raise ValueError("copying from model.source_uri needs a way to list the source bucket")
        return plan_oss_copy(list_source(src_prefix), src_bucket, src_prefix, spec.storage.bucket,
                             names.model_oss_prefix, m.versions_wanted())
    raise ValueError("model: set local_dir (a local model directory) or source_uri (oss://bucket/prefix)")


def run_upload(
    spec: DeploySpec,
    credentials: AlibabaCloudCredentials,
    *,
    show_progress: bool = False,
    checkpoint_dir: Path | str | None = None,
    file_workers: int = DEFAULT_FILE_WORKERS,
    attempts: int = DEFAULT_ATTEMPTS,
    progress_hook: Callable[[str, int, int], None] | None = None,
) -> UploadReport:
    """Plan, ensure the bucket, execute, report. See :func:`upload_model`."""
    require_crc_extension()
    m = spec.model
    options = TransferOptions(
        part_size=m.upload_part_size, multipart_threshold=m.multipart_threshold, num_threads=m.upload_threads,
        file_workers=file_workers, attempts=attempts,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else DEFAULT_CHECKPOINT_DIR,
    )
    secrets = _secrets(credentials)
    session = _session(options)
    bucket = credentials.get_oss_bucket(spec.storage.bucket, session=session)
    source: oss2.Bucket | None = None
    list_source: Callable[[str], list[tuple[str, int]]] | None = None
    if m.local_dir is None and m.source_uri is not None:
        src_name, _ = parse_oss_uri(m.source_uri)
        source = credentials.get_oss_bucket(src_name, session=session)

        def list_source(prefix: str) -> list[tuple[str, int]]:
            try:
                return [(o.key, o.size) for o in oss2.ObjectIteratorV2(source, prefix=prefix)]
            except OssError as exc:
                text, code = describe_oss_error(exc, secrets)
                raise UploadError(f"cannot list {m.source_uri}: {text}", code=code) from None

    # A local model's layout is checked here, before any call to OSS.
    plan = build_plan(spec, list_source)
    logger = _logger()
    created = ensure_bucket(bucket, secrets, attempts)
    if created:
        logger.info("created bucket %s (private)", plan.bucket)
    executor = Executor(bucket, options, source=source, secrets=secrets, progress_hook=progress_hook,
                        endpoint=credentials.oss_endpoint_url())
    logger.info("%s %d files (%s) to oss://%s/%s", "copying" if plan.mode == "copy" else "uploading",
                len(plan.files), _mb(plan.total_bytes), plan.bucket, plan.prefix)
    report = executor.run(plan, show_progress=show_progress)
    logger.info(report.summary())
    return report


@task(name="upload-model", cache_policy=NO_CACHE)
def upload_model(
    spec: DeploySpec,
    credentials: AlibabaCloudCredentials,
    *,
    show_progress: bool = False,
    checkpoint_dir: Path | str | None = None,
    file_workers: int = DEFAULT_FILE_WORKERS,
    attempts: int = DEFAULT_ATTEMPTS,
    progress_hook: Callable[[str, int, int], None] | None = None,
) -> UploadReport:
    """Upload the model (``spec.model``) to ``oss://{spec.storage.bucket}/{spec.names.model_oss_prefix}``.

    Checks TF Serving's layout first, creates the bucket (private) if missing, skips files whose size and CRC-64
    already match, uploads the rest (resumable multipart for big files, checkpoints under ``checkpoint_dir``,
    default ``~/.cache/elastic-inference/oss-checkpoints``), and returns an :class:`UploadReport`. Progress goes to
    a Prefect progress artifact ``model-upload`` (inside a run), to a rich progress bar with ``show_progress``,
    and to ``progress_hook(key, bytes_done, size)`` when given (an exception it raises stops the upload).
    """
    return run_upload(spec, credentials, show_progress=show_progress, checkpoint_dir=checkpoint_dir,
                      file_workers=file_workers, attempts=attempts, progress_hook=progress_hook)


def delete_model_objects(
    credentials: AlibabaCloudCredentials, bucket_name: str, prefix: str, *, attempts: int = DEFAULT_ATTEMPTS
) -> int:
    """Delete every object under ``prefix`` (a teardown step); returns how many. Refuses an empty prefix."""
    if not prefix.strip("/"):
        raise ValueError("refusing to delete every object of the bucket: give a non-empty model prefix")
    if not prefix.endswith("/"):
        prefix += "/"
    secrets = _secrets(credentials)
    bucket = credentials.get_oss_bucket(bucket_name)
    retry = retrying(attempts)
    deleted = 0
    try:
        keys = retry(lambda: [o.key for o in oss2.ObjectIteratorV2(bucket, prefix=prefix)])
        for i in range(0, len(keys), 1000):  # DeleteMultipleObjects takes at most 1000 keys
            batch = keys[i:i + 1000]
            result = retry(bucket.batch_delete_objects, batch)
            deleted += len(result.deleted_keys)
    except oss2.exceptions.NoSuchBucket:
        return deleted
    except OssError as exc:
        text, code = describe_oss_error(exc, secrets)
        raise UploadError(f"cannot delete oss://{bucket_name}/{prefix}: {text}", code=code) from None
    _logger().info("deleted %d objects under oss://%s/%s", deleted, bucket_name, prefix)
    return deleted


@task(name="delete-model-objects", cache_policy=NO_CACHE)
def delete_model(spec: DeploySpec, credentials: AlibabaCloudCredentials) -> int:
    """Teardown: delete the uploaded model (every object under ``names.model_oss_prefix``)."""
    return delete_model_objects(credentials, spec.storage.bucket, spec.names.model_oss_prefix)
