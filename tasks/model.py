"""Step 2: upload the trained model to OSS (or copy it inside OSS), skipping what is already there.

The step is a thin Prefect task over pure helpers and a small executor:

- :mod:`tasks.model_plan` (pure): the data shapes, which files go to which object keys, and which are unchanged;
- :mod:`tasks.model_transfer`: the executor that applies a plan (put, resumable multipart upload, copy), with CRC-64
  checks;
- :mod:`clients.oss`: which OSS failures are retried, error messages without secrets, the bucket check;
- :mod:`tasks.model_progress` and :mod:`clients.logs`: progress (rich bar, Prefect artifact) and logging.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import oss2
from oss2.exceptions import OssError
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from blocks.alibaba import AlibabaCloudCredentials
from clients.logs import run_logger
from clients.oss import DEFAULT_ATTEMPTS, UploadError, describe_oss_error, ensure_bucket, retrying
from core.spec import DeploySpec
from tasks.model_plan import UploadReport, build_plan, format_mb, parse_oss_uri
from tasks.model_transfer import (
    DEFAULT_CHECKPOINT_DIR,
    DEFAULT_FILE_WORKERS,
    Executor,
    TransferOptions,
    oss_session,
    require_crc_extension,
)


def _secrets(credentials: AlibabaCloudCredentials) -> list[str]:
    out = [credentials.access_key_secret.get_secret_value()]
    if credentials.security_token is not None:
        out.append(credentials.security_token.get_secret_value())
    return out


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
    session = oss_session(options)
    bucket = credentials.get_oss_bucket(spec.storage.bucket, session=session)
    bucket.enable_crc = False  # the executor checks every object's CRC-64 itself, ~20x faster (tasks.model_transfer)
    source: oss2.Bucket | None = None
    list_source: Callable[[str], list[tuple[str, int]]] | None = None
    if m.local_dir is None and m.source_uri is not None:
        src_name, _ = parse_oss_uri(m.source_uri)
        source = credentials.get_oss_bucket(src_name, session=session)
        source.enable_crc = False

        def list_source(prefix: str) -> list[tuple[str, int]]:
            try:
                return [(o.key, o.size) for o in oss2.ObjectIteratorV2(source, prefix=prefix)]
            except OssError as exc:
                text, code = describe_oss_error(exc, secrets)
                raise UploadError(f"cannot list {m.source_uri}: {text}", code=code) from None

    # A local model's layout is checked here, before any call to OSS.
    plan = build_plan(spec, list_source)
    logger = run_logger()
    created = ensure_bucket(bucket, secrets, attempts)
    if created:
        logger.info("created bucket %s (private)", plan.bucket)
    executor = Executor(bucket, options, source=source, secrets=secrets, progress_hook=progress_hook)
    logger.info("%s %d files (%s) to oss://%s/%s", "copying" if plan.mode == "copy" else "uploading",
                len(plan.files), format_mb(plan.total_bytes), plan.bucket, plan.prefix)
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
    already match (without reading those the upload manifest shows unchanged, :mod:`tasks.model_manifest`),
    uploads the rest (resumable multipart for big files), and returns an :class:`UploadReport`. Checkpoints and
    manifests live under ``checkpoint_dir`` (default ``~/.cache/elastic-inference/oss-checkpoints``). Progress goes to
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
    run_logger().info("deleted %d objects under oss://%s/%s", deleted, bucket_name, prefix)
    return deleted


@task(name="delete-model-objects", cache_policy=NO_CACHE)
def delete_model(spec: DeploySpec, credentials: AlibabaCloudCredentials) -> int:
    """Teardown: delete the release's uploaded model (every object under ``names.model_oss_prefix``, its own
    prefix); the teardown flow first checks that no Deployment reads it."""
    return delete_model_objects(credentials, spec.storage.bucket, spec.names.model_oss_prefix)
