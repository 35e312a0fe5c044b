"""OSS error codes, their HTTP statuses and the XML error document.

Codes and statuses are the ones OSS documents (OSS API reference "Error responses" / "HTTP status code 4xx" pages)
and that oss2 maps to exception classes by ``(status, Code)`` (oss2 2.19.1 ``exceptions.py``). The body is
``<Error><Code/><Message/><RequestId/><HostId/>...</Error>``; extra elements (``Key``, ``BucketName``, ``UploadId``,
``OSSAccessKeyId``, ``StringToSign``, ...) are added per error as OSS does. HEAD responses cannot carry a body, so
OSS sends the same document base64-encoded in the ``x-oss-err`` header, which ``oss2.exceptions.make_exception``
decodes.
"""

from __future__ import annotations

_STATUS: dict[str, int] = {
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "BucketAlreadyExists": 409,
    "BucketNotEmpty": 409,
    "InvalidBucketName": 400,
    "InvalidObjectName": 400,
    "InvalidArgument": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "EntityTooSmall": 400,
    "EntityTooLarge": 400,
    "MalformedXML": 400,
    "InvalidRequest": 400,
    "MissingContentLength": 411,
    "InvalidRange": 416,
    "PreconditionFailed": 412,
    "MethodNotAllowed": 405,
    "NotImplemented": 400,  # oss2 maps (400, "NotImplemented")
    "InternalError": 500,
}

_MESSAGE: dict[str, str] = {
    "AccessDenied": "You have no right to access this object because of bucket acl.",
    "InvalidAccessKeyId": "The OSS Access Key Id you provided does not exist in our records.",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.",
    "RequestTimeTooSkewed": "The difference between the request time and the current time is too large.",
    "NoSuchBucket": "The specified bucket does not exist.",
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchUpload": "The specified upload does not exist. The upload ID may be invalid, or the upload may have "
    "been aborted or completed.",
    "BucketAlreadyExists": "The requested bucket name is not available. The bucket namespace is shared by all users "
    "of the system. Please select a different name and try again.",
    "BucketNotEmpty": "The bucket you tried to delete is not empty.",
    "InvalidBucketName": "The specified bucket is not valid.",
    "InvalidObjectName": "The specified object is not valid.",
    "InvalidArgument": "Invalid argument.",
    "InvalidDigest": "The Content-MD5 you specified was invalid.",
    "InvalidPart": "One or more of the specified parts could not be found or the specified entity tag might not "
    "have matched the part's entity tag.",
    "InvalidPartOrder": "The list of parts was not in ascending order. Parts list must specified in order by part "
    "number.",
    "EntityTooSmall": "Your proposed upload smaller than the minimum allowed size.",
    "EntityTooLarge": "Your proposed upload exceeds the maximum allowed size.",
    "MalformedXML": "The XML you provided was not well-formed or did not validate against our published schema.",
    "InvalidRequest": "Invalid request.",
    "MissingContentLength": "You must provide the Content-Length HTTP header.",
    "InvalidRange": "The requested range cannot be satisfied",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold.",
    "MethodNotAllowed": "The specified method is not allowed against this resource.",
    "NotImplemented": "A header you provided implies functionality that is not implemented.",
    "InternalError": "We encountered an internal error. Please try again.",
}


class OssError(Exception):
    """An error answered to the client as OSS would: status, ``Code``, ``Message`` and extra elements."""

    def __init__(
        self, code: str, message: str | None = None, *, status: int | None = None, **extra: str
    ) -> None:
        self.code = code
        self.status = status or _STATUS.get(code, 400)
        self.message = message or _MESSAGE.get(code, code)
        self.extra = {k: str(v) for k, v in extra.items()}
        super().__init__(f"{self.status} {code}: {self.message}")


def render_error(err: OssError, request_id: str, host_id: str) -> bytes:
    from .xml import Element, to_bytes

    root = Element("Error")
    root.child("Code", err.code)
    root.child("Message", err.message)
    root.child("RequestId", request_id)
    root.child("HostId", host_id)
    for k, v in err.extra.items():
        root.child(k, v)
    return to_bytes(root)
