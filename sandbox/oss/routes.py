"""OSS operations: which request is which operation, and what each one answers.

Dispatch is by path level (service ``/``, bucket ``/bucket/``, object ``/bucket/key``), method and sub-resource,
as in the OSS API reference; request headers, parameters and response elements are those oss2 2.19.1 sends and
parses (``api.py``, ``xml_utils.py``, ``models.py``). Behaviour lives in :mod:`.state` (and :mod:`.partcopy` for
UploadPartCopy), wire details in :mod:`.wire`, :mod:`.xml` and :mod:`.streams`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from typing import TYPE_CHECKING
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..strict import ascii_uint
from . import partcopy
from .auth import Principal
from .errors import OssError
from .models import ObjectInfo
from .state import MAX_OBJECT_SIZE, MAX_PART_NUMBER, MAX_PART_SIZE, check_key
from .streams import expected_md5, iter_file, receive_to_file
from .wire import OssRequest, http_date, iso_ms, parse_http_date, parse_range, url_encode
from .xml import MAX_XML_BODY, Element, parse, text, to_bytes

if TYPE_CHECKING:
    from .service import OssService

XML = "application/xml"
ACLS = ("private", "public-read", "public-read-write")
# Bucket configuration sub-resources OSS has and this emulation does not: answered with NotImplemented.
_UNSUPPORTED_BUCKET = frozenset(
    [
        "cors",
        "lifecycle",
        "logging",
        "website",
        "referer",
        "policy",
        "tagging",
        "encryption",
        "versioning",
        "versions",
        "replication",
        "replicationProgress",
        "replicationLocation",
        "worm",
        "wormId",
        "inventory",
        "requestPayment",
        "transferAcceleration",
        "qos",
        "qosInfo",
        "cname",
        "metaQuery",
        "resourceGroup",
        "accessPoint",
        "publicAccessBlock",
        "httpsConfig",
        "style",
        "live",
        "stat",
    ]
)
_UNSUPPORTED_OBJECT = frozenset(
    ["append", "symlink", "tagging", "restore", "x-oss-process", "comp", "position", "versionId"]
)
_META_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def xml_response(root: Element, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_bytes(root), status_code=status, media_type=XML, headers=headers)


def _int_param(req: OssRequest, name: str, default: int, lo: int, hi: int) -> int:
    raw = req.params.get(name, "")
    if raw == "":
        return default
    negative = raw.startswith("-")
    value = ascii_uint(raw[1:] if negative else raw)
    if value is None:
        raise OssError(
            "InvalidArgument", f"{name} is not an integer.", ArgumentName=name, ArgumentValue=raw[:100]
        )
    value = -value if negative else value
    if not lo <= value <= hi:
        raise OssError(
            "InvalidArgument", f"{name} must be between {lo} and {hi}.", ArgumentName=name, ArgumentValue=raw[:100]
        )
    return value


def _encoding(req: OssRequest) -> bool:
    enc = req.params.get("encoding-type", "")
    if enc not in ("", "url"):
        raise OssError(
            "InvalidArgument", "encoding-type must be url.", ArgumentName="encoding-type", ArgumentValue=enc
        )
    return enc == "url"


# "The total size of all user metadata cannot exceed 8 KB" (OSS PutObject; error 0011-00000002: the total of every
# x-oss-meta-* header's name and value). OSS documents the rule and the EC, not the Code: InvalidArgument is
# OSS's code for a bad request header.
MAX_USER_META_BYTES = 8 * 1024


def _user_meta(req: OssRequest) -> dict[str, str]:
    meta = {k.lower(): v for k, v in req.headers.items() if k.lower().startswith("x-oss-meta-")}
    if sum(len(k.encode("latin-1")) + len(v.encode("latin-1")) for k, v in meta.items()) > MAX_USER_META_BYTES:
        raise OssError("InvalidArgument", "Your metadata headers exceed the maximum allowed metadata size.",
                       EC="0011-00000002")
    for h in _META_HEADERS:
        if h in req.headers:
            meta[h] = req.headers[h]
    return meta


def _authorize(principal: Principal, acl: str, write: bool) -> None:
    """Anonymous requests reach only public buckets (public-read for reads, public-read-write for writes)."""
    if not principal.anonymous:
        return
    if acl == "public-read-write" or (acl == "public-read" and not write):
        return
    raise OssError("AccessDenied", "You have no right to access this object because of bucket acl.")


class Handlers:
    def __init__(self, svc: OssService) -> None:
        self.svc = svc
        self.state = svc.state

    @property
    def owner_id(self) -> str:
        return self.svc.ctx.identity.account_id

    async def _thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.svc.executor, fn, *args)

    def _owner(self, parent: Element) -> None:
        owner = parent.child("Owner")
        owner.child("ID", self.owner_id)
        owner.child("DisplayName", self.owner_id)

    # ---- dispatch ------------------------------------------------------------------------------------------------
    async def dispatch(self, req: OssRequest, principal: Principal, request: Request) -> Response:
        if not req.bucket:
            if principal.anonymous:
                raise OssError("AccessDenied", "Anonymous access is forbidden for this operation.")
            if req.method in ("GET", "HEAD"):
                return self.list_buckets(req)
            raise OssError("MethodNotAllowed", Method=req.method, ResourceType="Service")
        if not req.key:
            return await self.bucket_op(req, principal, request)
        return await self.object_op(req, principal, request)

    async def bucket_op(self, req: OssRequest, principal: Principal, request: Request) -> Response:
        m, p = req.method, req.params
        if m == "PUT" and "acl" not in p and not (_UNSUPPORTED_BUCKET & p.keys()):
            if principal.anonymous:
                raise OssError("AccessDenied", "Anonymous access is forbidden for this operation.")
            return await self.create_bucket(req, request)
        bucket = self.state.require_bucket(req.bucket)
        write = m in ("PUT", "POST", "DELETE")
        if principal.anonymous and (
            "acl" in p or "bucketInfo" in p or "location" in p or m in ("PUT", "DELETE")
        ):
            raise OssError("AccessDenied", "Anonymous access is forbidden for this operation.")
        _authorize(principal, bucket.acl, write)
        if _UNSUPPORTED_BUCKET & p.keys():
            raise OssError("NotImplemented", "This bucket configuration is not supported by the sandbox.")
        if m == "GET":
            if "bucketInfo" in p:
                return self.bucket_info(req)
            if "location" in p:
                root = Element("LocationConstraint")
                root.el.text = f"oss-{self.svc.region}"
                return xml_response(root)
            if "acl" in p:
                return self.acl_doc(bucket.acl)
            if "uploads" in p:
                return self.list_uploads(req)
            if p.get("list-type") == "2":
                return self.list_objects(req, v2=True)
            return self.list_objects(req, v2=False)
        if m == "PUT" and "acl" in p:
            acl = req.header("x-oss-acl")
            if acl not in ACLS:
                raise OssError(
                    "InvalidArgument",
                    "no such bucket access control exists",
                    ArgumentName="x-oss-acl",
                    ArgumentValue=acl,
                )
            self.state.set_bucket_acl(req.bucket, acl)
            return Response(status_code=200)
        if m == "DELETE":
            self.state.delete_bucket(req.bucket)
            return Response(status_code=204)
        if m == "POST" and "delete" in p:
            return await self.delete_multiple(req, request)
        raise OssError("MethodNotAllowed", Method=m, ResourceType="Bucket")

    async def object_op(self, req: OssRequest, principal: Principal, request: Request) -> Response:
        m, p = req.method, req.params
        check_key(req.key)
        bucket = self.state.require_bucket(req.bucket)
        _authorize(principal, bucket.acl, m in ("PUT", "POST", "DELETE"))
        if _UNSUPPORTED_OBJECT & p.keys():
            raise OssError("NotImplemented", "This object operation is not supported by the sandbox.")
        if m == "PUT":
            if "uploadId" in p:
                return await self.upload_part(req, principal, request)
            if "acl" in p:
                self.state.require_object(req.bucket, req.key)
                return Response(status_code=200)
            if req.header("x-oss-copy-source"):
                return await self.copy_object(req, principal)
            return await self.put_object(req, request)
        if m in ("GET", "HEAD"):
            if "uploadId" in p and m == "GET":
                return self.list_parts(req)
            if "acl" in p and m == "GET":
                self.state.require_object(req.bucket, req.key)
                return self.acl_doc("default")
            return self.get_object(req, head=(m == "HEAD"), meta_only="objectMeta" in p)
        if m == "POST":
            if "uploads" in p:
                return self.initiate_upload(req)
            if "uploadId" in p:
                return await self.complete_upload(req, request)
            raise OssError("MethodNotAllowed", Method=m, ResourceType="Object")
        if m == "DELETE":
            if "uploadId" in p:
                self.state.abort_upload(req.bucket, req.key, p["uploadId"])
                return Response(status_code=204)
            self.state.delete_object(req.bucket, req.key)
            return Response(status_code=204)
        raise OssError("MethodNotAllowed", Method=m, ResourceType="Object")

    # ---- service and buckets -------------------------------------------------------------------------------------
    def list_buckets(self, req: OssRequest) -> Response:
        prefix, marker = req.params.get("prefix", ""), req.params.get("marker", "")
        max_keys = _int_param(req, "max-keys", 100, 1, 1000)
        buckets, truncated = self.state.list_buckets(prefix, marker, max_keys)
        root = Element("ListAllMyBucketsResult")
        if any(k in req.params for k in ("prefix", "marker", "max-keys")):
            root.child("Prefix", prefix)
            root.child("Marker", marker)
            root.child("MaxKeys", max_keys)
            root.child("IsTruncated", str(truncated).lower())
            if truncated and buckets:
                root.child("NextMarker", buckets[-1].name)
        self._owner(root)
        items = root.child("Buckets")
        for b in buckets:
            node = items.child("Bucket")
            node.child("CreationDate", iso_ms(b.created))
            node.child("ExtranetEndpoint", self.svc.netloc)
            node.child("IntranetEndpoint", self.svc.netloc)
            node.child("Location", b.location)
            node.child("Name", b.name)
            node.child("Region", self.svc.region)
            node.child("StorageClass", b.storage_class)
        return xml_response(root)

    async def create_bucket(self, req: OssRequest, request: Request) -> Response:
        acl = req.header("x-oss-acl") or "private"
        if acl not in ACLS:
            raise OssError(
                "InvalidArgument",
                "no such bucket access control exists",
                ArgumentName="x-oss-acl",
                ArgumentValue=acl,
            )
        body = await _small_body(request)
        storage_class = "Standard"
        if body.strip():
            root = parse(body, "CreateBucketConfiguration")
            storage_class = text(root, "StorageClass") or "Standard"
            if storage_class not in ("Standard", "IA", "Archive", "ColdArchive", "DeepColdArchive"):
                raise OssError(
                    "InvalidArgument",
                    "Invalid storage class.",
                    ArgumentName="StorageClass",
                    ArgumentValue=storage_class,
                )
        self.state.create_bucket(req.bucket, acl=acl, storage_class=storage_class)
        return Response(status_code=200, headers={"Location": f"/{req.bucket}"})

    def bucket_info(self, req: OssRequest) -> Response:
        b = self.state.require_bucket(req.bucket)
        root = Element("BucketInfo")
        node = root.child("Bucket")
        node.child("AccessMonitor", "Disabled")
        node.child("CreationDate", iso_ms(b.created))
        node.child("CrossRegionReplication", "Disabled")
        node.child("DataRedundancyType", "LRS")
        node.child("ExtranetEndpoint", self.svc.netloc)
        node.child("IntranetEndpoint", self.svc.netloc)
        node.child("Location", b.location)
        node.child("Name", b.name)
        node.child("StorageClass", b.storage_class)
        node.child("TransferAcceleration", "Disabled")
        self._owner(node)
        node.child("AccessControlList").child("Grant", b.acl)
        node.child("Comment", "")
        return xml_response(root)

    def acl_doc(self, grant: str) -> Response:
        root = Element("AccessControlPolicy")
        self._owner(root)
        root.child("AccessControlList").child("Grant", grant)
        return xml_response(root)

    def list_objects(self, req: OssRequest, v2: bool) -> Response:
        p = req.params
        url = _encoding(req)
        enc = url_encode if url else (lambda s: s)
        prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
        max_keys = _int_param(req, "max-keys", 100, 1, 1000)
        if len(prefix.encode("utf-8")) > 1024:
            raise OssError("InvalidArgument", "prefix is too long.", ArgumentName="prefix")
        if len(delimiter) > 1:
            raise OssError(
                "InvalidArgument",
                "delimiter must be one character.",
                ArgumentName="delimiter",
                ArgumentValue=delimiter,
            )
        if v2:
            token = p.get("continuation-token", "")
            start_after = p.get("start-after", "")
            if token:
                try:
                    after = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode(
                        "utf-8"
                    )
                except (binascii.Error, UnicodeError, ValueError) as exc:
                    raise OssError(
                        "InvalidArgument",
                        "The continuation token provided is incorrect.",
                        ArgumentName="continuation-token",
                        ArgumentValue=token,
                    ) from exc
            else:
                after = start_after
        else:
            after = p.get("marker", "")
        contents, prefixes, truncated, last = self.state.list_objects(
            req.bucket, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys
        )
        root = Element("ListBucketResult")
        root.child("Name", req.bucket)
        root.child("Prefix", enc(prefix))
        if v2:
            if p.get("continuation-token"):
                root.child("ContinuationToken", p["continuation-token"])
            if p.get("start-after"):
                root.child("StartAfter", enc(p["start-after"]))
        else:
            root.child("Marker", enc(after))
        root.child("MaxKeys", max_keys)
        root.child("Delimiter", enc(delimiter))
        if url:
            root.child("EncodingType", "url")
        root.child("IsTruncated", str(truncated).lower())
        if truncated:
            if v2:
                root.child(
                    "NextContinuationToken", base64.urlsafe_b64encode(last.encode("utf-8")).decode("ascii")
                )
            else:
                root.child("NextMarker", enc(last))
        if v2:
            root.child("KeyCount", len(contents) + len(prefixes))
        with_owner = not v2 or p.get("fetch-owner", "").lower() == "true"
        for o in contents:
            node = root.child("Contents")
            node.child("Key", enc(o.key))
            node.child("LastModified", iso_ms(o.last_modified))
            node.child("ETag", f'"{o.etag}"')
            node.child("Type", o.object_type)
            node.child("Size", o.size)
            node.child("StorageClass", "Standard")
            if with_owner:
                self._owner(node)
        for cp in prefixes:
            root.child("CommonPrefixes").child("Prefix", enc(cp))
        return xml_response(root)

    async def delete_multiple(self, req: OssRequest, request: Request) -> Response:
        body = await _small_body(request)
        md5 = expected_md5(req.header("content-md5"))
        if md5 is not None and hashlib.md5(body).digest() != md5:
            raise OssError(
                "InvalidDigest",
                "The Content-MD5 you specified did not match what we received.",
                EC="0017-00000503",
            )
        root = parse(body, "Delete")
        quiet = (text(root, "Quiet") or "false").strip().lower() == "true"
        keys = [text(o, "Key") for o in root.findall("Object")]
        if not keys or len(keys) > 1000 or any(not k for k in keys):
            raise OssError("MalformedXML")
        url = _encoding(req)
        out = Element("DeleteResult")
        if url:
            out.child("EncodingType", "url")
        for key in keys:
            assert key is not None
            self.state.delete_object(req.bucket, key)
            if not quiet:
                out.child("Deleted").child("Key", url_encode(key) if url else key)
        return xml_response(out)

    # ---- objects -------------------------------------------------------------------------------------------------
    def _object_headers(self, info: ObjectInfo) -> dict[str, str]:
        h = {
            "ETag": f'"{info.etag}"',
            "Last-Modified": http_date(info.last_modified),
            "x-oss-object-type": info.object_type,
            "x-oss-storage-class": "Standard",
            "x-oss-hash-crc64ecma": str(info.crc64),
        }
        for k, v in info.meta.items():
            h[k] = v
        return h

    def get_object(self, req: OssRequest, head: bool, meta_only: bool) -> Response:
        info, path = self.state.require_object(req.bucket, req.key)
        headers = self._object_headers(info)
        if meta_only:  # GetObjectMeta: basic metadata only (oss2 object_exists / get_object_meta)
            headers = {k: headers[k] for k in ("ETag", "Last-Modified", "x-oss-hash-crc64ecma")}
            headers["Content-Length"] = str(info.size)
            headers["x-oss-last-access-time"] = http_date(info.last_modified)
            return Response(status_code=200, headers=headers)
        status = _preconditions(req, info)
        if status == 304:
            return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
        headers["Content-Type"] = info.content_type
        headers["Accept-Ranges"] = "bytes"
        for param, header in _RESPONSE_OVERRIDES.items():
            if req.params.get(param):
                headers[header] = req.params[param]
        standard = req.header("x-oss-range-behavior").lower() == "standard"
        span = parse_range(req.header("range"), info.size, standard)
        start, length, code = 0, info.size, 200
        if span is not None:
            start, length, code = span[0], span[1] - span[0] + 1, 206
            headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{info.size}"
        headers["Content-Length"] = str(length)
        if head:
            return Response(status_code=code, headers=headers)
        f = open(path, "rb")  # noqa: SIM115 - closed by iter_file
        return StreamingResponse(
            iter_file(f, start, length, self.svc.executor),
            status_code=code,
            headers=headers,
            media_type=None,
        )

    async def put_object(self, req: OssRequest, request: Request) -> Response:
        _check_length(req, MAX_OBJECT_SIZE)
        meta = _user_meta(req)  # refused before a byte of the body is read
        md5 = expected_md5(req.header("content-md5"))
        tmp = self.state.tmp_path()
        got = await receive_to_file(request, tmp, self.svc.executor, max_size=MAX_OBJECT_SIZE, md5=md5)
        try:
            info = self.state.commit_object(
                req.bucket,
                req.key,
                tmp,
                size=got.size,
                etag=got.etag,
                crc64=got.crc,
                content_type=req.header("content-type") or "application/octet-stream",
                meta=meta,
            )
        finally:
            tmp.unlink(missing_ok=True)
        return Response(
            status_code=200,
            headers={
                "ETag": f'"{info.etag}"',
                "Content-MD5": got.content_md5,
                "x-oss-hash-crc64ecma": str(info.crc64),
            },
        )

    async def copy_object(self, req: OssRequest, principal: Principal) -> Response:
        src_bucket, src_key = _copy_source(req.header("x-oss-copy-source"))
        directive = (req.header("x-oss-metadata-directive") or "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise OssError(
                "InvalidArgument",
                "Unknown metadata directive.",
                ArgumentName="x-oss-metadata-directive",
                ArgumentValue=directive,
            )
        src = self.state.require_bucket(src_bucket)
        _authorize(principal, src.acl, write=False)
        meta = _user_meta(req)
        info = await self._thread(
            lambda: self.state.copy_object(
                src_bucket,
                src_key,
                req.bucket,
                req.key,
                replace_meta=directive == "REPLACE",
                content_type=req.header("content-type") or None,
                meta=meta,
            )
        )
        root = Element("CopyObjectResult")
        root.child("ETag", f'"{info.etag}"')
        root.child("LastModified", iso_ms(info.last_modified))
        return xml_response(root, headers={"ETag": f'"{info.etag}"', "x-oss-hash-crc64ecma": str(info.crc64)})

    # ---- multipart -----------------------------------------------------------------------------------------------
    def initiate_upload(self, req: OssRequest) -> Response:
        url = _encoding(req)
        up = self.state.create_upload(
            req.bucket, req.key, req.header("content-type") or "application/octet-stream", _user_meta(req)
        )
        root = Element("InitiateMultipartUploadResult")
        root.child("Bucket", req.bucket)
        root.child("Key", url_encode(req.key) if url else req.key)
        root.child("UploadId", up.upload_id)
        if url:
            root.child("EncodingType", "url")
        return xml_response(root)

    def _part_number(self, req: OssRequest) -> int:
        number = _int_param(req, "partNumber", -1, 1, MAX_PART_NUMBER)
        if number == -1:
            raise OssError("InvalidArgument", "partNumber is required.", ArgumentName="partNumber")
        return number

    async def upload_part(self, req: OssRequest, principal: Principal, request: Request) -> Response:
        if partcopy.SOURCE in req.headers:
            return await self.upload_part_copy(req, principal)
        number = self._part_number(req)
        upload = self.state.require_upload(req.bucket, req.key, req.params["uploadId"])
        _check_length(req, MAX_PART_SIZE)
        md5 = expected_md5(req.header("content-md5"))
        tmp = self.state.tmp_path()
        got = await receive_to_file(request, tmp, self.svc.executor, max_size=MAX_PART_SIZE, md5=md5)
        try:
            part = self.state.commit_part(upload, number, tmp, size=got.size, etag=got.etag, crc64=got.crc)
        finally:
            tmp.unlink(missing_ok=True)
        return Response(
            status_code=200,
            headers={
                "ETag": f'"{part.etag}"',
                "Content-MD5": got.content_md5,
                "x-oss-hash-crc64ecma": str(part.crc64),
            },
        )

    async def upload_part_copy(self, req: OssRequest, principal: Principal) -> Response:
        """UploadPartCopy; the checks and their order are described in :mod:`.partcopy`."""
        number = self._part_number(req)
        partcopy.source_syntax(req.header(partcopy.SOURCE))
        src_bucket, src_key = _copy_source(req.header(partcopy.SOURCE))
        upload = self.state.require_upload(req.bucket, req.key, req.params["uploadId"])
        _authorize(principal, self.state.require_bucket(src_bucket).acl, write=False)
        part = await self._thread(partcopy.copy_part, self.state, upload, number, src_bucket, src_key, req)
        root = Element("CopyPartResult")
        root.child("LastModified", iso_ms(part.last_modified))
        root.child("ETag", f'"{part.etag}"')
        return xml_response(root, headers={"ETag": f'"{part.etag}"', "x-oss-hash-crc64ecma": str(part.crc64)})

    async def complete_upload(self, req: OssRequest, request: Request) -> Response:
        upload_id = req.params["uploadId"]
        self.state.require_upload(req.bucket, req.key, upload_id)
        body = await _small_body(request)
        requested: list[tuple[int, str]] | None
        if req.header("x-oss-complete-all").lower() == "yes":
            if body.strip():
                raise OssError(
                    "InvalidArgument",
                    "x-oss-complete-all cannot be used with a part list.",
                    ArgumentName="x-oss-complete-all",
                )
            requested = None
        else:
            root = parse(body, "CompleteMultipartUpload")
            requested = []
            for node in root.findall("Part"):
                num, etag = text(node, "PartNumber"), text(node, "ETag")
                if num is None or etag is None or ascii_uint(num.strip(), 5) is None:
                    raise OssError("MalformedXML")
                requested.append((int(num), etag))
        info = await self._thread(self.state.complete_upload, req.bucket, req.key, upload_id, requested)
        url = _encoding(req)
        root_out = Element("CompleteMultipartUploadResult")
        if url:
            root_out.child("EncodingType", "url")
        root_out.child("Location", f"{self.svc.endpoint}/{req.bucket}/{url_encode(req.key)}")
        root_out.child("Bucket", req.bucket)
        root_out.child("Key", url_encode(req.key) if url else req.key)
        root_out.child("ETag", f'"{info.etag}"')
        return xml_response(
            root_out, headers={"ETag": f'"{info.etag}"', "x-oss-hash-crc64ecma": str(info.crc64)}
        )

    def list_parts(self, req: OssRequest) -> Response:
        upload_id = req.params["uploadId"]
        self.state.require_upload(req.bucket, req.key, upload_id)
        marker = _int_param(req, "part-number-marker", 0, 0, MAX_PART_NUMBER)
        max_parts = _int_param(req, "max-parts", 1000, 1, 1000)
        parts, truncated = self.state.list_parts(upload_id, marker, max_parts)
        root = Element("ListPartsResult")
        root.child("Bucket", req.bucket)
        root.child("Key", req.key)
        root.child("UploadId", upload_id)
        root.child("PartNumberMarker", marker)
        root.child("NextPartNumberMarker", parts[-1].part_number if parts else marker)
        root.child("MaxParts", max_parts)
        root.child("IsTruncated", str(truncated).lower())
        for part in parts:
            node = root.child("Part")
            node.child("PartNumber", part.part_number)
            node.child("LastModified", iso_ms(part.last_modified))
            node.child("ETag", f'"{part.etag}"')
            node.child("HashCrc64ecma", part.crc64)
            node.child("Size", part.size)
        return xml_response(root)

    def list_uploads(self, req: OssRequest) -> Response:
        p = req.params
        url = _encoding(req)
        enc = url_encode if url else (lambda s: s)
        prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
        key_marker, id_marker = p.get("key-marker", ""), p.get("upload-id-marker", "")
        max_uploads = _int_param(req, "max-uploads", 1000, 1, 1000)
        uploads, truncated = self.state.list_uploads(req.bucket, prefix, key_marker, id_marker, max_uploads)
        common: list[str] = []
        shown = []
        for up in uploads:
            idx = up.key.find(delimiter, len(prefix)) if delimiter else -1
            if idx >= 0:
                cp = up.key[: idx + len(delimiter)]
                if cp not in common:
                    common.append(cp)
            else:
                shown.append(up)
        root = Element("ListMultipartUploadsResult")
        root.child("Bucket", req.bucket)
        if url:
            root.child("EncodingType", "url")
        root.child("KeyMarker", enc(key_marker))
        root.child("UploadIdMarker", id_marker)
        root.child("NextKeyMarker", enc(uploads[-1].key) if truncated and uploads else "")
        root.child("NextUploadIdMarker", uploads[-1].upload_id if truncated and uploads else "")
        root.child("Delimiter", enc(delimiter))
        root.child("Prefix", enc(prefix))
        root.child("MaxUploads", max_uploads)
        root.child("IsTruncated", str(truncated).lower())
        for up in shown:
            node = root.child("Upload")
            node.child("Key", enc(up.key))
            node.child("UploadId", up.upload_id)
            node.child("StorageClass", "Standard")
            node.child("Initiated", iso_ms(up.initiated))
        for cp in common:
            root.child("CommonPrefixes").child("Prefix", enc(cp))
        return xml_response(root)


# ---- helpers ---------------------------------------------------------------------------------------------------
async def _small_body(request: Request) -> bytes:
    """A request document (XML), refused beyond MAX_XML_BODY without reading it all."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_XML_BODY:
            raise OssError("MalformedXML", "The XML you provided is too large.")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_length(req: OssRequest, limit: int) -> None:
    raw = req.header("content-length")
    if raw and ascii_uint(raw) is not None and int(raw) > limit:
        raise OssError("EntityTooLarge", MaxSizeAllowed=str(limit), ProposedSize=raw)


def _copy_source(value: str) -> tuple[str, str]:
    """``x-oss-copy-source: /bucket/<url-quoted key>`` (oss2 ``copy_object`` quotes the key with ``safe=''``)."""
    value = value.split("?", 1)[0]
    raw = unquote(value)
    raw = raw[1:] if raw.startswith("/") else raw
    if "/" not in raw:
        raise OssError(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: /bucket/key.",
            ArgumentName="x-oss-copy-source",
            ArgumentValue=value,
        )
    bucket, key = raw.split("/", 1)
    if not bucket or not key:
        raise OssError(
            "InvalidArgument",
            "Copy Source must mention the source bucket and key: /bucket/key.",
            ArgumentName="x-oss-copy-source",
            ArgumentValue=value,
        )
    return bucket, key


def _preconditions(req: OssRequest, info: ObjectInfo) -> int:
    """HTTP conditional GET/HEAD as OSS applies it: 412 PreconditionFailed raised, 304 returned, else 200."""
    etag = f'"{info.etag}"'
    lm = int(info.last_modified)
    if_match = req.header("if-match")
    if if_match and if_match.strip() not in (etag, info.etag, "*"):
        raise OssError("PreconditionFailed", Condition="If-Match")
    since = req.header("if-unmodified-since")
    ts = parse_http_date(since) if since else None
    if ts is not None and lm > ts:
        raise OssError("PreconditionFailed", Condition="If-Unmodified-Since")
    none_match = req.header("if-none-match")
    if none_match and none_match.strip() in (etag, info.etag, "*"):
        return 304
    mod_since = req.header("if-modified-since")
    ts = parse_http_date(mod_since) if mod_since else None
    if ts is not None and lm <= ts:
        return 304
    return 200
