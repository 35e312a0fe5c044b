"""OSS failures: which ones to retry, how to describe one without leaking a secret, and the bucket check.

Network errors, 5xx, throttling and CRC mismatches are retried with exponential backoff (tenacity); any other
error, or one that persists, fails the step with :class:`UploadError`, whose message names the file, the object key
and the OSS error code, and never carries the AccessKey secret.
"""

from __future__ import annotations

from collections.abc import Iterable

import oss2
from oss2.exceptions import InconsistentError, OssError, RequestError, ServerError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

DEFAULT_ATTEMPTS = 5
# Codes OSS answers when it is busy; retried like 5xx (OSS error code reference).
TRANSIENT_CODES = {"Throttling", "TooManyRequests", "RequestTimeout", "ServiceUnavailable", "InternalError"}


class UploadError(RuntimeError):
    """A file could not be uploaded. Carries the file, key and OSS error code; never a secret."""

    def __init__(self, message: str, *, key: str | None = None, code: str | None = None,
                 status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.code = code
        self.status = status
        self.request_id = request_id


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
