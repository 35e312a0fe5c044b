"""Signature verification for the ACK OpenAPI (ROA): the classic HMAC-SHA1 scheme and ACS3-HMAC-SHA256.

Classic ROA, as ``aliyunsdkcore`` 2.16 composes it (``auth/composer/roa_signature_composer.py``,
``request.py`` ``RoaRequest.get_signed_header``)::

    Authorization: acs <AccessKeyId>:base64(HMAC-SHA1(secret, string_to_sign))
    string_to_sign = METHOD\\n Accept\\n Content-MD5\\n Content-Type\\n Date\\n
                     + every x-acs-* header, lower-cased, sorted, "k:v\\n"
                     + path + "?" + sorted query "k=v" joined by "&" (RAW values, not url-encoded)

``Date`` is RFC 2616 GMT (``utils/parameter_helper.get_rfc_2616_date``). ``Content-MD5`` = base64(md5(body)) is
sent whenever there is a body and is verified here against the body (it is the only thing binding the body to the
signature). ``RegionId`` travels in the query and is signed like any other parameter; the URL carries the query
url-encoded (``urlencode``), so it is decoded before the string to sign is rebuilt.

ACS3-HMAC-SHA256, as ``alibabacloud_tea_openapi`` 0.4.6 composes it (``utils.py`` ``get_authorization``,
``get_canonical_query_string``, ``get_canonicalized_headers``)::

    Authorization: ACS3-HMAC-SHA256 Credential=<AK>,SignedHeaders=h1;h2,Signature=hex(HMAC-SHA256(secret, sts))
    canonical = METHOD\\n path(as sent, encoded)\\n sorted "k=quote(v, safe='~')" joined by "&"\\n
                "h:v\\n" per signed header (lower-cased, sorted, values trimmed; repeated values sorted, joined by ",")
                \\n "h1;h2"\\n x-acs-content-sha256
    sts = "ACS3-HMAC-SHA256\\n" + hex(sha256(canonical))

``x-acs-content-sha256`` must equal hex(sha256(body)); ``x-acs-date`` (ISO 8601 UTC) must be within 15 minutes;
``x-acs-signature-nonce`` must not repeat within that window.

Replays: in both schemes a signed ``x-acs-signature-nonce`` seen before within the 15-minute window is refused with
400 ``SignatureNonceUsed`` ("Specified signature nonce was used already."). Alibaba Cloud's ROA "Signature
Mechanism" page lists ``x-acs-signature-nonce`` among the classic scheme's headers, "a unique random number used to
prevent network replay attacks"; ``aliyunsdkcore`` 2.16 does not send one, and the "Common parameters" page of ROA
APIs marks it optional, so a classic request without it is still accepted (its ``Date`` bounds its replay to the
window); ``clients/ack.py`` sends one with every call. Signatures are compared as bytes, so a signature of any
characters is a mismatch, never an error.

Errors: see :mod:`sandbox.ack.errors`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, unquote_plus

from ..strict import same_secret
from .errors import AckError

MAX_SKEW = 15 * 60  # seconds, both schemes
_ACS3_RE = re.compile(r"^ACS3-HMAC-SHA256\s+Credential=([^,]+),\s*SignedHeaders=([^,]*),\s*Signature=([0-9a-fA-F]+)$")

SIG_MISMATCH = "Specified signature is not matched with our calculation."


def parse_query(raw_query: str) -> list[tuple[str, str | None]]:
    """Query pairs from the raw query string, decoded (``+`` is a space, as ``urlencode`` writes it).
    A parameter without ``=`` has the value None."""
    out: list[tuple[str, str | None]] = []
    if not raw_query:
        return out
    for part in raw_query.split("&"):
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            out.append((unquote_plus(k), unquote_plus(v)))
        else:
            out.append((unquote_plus(part), None))
    return out


def classic_string_to_sign(method: str, headers: Mapping[str, str], path: str,
                           query: Sequence[tuple[str, str | None]]) -> str:
    """The classic ROA string to sign (roa_signature_composer.compose_string_to_sign)."""
    lower = {k.lower(): v for k, v in headers.items()}
    sts = method.upper() + "\n"
    for name in ("accept", "content-md5", "content-type", "date"):
        sts += lower.get(name, "") + "\n"
    for k in sorted(k for k in lower if k.startswith("x-acs-")):
        sts += f"{k}:{lower[k]}\n"
    sts += path
    pairs = sorted(query, key=lambda kv: kv[0])
    if pairs:
        sts += "?" + "&".join(k if v is None else f"{k}={v}" for k, v in pairs)
    return sts


def acs3_canonical_request(method: str, encoded_path: str, query: Sequence[tuple[str, str | None]],
                           header_values: Mapping[str, list[str]], signed: Sequence[str], payload_hash: str) -> str:
    q = {k: v for k, v in query if v is not None}
    canon_query = "&".join(f"{k}={quote(q[k], safe='~')}" for k in sorted(q))
    canon_headers = "".join(f"{h}:{','.join(sorted(v.strip() for v in header_values.get(h, [])))}\n"
                            for h in signed)
    return f"{method.upper()}\n{encoded_path or '/'}\n{canon_query}\n{canon_headers}\n{';'.join(signed)}\n{payload_hash}"


class NonceCache:
    """Nonces seen within the skew window (bounded)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def use(self, nonce: str, now: float) -> bool:
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now - MAX_SKEW or len(self._seen) > self._limit):
                self._seen.popitem(last=False)
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


class Verifier:
    def __init__(self, secret_for: Callable[[str], str | None], now: Callable[[], float] = time.time) -> None:
        self._secret_for = secret_for
        self._now = now
        self._nonces = NonceCache()

    def verify(self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
               header_lists: Mapping[str, list[str]], body: bytes) -> str:
        """Check the request's signature; returns the AccessKey id or raises :class:`AckError`."""
        auth = headers.get("authorization")
        if not auth:
            raise AckError(400, "MissingAuthorization",
                           "The request has no Authorization header: every ACK OpenAPI call must be signed.")
        if auth.startswith("acs "):
            return self._classic(method, raw_path, raw_query, headers, body, auth)
        if auth.startswith("ACS3-HMAC-SHA256"):
            return self._acs3(method, raw_path, raw_query, headers, header_lists, body, auth)
        raise AckError(400, "IncompleteSignature",
                       "The request signature does not conform to Aliyun standards: unsupported Authorization "
                       "scheme (expected 'acs AK:signature' or 'ACS3-HMAC-SHA256 Credential=...').")

    def _secret(self, ak: str) -> str:
        secret = self._secret_for(ak) if ak else None
        if secret is None:
            raise AckError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        return secret

    def _check_time(self, when: float | None, what: str) -> None:
        if when is None:
            raise AckError(400, "InvalidTimeStamp.Expired",
                           f"Specified time stamp or date value is expired: {what} is missing or malformed.")
        if abs(self._now() - when) > MAX_SKEW:
            raise AckError(400, "InvalidTimeStamp.Expired",
                           f"Specified time stamp or date value is expired: {what} is more than 15 minutes away "
                           "from the server time.")

    def _classic(self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes,
                 auth: str) -> str:
        cred = auth[4:].strip()
        if ":" not in cred:
            raise AckError(400, "IncompleteSignature",
                           "The request signature does not conform to Aliyun standards: expected 'acs AK:signature'.")
        ak, signature = cred.rsplit(":", 1)
        secret = self._secret(ak)
        date = headers.get("date")
        when = None
        if date:
            try:
                when = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError, IndexError):
                when = None
        self._check_time(when, "Date")
        if body:
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            if headers.get("content-md5") != md5:
                raise AckError(400, "ContentMD5NotMatched",
                               "The Content-MD5 header does not match the MD5 of the request body: the body was "
                               "altered or the header is missing.")
        sts = classic_string_to_sign(method, headers, unquote(raw_path), parse_query(raw_query))
        expected = base64.b64encode(hmac.new(secret.encode(), sts.encode(), hashlib.sha1).digest()).decode()
        if not same_secret(expected, signature):
            raise AckError(400, "SignatureDoesNotMatch", f"{SIG_MISMATCH} server string to sign is:{sts}")
        nonce = headers.get("x-acs-signature-nonce")
        if nonce is not None:
            self._use_nonce(nonce)
        return ak

    def _use_nonce(self, nonce: str) -> None:
        if not self._nonces.use(nonce, self._now()):
            raise AckError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")

    def _acs3(self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
              header_lists: Mapping[str, list[str]], body: bytes, auth: str) -> str:
        m = _ACS3_RE.match(auth.strip())
        if not m:
            raise AckError(400, "IncompleteSignature",
                           "The request signature does not conform to Aliyun standards: expected "
                           "'ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=...,Signature=...'.")
        ak, signed_str, signature = m.group(1), m.group(2), m.group(3).lower()
        secret = self._secret(ak)
        signed = [h.strip().lower() for h in signed_str.split(";") if h.strip()]
        if signed != sorted(signed):
            raise AckError(400, "IncompleteSignature", "SignedHeaders must be lower-case and sorted.")
        missing = [h for h in ("host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")
                   if h not in signed or h not in headers]
        unsigned = sorted(h for h in headers if h.lower().startswith("x-acs-") and h.lower() not in signed)
        if missing or unsigned:
            raise AckError(400, "IncompleteSignature",
                           "The request signature does not conform to Aliyun standards: "
                           + (f"headers not signed or absent: {', '.join(missing + unsigned)}"))
        when = None
        try:
            parsed = datetime.fromisoformat(headers["x-acs-date"].replace("Z", "+00:00"))
            when = parsed.timestamp() if parsed.tzinfo is not None else None
        except ValueError:
            pass
        self._check_time(when, "x-acs-date")
        payload_hash = hashlib.sha256(body).hexdigest()
        if headers["x-acs-content-sha256"].lower() != payload_hash:
            raise AckError(400, "SignatureDoesNotMatch",
                           f"{SIG_MISMATCH} x-acs-content-sha256 does not match the SHA-256 of the request body:"
                           f" {headers['x-acs-content-sha256']}")
        canonical = acs3_canonical_request(method, raw_path, parse_query(raw_query), header_lists, signed,
                                           headers["x-acs-content-sha256"])
        sts = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest()
        if not same_secret(expected, signature):
            raise AckError(400, "SignatureDoesNotMatch", f"{SIG_MISMATCH} server string to sign is:{sts}")
        self._use_nonce(headers["x-acs-signature-nonce"])
        return ak
