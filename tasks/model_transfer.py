"""Applies an upload plan to OSS: the executor that uploads or copies each file, and the CRC-64 it checks with.

Small files go up with ``put_object``; files of at least ``model.multipart_threshold`` bytes with
``oss2.resumable_upload`` (parts of ``model.upload_part_size`` bytes, ``model.upload_threads`` in parallel, a
checkpoint in ``checkpoint_dir`` so that an interrupted upload resumes where it stopped). Copies use
``copy_object``, or ``upload_part_copy`` for big objects. Files run in parallel on a bounded thread pool.

CRC-64 checks are end to end and done here, with ``fastcrc`` (~4 GB/s): every uploaded object's
``x-oss-hash-crc64ecma`` must equal the local file's CRC-64 (a mismatch is an ``InconsistentError``, retried), every
copy's the source object's. oss2's own check (``enable_crc``) runs crcmod's byte-wise C code inline on the sending
thread at 0.2-0.4 GB/s, which made it the largest single cost of an upload (bench/upload.py); :func:`run_upload`
turns it off for the buckets it makes. Request bodies go out in 1 MiB writes (urllib3's default is 16 KiB): fewer
passes through Python per byte.

Checkpoints of resumable uploads are keyed by bucket, key and the local file (oss2's ``ResumableStore`` key: MD5 of
``oss://bucket/key`` and of the file's absolute path), not by endpoint, so an upload interrupted by a restart of
the service (a sandbox comes back on new ports) resumes; oss2 itself checks the record's file size and mtime and
that the multipart upload still exists. A checkpoint whose file changed, or whose file turned out to be in the
bucket already, is abandoned: its multipart upload is aborted (oss2 would only drop the record, leaving the upload
and its parts orphaned in the bucket) and the record deleted.

Unchanged local files are skipped without being read when the upload manifest says so (:mod:`tasks.model_manifest`:
``stat`` + the object's ETag from one listing of the prefix).

``bytes_sent`` in the report counts the payload this run had to transfer: a resumed multipart upload does not count
the parts already on OSS when it started; a skipped file counts zero.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import fastcrc
import oss2
import requests.adapters
from oss2.exceptions import InconsistentError, NotFound, OssError
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from clients.logs import run_logger
from clients.oss import DEFAULT_ATTEMPTS, UploadError, describe_oss_error, is_transient
from tasks.model_manifest import ListedObject, ManifestEntry, UploadManifest, unchanged_by_manifest
from tasks.model_plan import FileResult, PlannedFile, RemoteObject, UploadPlan, UploadReport, is_unchanged
from tasks.model_progress import FileProgressCallback, Progress, ProgressRenderer, TransferAborted

DEFAULT_CHECKPOINT_DIR = Path("~/.cache/elastic-inference/oss-checkpoints")
DEFAULT_FILE_WORKERS = 4
CRC_CHUNK = 4 * 1024 * 1024
OSS_MAX_PARTS = 10000


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
    """CRC-64/ECMA of a file, as OSS computes ``x-oss-hash-crc64ecma`` (CRC-64/XZ, oss2.utils.Crc64's parameters)."""
    crc = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            crc = fastcrc.crc64.xz(view[:n], crc)
    return crc


def check_crc(what: str, local: int, remote: int | None) -> None:
    """The object's CRC-64 as OSS computed it must be the local one (InconsistentError: retried)."""
    if remote is not None and remote != local:
        raise InconsistentError(f"{what}: CRC-64 of the object ({remote}) differs from the local file's ({local})")


class TransferOptions(BaseModel):
    """How the executor transfers: part sizes, parallelism, retries and where resumable uploads keep checkpoints."""

    model_config = ConfigDict(extra="forbid")

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
    ) -> None:
        self.bucket = bucket
        self.source = source
        self.options = options
        self.secrets = [s for s in secrets if s]
        self.hook = progress_hook
        self.state_dir = Path(options.checkpoint_dir).expanduser()
        # Not per endpoint: a record names bucket, key and file; oss2 drops one whose upload id the service does
        # not know (list_parts answers NoSuchUpload), so records of another endpoint cost one request at most.
        self.store = oss2.ResumableStore(root=str(self.state_dir), dir="uploads")
        self.checkpoint_dir = Path(self.store.dir)
        self.manifest: UploadManifest | None = None
        self.listed: dict[str, ListedObject] = {}

    # -- retries
    def _retrying(self, progress: Progress, what: str) -> Retrying:
        def should_retry(exc: BaseException) -> bool:
            return not progress.abort.is_set() and is_transient(exc)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            text, _ = describe_oss_error(exc, self.secrets) if exc else ("", None)
            run_logger().warning("%s: attempt %d failed (%s); retrying", what, state.attempt_number, text)

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
        return RemoteObject(size=r.content_length or 0, crc64=r.server_crc, etag=r.etag)

    def list_prefix(self, prefix: str, progress: Progress) -> dict[str, ListedObject]:
        """Size and ETag of every object under ``prefix`` (ListObjectsV2, 1,000 keys a request)."""
        def listing() -> dict[str, ListedObject]:
            return {o.key: ListedObject(size=o.size, etag=o.etag or "")
                    for o in oss2.ObjectIteratorV2(self.bucket, prefix=prefix, max_keys=1000)}

        return self._call(progress, f"list {prefix}", listing)

    # -- checkpoints
    def _record_key(self, f: PlannedFile) -> str:
        assert f.path is not None
        return self.store.make_store_key(self.bucket.bucket_name, f.key, os.path.abspath(f.path))

    def abandon_checkpoint(self, f: PlannedFile, progress: Progress, keep_if: os.stat_result | None = None) -> None:
        """Abort the multipart upload of ``f``'s checkpoint and delete it, unless it still fits ``keep_if``.

        A checkpoint fits when its recorded size and mtime are the file's now (what oss2 checks before resuming).
        """
        record_key = self._record_key(f)
        record = self.store.get(record_key)
        if not record:
            return
        if keep_if is not None and record.get("size") == keep_if.st_size and record.get("mtime") == keep_if.st_mtime:
            return
        upload_id = record.get("upload_id")
        if upload_id:
            with contextlib.suppress(oss2.exceptions.NoSuchUpload):
                self._call(progress, f"abort the stale upload of {f.key}", self.bucket.abort_multipart_upload,
                           f.key, upload_id)
            run_logger().info("aborted the abandoned multipart upload %s of %s (its file changed or is already "
                              "in the bucket)", upload_id, f.key)
        self.store.delete(record_key)

    # -- one file
    def transfer(self, plan: UploadPlan, f: PlannedFile, progress: Progress) -> FileResult:
        t0 = time.perf_counter()
        try:
            if plan.mode == "upload":
                return self._upload(f, progress, t0)
            return self._copy(plan, f, progress, t0)
        except TransferAborted:
            raise
        except OssError as exc:
            if progress.abort.is_set():
                raise TransferAborted(f.key) from None
            text, code = describe_oss_error(exc, self.secrets)
            source = f.path if f.path is not None else f"oss://{plan.source_bucket}/{f.source_key}"
            raise UploadError(
                f"{source} → oss://{self.bucket.bucket_name}/{f.key}: {text}",
                key=f.key, code=code, status=getattr(exc, "status", None),
                request_id=getattr(exc, "request_id", None) or None,
            ) from None

    def _upload(self, f: PlannedFile, progress: Progress, t0: float) -> FileResult:
        assert f.path is not None
        st = f.path.stat()  # before any read: a write during the upload shows as another mtime next time
        entry = self.manifest.get(f.key) if self.manifest is not None else None
        if unchanged_by_manifest(entry, f.path, st.st_size, st.st_mtime_ns, self.listed.get(f.key)):
            assert entry is not None
            self.abandon_checkpoint(f, progress)
            progress.advance(f.size)
            return FileResult(key=f.key, size=f.size, action="skipped", method="none", bytes_sent=0,
                              crc64=entry.crc64, seconds=time.perf_counter() - t0, skipped_by="manifest")
        remote = self.head(self.bucket, f.key, progress)
        local_crc: list[int] = []

        def crc() -> int:
            local_crc.append(crc64_file(f.path))
            return local_crc[0]

        if is_unchanged(f.size, crc, remote):
            assert remote is not None
            self.abandon_checkpoint(f, progress)
            self._remember(f, st, local_crc[0], remote.etag)
            progress.advance(f.size)
            return FileResult(key=f.key, size=f.size, action="skipped", method="none", bytes_sent=0,
                              crc64=local_crc[0], seconds=time.perf_counter() - t0, skipped_by="crc64")
        cb = FileProgressCallback(progress, f.key, self.hook)
        multipart = f.size >= self.options.multipart_threshold
        if multipart:
            self.abandon_checkpoint(f, progress, keep_if=st)

        def send() -> Any:
            local = local_crc[0] if local_crc else crc64_file(f.path)
            if multipart:
                result = oss2.resumable_upload(
                    self.bucket, f.key, str(f.path), store=self.store,
                    multipart_threshold=self.options.multipart_threshold, part_size=self._part_size(f.size),
                    progress_callback=cb, num_threads=self.options.num_threads)
            else:
                with open(f.path, "rb") as fh:
                    result = self.bucket.put_object(f.key, fh, progress_callback=cb)
            check_crc(f"upload {f.key}", local, result.crc)
            local_crc[:] = [local]
            return result

        result = self._call(progress, f"upload {f.key}", send)
        cb.finish(f.size)
        if result.crc is not None and result.etag:
            self._remember(f, st, result.crc, result.etag)
        resumed = (cb.first or 0) if multipart else 0
        return FileResult(key=f.key, size=f.size, action="uploaded", method="multipart" if multipart else "put",
                          bytes_sent=f.size - resumed, crc64=result.crc, seconds=time.perf_counter() - t0)

    def _remember(self, f: PlannedFile, st: os.stat_result, crc64: int, etag: str | None) -> None:
        """Record what ``f`` became, if it did not change while it was read (else the next run checks it again)."""
        if self.manifest is None or not etag or f.path is None:
            return
        now = f.path.stat()
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.manifest.forget(f.key)
            return
        self.manifest.record(f.key, ManifestEntry(path=str(f.path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                                                  crc64=crc64, etag=etag))

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
                raise TransferAborted(key)
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
        renderer = ProgressRenderer(progress, f"{verb} model to {where}", show_progress)
        t0 = time.perf_counter()
        results: list[FileResult] = []
        # Biggest first: long multipart uploads start early and the small files fill the gaps.
        ordered = sorted(plan.files, key=lambda f: f.size, reverse=True)
        if plan.mode == "upload":
            self.manifest = UploadManifest.load(self.state_dir, plan.bucket, plan.prefix)
            # One listing tells which recorded objects are still as recorded (only worth it with a manifest).
            self.listed = self.list_prefix(plan.prefix, progress) if self.manifest.entries else {}
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
                        elif first_error is None and not isinstance(exc, TransferAborted):
                            first_error = exc
                            progress.abort.set()  # stop the other transfers at their next callback
                            for other in pending:
                                other.cancel()
                    renderer.render()
                if first_error is not None:
                    raise first_error
        finally:
            renderer.close()
            if self.manifest is not None:
                self.manifest.save()  # what did go up is remembered even when another file failed
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


SEND_BLOCK = 1 << 20


class _BigBlockAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections write request bodies in ``SEND_BLOCK`` reads (urllib3 ``blocksize``)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", SEND_BLOCK)
        super().init_poolmanager(*args, **kwargs)


def oss_session(options: TransferOptions) -> oss2.Session:
    """An oss2 session sized for ``options``: shared by the destination and source buckets."""
    # Enough pooled connections for every file worker's parallel parts, so none is opened and thrown away.
    size = options.file_workers * options.num_threads + 4
    return oss2.Session(adapter=_BigBlockAdapter(pool_connections=size, pool_maxsize=size))
