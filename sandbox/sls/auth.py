"""SLS request signature, version 1 (``Authorization: LOG <AccessKeyId>:<signature>``), verified as SLS does.

The string to sign, as aliyun-log-python-sdk ``aliyun/log/auth.py`` ``AuthV1.sign_request`` builds it::

    VERB "\n" Content-MD5 "\n" Content-Type "\n" Date "\n" CanonicalizedLOGHeaders CanonicalizedResource

- ``Content-MD5``: the upper-case hex MD5 of the body (``Util.cal_md5``), empty without a body; the server
  computes it from the body it received, so a body that is not the one signed fails the signature;
- ``Date``: the ``Date`` header (RFC 822, GMT); the SDK copies it to ``x-log-date`` *after* signing (for proxies
  that drop ``Date``), so ``x-log-date`` is the date when present and is not itself a signed header;
- ``CanonicalizedLOGHeaders``: every ``x-log-*`` (except ``x-log-meta-*``) and ``x-acs-*`` header,
  ``name:value\n``, sorted by name (``Util.canonicalized_log_headers``);
- ``CanonicalizedResource``: the path, then ``?`` and the query parameters ``k=v`` sorted by key and joined by
  ``&``, values URL-decoded (``Util.canonicalized_resource``);
- signature: base64 of HMAC-SHA1 with the AccessKey secret.

A request more than 15 minutes away from the server's time is refused (``RequestTimeExpired``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from email.utils import parsedate_to_datetime

from ..accounts import Accounts
from ..strict import same_secret
from .errors import SlsError

MAX_SKEW_SECONDS = 15 * 60


def content_md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest().upper() if body else ""


def string_to_sign(method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                   body: bytes) -> str:
    date = headers.get("x-log-date") or headers.get("date", "")
    log_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items())
                          if (k.startswith("x-log-") and not k.startswith("x-log-meta-") and k != "x-log-date")
                          or k.startswith("x-acs-"))
    resource = path
    if query:
        resource += "?" + "&".join(f"{k}={v}" for k, v in sorted(query))
    return f"{method}\n{content_md5(body)}\n{headers.get('content-type', '')}\n{date}\n{log_headers}{resource}"


def authenticate(accounts: Accounts, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str],
                 body: bytes, now: float | None = None) -> str:
    """The AccessKey id of a correctly signed request; raises :class:`SlsError` otherwise."""
    auth = headers.get("authorization", "")
    if not auth.startswith("LOG ") or ":" not in auth:
        raise SlsError(401, "Unauthorized", "The AccessKeyId is unauthorized.") if not auth else \
            SlsError(400, "ParameterInvalid", "Http extend authorization : authorization pair is invalid.")
    ak, _, signature = auth[4:].rpartition(":")
    date = headers.get("x-log-date") or headers.get("date", "")
    try:
        when = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError):
        raise SlsError(400, "InvalidRequestTime", f"Request time {date} not follow RFC822 spec.") from None
    server = time.time() if now is None else now
    if abs(server - when) > MAX_SKEW_SECONDS:
        raise SlsError(400, "RequestTimeExpired", f"Request time {date} has been expired while server time is "
                       f"{time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(server))}.")
    secret = accounts.secret_for(ak.strip())
    if secret is None:
        raise SlsError(401, "Unauthorized", "The AccessKeyId is unauthorized.")
    expected = base64.b64encode(hmac.new(secret.encode(), string_to_sign(method, path, query, headers, body)
                                         .encode(), hashlib.sha1).digest()).decode()
    if not same_secret(expected, signature):  # bytes: a non-ASCII signature is a mismatch, not an error
        raise SlsError(401, "SignatureNotMatch", f"Signature {signature} not matched.")
    return ak.strip()
