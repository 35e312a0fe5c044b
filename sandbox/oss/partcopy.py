"""UploadPartCopy: one part of a multipart upload copied server-side from an existing object.

Sources: OSS API reference "UploadPartCopy" (https://help.aliyun.com/document_detail/31994.html), its error pages
0042-00000301 / 0042-00000302, and what oss2 2.19.1 sends (``Bucket.upload_part_copy`` in ``api.py``)::

    PUT /<key>?partNumber=N&uploadId=ID
    x-oss-copy-source: /<source bucket>/<source key, url-quoted with safe=''>
    x-oss-copy-source-range: bytes=first-last          (optional; oss2 sends ``bytes=first-`` for an open end)
    x-oss-copy-source-if-match | -if-none-match | -if-unmodified-since | -if-modified-since   (optional)

The answer is 200 with ``<CopyPartResult><LastModified/><ETag>"..."</ETag></CopyPartResult>``; the ``ETag`` is also
sent as a header, which is where oss2 reads it (``PutObjectResult``), with ``x-oss-hash-crc64ecma`` as for UploadPart.

- The part is stored exactly like an uploaded one: ETag = MD5 of the copied bytes, CRC-64 of those bytes, so
  ListParts and CompleteMultipartUpload (ETag ``-N``, CRC combined from the parts) cannot tell them apart.
- Range: a satisfiable ``bytes=first-last`` (also ``first-`` and ``-suffix``) copies that span. A range OSS cannot
  satisfy (last past the end, first > last, malformed) is not an error: the whole source is copied. The reference
  says so ("if the range does not conform, the entire source object is copied") and Alibaba's Java SDK integration
  test ``UploadPartCopyTest.testUnormalUploadPartCopyByRange`` expects it from the live service. (Only the
  S3-compatible ``x-amz-copy-source-range`` is refused out of bounds, EC 0042-00000306; the sandbox speaks OSS only.)
- Conditions on the source: each one that does not hold is 412 PreconditionFailed (the reference's words for all
  four; aliyun-oss-go-sdk ``TestUploadPartCopyWithConstraints``), never 304.
- Order of checks, after the destination bucket and its ACL (``Handlers.object_op``): partNumber (InvalidArgument),
  copy source syntax (InvalidArgument), upload (NoSuchUpload), source bucket (NoSuchBucket), source readable by the
  requester (AccessDenied), source key (NoSuchKey), conditions (PreconditionFailed), part size over 5 GB
  (EntityTooLarge).
"""

from __future__ import annotations

from .errors import OssError
from .models import ObjectInfo, PartInfo, UploadInfo
from .state import MAX_PART_SIZE, OssState
from .streams import copy_span
from .wire import OssRequest, parse_http_date, parse_range

SOURCE = "x-oss-copy-source"
RANGE = "x-oss-copy-source-range"
_ATTEMPTS = 3


def source_syntax(value: str) -> None:
    """``x-oss-copy-source`` must be present and start with '/' (EC 0042-00000302 empty, 0042-00000301 otherwise)."""
    if not value:
        raise OssError(
            "InvalidArgument", "Copy Source must not be empty.", ArgumentName=SOURCE, EC="0042-00000302"
        )
    if not value.startswith("/"):
        raise OssError(
            "InvalidArgument",
            "Copy Source must start with '/': /bucket/key.",
            ArgumentName=SOURCE,
            ArgumentValue=value,
            EC="0042-00000301",
        )


def _same_etag(given: str, etag: str) -> bool:
    given = given.strip()
    return given == "*" or given.strip('"').upper() == etag.upper()


def check_conditions(req: OssRequest, info: ObjectInfo) -> None:
    """The four ``x-oss-copy-source-if-*`` headers; unparsable dates are ignored, as in HTTP."""
    lm = int(info.last_modified)
    name = f"{SOURCE}-if-match"
    if req.header(name) and not _same_etag(req.header(name), info.etag):
        raise OssError("PreconditionFailed", Condition=name)
    name = f"{SOURCE}-if-none-match"
    if req.header(name) and _same_etag(req.header(name), info.etag):
        raise OssError("PreconditionFailed", Condition=name)
    name = f"{SOURCE}-if-unmodified-since"
    ts = parse_http_date(req.header(name)) if req.header(name) else None
    if ts is not None and lm > ts:
        raise OssError("PreconditionFailed", Condition=name)
    name = f"{SOURCE}-if-modified-since"
    ts = parse_http_date(req.header(name)) if req.header(name) else None
    if ts is not None and lm <= ts:
        raise OssError("PreconditionFailed", Condition=name)


def source_span(req: OssRequest, size: int) -> tuple[int, int]:
    """``(start, length)`` to copy: the requested range when satisfiable, else the whole object."""
    span = parse_range(req.header(RANGE), size, standard=False)
    start, length = (0, size) if span is None else (span[0], span[1] - span[0] + 1)
    if length > MAX_PART_SIZE:
        raise OssError("EntityTooLarge", MaxSizeAllowed=str(MAX_PART_SIZE), ProposedSize=str(length))
    return start, length


def copy_part(
    state: OssState, upload: UploadInfo, number: int, src_bucket: str, src_key: str, req: OssRequest
) -> PartInfo:
    """Copy the chosen span of the source into part ``number`` (heavy: call from a worker thread).

    Object files are replaced, never rewritten: when an overwrite of the source removes the file between the lookup
    and the open, the new version is looked up (and its conditions checked) again.
    """
    for _ in range(_ATTEMPTS):
        info, path = state.require_object(src_bucket, src_key)
        check_conditions(req, info)
        start, length = source_span(req, info.size)
        tmp = state.tmp_path()
        try:
            got = copy_span(path, start, length, tmp)
        except FileNotFoundError:
            continue
        try:
            return state.commit_part(upload, number, tmp, size=got.size, etag=got.etag, crc64=got.crc)
        finally:
            tmp.unlink(missing_ok=True)
    raise OssError("InternalError", "The copy source kept changing while it was read.")
