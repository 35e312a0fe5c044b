"""Kubernetes ``Status`` errors, as the API server renders them.

Shape and reasons follow apimachinery ``pkg/api/errors/errors.go`` (``NewNotFound``, ``NewAlreadyExists``,
``NewConflict``, ``NewInvalid``, ``NewBadRequest``, ``NewUnauthorized``, ``NewMethodNotSupported``,
``NewResourceExpired``, ``NewUnsupportedMediaType``) and ``metav1.Status``.
"""

from __future__ import annotations

from typing import Any


class KubeError(Exception):
    """An API error; ``status()`` is the ``metav1.Status`` body, ``code`` the HTTP status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = {}
        if name is not None:
            self.details["name"] = name
        if group:
            self.details["group"] = group
        if kind is not None:
            self.details["kind"] = kind
        if causes:
            self.details["causes"] = causes
        if retry_after is not None:
            self.details["retryAfterSeconds"] = retry_after

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> KubeError:
    return KubeError(404, "NotFound", f'{_qualified(resource, group)} "{name}" not found',
                     name=name, group=group, kind=resource)


def already_exists(resource: str, group: str, name: str) -> KubeError:
    return KubeError(409, "AlreadyExists", f'{_qualified(resource, group)} "{name}" already exists',
                     name=name, group=group, kind=resource)


def conflict(resource: str, group: str, name: str, why: str) -> KubeError:
    return KubeError(409, "Conflict",
                     f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
                     name=name, group=group, kind=resource)


def stale(resource: str, group: str, name: str) -> KubeError:
    return conflict(resource, group, name,
                    "the object has been modified; please apply your changes to the latest version and try again")


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> KubeError:
    """422 Invalid. Each cause is ``{"reason": "FieldValueInvalid"|..., "message": ..., "field": ...}``."""
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return KubeError(422, "Invalid", f'{_qualified(kind, group)} "{name}" is invalid: {summary}',
                     name=name, group=group, kind=kind, causes=causes)


def bad_request(message: str) -> KubeError:
    return KubeError(400, "BadRequest", message)


def unauthorized() -> KubeError:
    return KubeError(401, "Unauthorized", "Unauthorized")


def method_not_allowed(verb: str, resource: str, group: str) -> KubeError:
    return KubeError(405, "MethodNotAllowed",
                     f"{verb} is not supported on resources of kind \"{_qualified(resource, group)}\"")


def expired(message: str = "too old resource version") -> KubeError:
    return KubeError(410, "Expired", message)


def unsupported_media_type(content_type: str) -> KubeError:
    return KubeError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                     f"accepted media types include: application/json-patch+json, application/merge-patch+json, "
                     f"application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type})")


def field_cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}
