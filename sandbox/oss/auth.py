"""Request authentication: OSS signature V1, V2 and V4, headers or presigned URLs, checked against the account.

What is signed follows oss2 2.19.1 ``auth.py`` (and the OSS API reference "Include signatures in the Authorization
header" / "Signature Version 4"):

- V1 ``Authorization: OSS <AccessKeyId>:<base64 HMAC-SHA1>`` over ``VERB\\nContent-MD5\\nContent-Type\\nDate\\n`` +
  the sorted lower-cased ``x-oss-*`` headers as ``k:v\\n`` + the resource ``/bucket/key`` (``/bucket/`` for bucket
  operations, ``/`` for the service) followed by the signed sub-resources, sorted, as ``k=v`` or ``k``. The date is
  ``x-oss-date`` when present, else ``Date``. Presigned V1 URLs carry ``OSSAccessKeyId``, ``Expires`` and
  ``Signature``; ``Expires`` takes the place of the date.
- V2 ``Authorization: OSS2 AccessKeyId:..,AdditionalHeaders:..,Signature:..`` (HMAC-SHA256): like V1 but the
  resource is URI-encoded and every query parameter is signed.
- V4 ``Authorization: OSS4-HMAC-SHA256 Credential=<ak>/<yyyymmdd>/<region>/oss/aliyun_v4_request, Signature=<hex>
  [, AdditionalHeaders=a;b]``: a canonical request (method, URI-encoded ``/bucket/key`` keeping ``/``, every query
  parameter encoded and sorted, the ``x-oss-*``/``content-type``/``content-md5``/additional headers, the additional
  header names, ``x-oss-content-sha256``) hashed into ``OSS4-HMAC-SHA256\\n<x-oss-date>\\n<scope>\\n<sha256>`` and
  signed with the key derived ``aliyun_v4<secret>`` -> date -> region -> product -> ``aliyun_v4_request``.
  Presigned V4 URLs carry the same fields as ``x-oss-*`` query parameters.

Outcomes, with OSS's codes: unknown key id -> 403 InvalidAccessKeyId; wrong signature -> 403 SignatureDoesNotMatch
(with ``StringToSign`` and, for V4, ``CanonicalRequest`` as OSS adds them; never the secret); a date more than 15
minutes away -> 403 RequestTimeTooSkewed; an expired URL or an unsigned request to a private resource -> 403
AccessDenied. The secret is looked up per request with ``Accounts.secret_for``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ..accounts import Accounts
from ..strict import ascii_uint, same_secret
from .errors import OssError
from .wire import OssRequest, parse_http_date

MAX_SKEW_SECONDS = 15 * 60

# Query parameters that V1 signs ("sub-resources"): OSS API reference, "Construct the CanonicalizedResource";
# the same names oss2 signs (``ProviderAuth._subresource_key_set``).
SUBRESOURCES = frozenset(
    [
        "acl",
        "uploads",
        "location",
        "cors",
        "logging",
        "website",
        "referer",
        "lifecycle",
        "delete",
        "append",
        "tagging",
        "objectMeta",
        "uploadId",
        "partNumber",
        "security-token",
        "position",
        "img",
        "style",
        "styleName",
        "replication",
        "replicationProgress",
        "replicationLocation",
        "cname",
        "bucketInfo",
        "comp",
        "qos",
        "live",
        "status",
        "vod",
        "startTime",
        "endTime",
        "symlink",
        "x-oss-process",
        "response-content-type",
        "x-oss-traffic-limit",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "udf",
        "udfName",
        "udfImage",
        "udfId",
        "udfImageDesc",
        "udfApplication",
        "udfApplicationLog",
        "restore",
        "callback",
        "callback-var",
        "qosInfo",
        "policy",
        "stat",
        "encryption",
        "versions",
        "versioning",
        "versionId",
        "requestPayment",
        "x-oss-request-payer",
        "sequential",
        "inventory",
        "inventoryId",
        "continuation-token",
        "asyncFetch",
        "worm",
        "wormId",
        "wormExtend",
        "withHashContext",
        "x-oss-enable-md5",
        "x-oss-enable-sha1",
        "x-oss-enable-sha256",
        "x-oss-hash-ctx",
        "x-oss-md5-ctx",
        "transferAcceleration",
        "regionList",
        "cloudboxes",
        "x-oss-ac-source-ip",
        "x-oss-ac-subnet-mask",
        "x-oss-ac-vpc-id",
        "x-oss-ac-forward-allow",
        "metaQuery",
        "resourceGroup",
        "rtc",
        "accessPoint",
        "accessPointPolicy",
        "publicAccessBlock",
        "link",
        "group",
        "objectInfo",
        "referer",
        "httpsConfig",
    ]
)

_V4_SIGNED_PLAIN_HEADERS = ("content-type", "content-md5")


@dataclass(frozen=True)
class Principal:
    """Who made the request: an AccessKey id, or None for an anonymous request."""

    access_key_id: str | None
    method: str  # "v1", "v2", "v4", "v1-url", "v4-url", "anonymous"

    @property
    def anonymous(self) -> bool:
        return self.access_key_id is None


def _b64_hmac(secret: str, data: bytes, algo) -> str:
    return base64.b64encode(hmac.new(secret.encode("utf-8"), data, algo).digest()).decode("ascii")


def _uri_encode(text: str, keep_slash: bool) -> str:
    safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~."
    out = []
    for b in text.encode("utf-8"):
        if b in safe or (keep_slash and b == 0x2F):
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def _resource(req: OssRequest) -> str:
    return f"/{req.bucket}/{req.key}" if req.bucket else "/"


def _oss_headers(req: OssRequest, extra: set[str] = frozenset()) -> list[tuple[str, str]]:  # type: ignore[assignment]
    return sorted(
        (k.lower(), v) for k, v in req.headers.items() if k.lower().startswith("x-oss-") or k.lower() in extra
    )


def _secret(access_key_id: str, accounts: Accounts) -> str:
    secret = accounts.secret_for(access_key_id)
    if secret is None:
        raise OssError("InvalidAccessKeyId", OSSAccessKeyId=access_key_id)
    return secret


def _check_skew(ts: float | None, now: float) -> None:
    if ts is None:
        raise OssError("AccessDenied", "Invalid date or date not provided in the request.")
    if abs(now - ts) > MAX_SKEW_SECONDS:
        raise OssError(
            "RequestTimeTooSkewed",
            RequestTime=datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            ServerTime=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            MaxAllowedSkewMilliseconds=str(MAX_SKEW_SECONDS * 1000),
        )


def _mismatch(access_key_id: str, string_to_sign: str, provided: str, **more: str) -> OssError:
    return OssError(
        "SignatureDoesNotMatch",
        StringToSign=string_to_sign,
        SignatureProvided=provided,
        OSSAccessKeyId=access_key_id,
        **more,
    )


# ---- V1 ---------------------------------------------------------------------------------------------------------
def v1_string_to_sign(req: OssRequest, date: str) -> str:
    sub = sorted((k, v) for k, v in req.params_list if k in SUBRESOURCES)
    sub_str = ("?" + "&".join(f"{k}={v}" if v else k for k, v in sub)) if sub else ""
    headers = "".join(f"{k}:{v}\n" for k, v in _oss_headers(req))
    return "\n".join(
        [
            req.method,
            req.header("content-md5"),
            req.header("content-type"),
            date,
            headers + _resource(req) + sub_str,
        ]
    )


def _verify_v1(req: OssRequest, accounts: Accounts, value: str, now: float) -> Principal:
    cred = value[len("OSS ") :].strip()
    if ":" not in cred:
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    ak, provided = cred.rsplit(":", 1)
    secret = _secret(ak, accounts)
    date = req.header("x-oss-date") or req.header("date")
    _check_skew(parse_http_date(date) if date else None, now)
    sts = v1_string_to_sign(req, date)
    if not same_secret(_b64_hmac(secret, sts.encode("utf-8"), hashlib.sha1), provided):
        raise _mismatch(ak, sts, provided)
    return Principal(ak, "v1")


def _verify_v1_url(req: OssRequest, accounts: Accounts, now: float) -> Principal:
    ak = req.params["OSSAccessKeyId"]
    provided = req.params.get("Signature", "")
    expires = req.params.get("Expires", "")
    secret = _secret(ak, accounts)
    if ascii_uint(expires) is None:
        raise OssError("AccessDenied", "Invalid Expires parameter in the URL.")
    if int(expires) < now:
        raise OssError("AccessDenied", "Request has expired.", Expires=expires, ServerTime=str(int(now)))
    sts = v1_string_to_sign(req, expires)
    if not same_secret(_b64_hmac(secret, sts.encode("utf-8"), hashlib.sha1), provided):
        raise _mismatch(ak, sts, provided)
    return Principal(ak, "v1-url")


# ---- V2 ---------------------------------------------------------------------------------------------------------
def _verify_v2(req: OssRequest, accounts: Accounts, value: str, now: float) -> Principal:
    fields: dict[str, str] = {}
    for item in value[len("OSS2 ") :].split(","):
        if ":" in item:
            k, v = item.split(":", 1)
            fields[k.strip()] = v.strip()
    ak, provided = fields.get("AccessKeyId", ""), fields.get("Signature", "")
    if not ak or not provided:
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    secret = _secret(ak, accounts)
    date = req.header("date")
    _check_skew(parse_http_date(date) if date else None, now)
    additional = sorted(
        h.strip().lower() for h in fields.get("AdditionalHeaders", "").split(";") if h.strip()
    )
    headers = "".join(f"{k}:{v}\n" for k, v in _oss_headers(req, set(additional)))
    query = sorted((_uri_encode(k, False), _uri_encode(v, False)) for k, v in req.params_list)
    resource = _uri_encode(_resource(req), False)
    if query:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in query)
    sts = (
        "\n".join(
            [
                req.method,
                req.header("content-md5"),
                req.header("content-type"),
                date,
                headers + ";".join(additional),
            ]
        )
        + "\n"
        + resource
    )
    if not same_secret(_b64_hmac(secret, sts.encode("utf-8"), hashlib.sha256), provided):
        raise _mismatch(ak, sts, provided)
    return Principal(ak, "v2")


# ---- V4 ---------------------------------------------------------------------------------------------------------
def _v4_parse_time(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _v4_verify(
    req: OssRequest,
    accounts: Accounts,
    *,
    credential: str,
    provided: str,
    additional: list[str],
    date_time: str,
    payload_hash: str,
    skip_param: str | None,
    region: str,
) -> str:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aliyun_v4_request":
        raise OssError("InvalidArgument", "Invalid credential in Authorization header.")
    ak, day, cred_region, product, _ = parts
    secret = _secret(ak, accounts)
    if not date_time.startswith(day):
        raise OssError("InvalidArgument", "Invalid credential date: it must match x-oss-date.")
    extra = {h.strip().lower() for h in additional if h.strip()}
    canon_headers = "".join(f"{k}:{v}\n" for k, v in _oss_headers(req, extra | set(_V4_SIGNED_PLAIN_HEADERS)))
    query = sorted(
        (_uri_encode(k, False), _uri_encode(v, False)) for k, v in req.params_list if k != skip_param
    )
    canonical_request = "\n".join(
        [
            req.method,
            _uri_encode(_resource(req), True),
            "&".join(f"{k}={v}" if v else k for k, v in query),
            canon_headers,
            ";".join(sorted(extra)),
            payload_hash,
        ]
    )
    scope = f"{day}/{cred_region}/{product}/aliyun_v4_request"
    sts = "\n".join(
        ["OSS4-HMAC-SHA256", date_time, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    key = ("aliyun_v4" + secret).encode("utf-8")
    for item in (day, cred_region, product, "aliyun_v4_request"):
        key = hmac.new(key, item.encode("utf-8"), hashlib.sha256).digest()
    expected = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
    if not same_secret(expected, provided):
        raise _mismatch(ak, sts, provided, CanonicalRequest=canonical_request)
    if cred_region != region:
        raise OssError(
            "InvalidArgument",
            f"Invalid signing region in Authorization header: expected {region}.",
        )
    return ak


def _verify_v4(req: OssRequest, accounts: Accounts, value: str, now: float, region: str) -> Principal:
    fields: dict[str, str] = {}
    for item in value[len("OSS4-HMAC-SHA256 ") :].split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            fields[k.strip()] = v.strip()
    if "Credential" not in fields or "Signature" not in fields:
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    date_time = req.header("x-oss-date")
    _check_skew(_v4_parse_time(date_time), now)
    ak = _v4_verify(
        req,
        accounts,
        credential=fields["Credential"],
        provided=fields["Signature"],
        additional=fields.get("AdditionalHeaders", "").split(";"),
        date_time=date_time,
        payload_hash=req.header("x-oss-content-sha256") or "UNSIGNED-PAYLOAD",
        skip_param=None,
        region=region,
    )
    return Principal(ak, "v4")


def _verify_v4_url(req: OssRequest, accounts: Accounts, now: float, region: str) -> Principal:
    p = req.params
    date_time = p.get("x-oss-date", "")
    ts = _v4_parse_time(date_time)
    expires = p.get("x-oss-expires", "")
    if ts is None or ascii_uint(expires) is None:
        raise OssError("AccessDenied", "Invalid x-oss-date or x-oss-expires in the URL.")
    if ts + int(expires) < now:
        raise OssError("AccessDenied", "Request has expired.")
    ak = _v4_verify(
        req,
        accounts,
        credential=p.get("x-oss-credential", ""),
        provided=p.get("x-oss-signature", ""),
        additional=p.get("x-oss-additional-headers", "").split(";"),
        date_time=date_time,
        payload_hash="UNSIGNED-PAYLOAD",
        skip_param="x-oss-signature",
        region=region,
    )
    return Principal(ak, "v4-url")


def authenticate(req: OssRequest, accounts: Accounts, region: str, now: float | None = None) -> Principal:
    """Verify the request's signature, if any. Raises OssError; an unsigned request yields the anonymous principal."""
    now = time.time() if now is None else now
    value = req.header("authorization")
    if value:
        if value.startswith("OSS4-HMAC-SHA256 "):
            return _verify_v4(req, accounts, value, now, region)
        if value.startswith("OSS2 "):
            return _verify_v2(req, accounts, value, now)
        if value.startswith("OSS "):
            return _verify_v1(req, accounts, value, now)
        raise OssError("InvalidArgument", "Authorization header is invalid.")
    if "OSSAccessKeyId" in req.params:
        return _verify_v1_url(req, accounts, now)
    if req.params.get("x-oss-signature-version") == "OSS4-HMAC-SHA256":
        return _verify_v4_url(req, accounts, now, region)
    return Principal(None, "anonymous")
