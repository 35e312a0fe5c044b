"""Conversion between the versions that share one storage: ``events.k8s.io/v1`` Events are stored as core/v1
Events (as the real server does, ``pkg/apis/events/v1/conversion.go``)."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType

# events.k8s.io/v1 field -> core/v1 field
_EVENT_FIELDS = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}


def to_storage(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    if rt.key != "events" or rt.group != "events.k8s.io":
        return obj
    out = {_EVENT_FIELDS.get(k, k): v for k, v in obj.items()}
    out["apiVersion"], out["kind"] = "v1", "Event"
    return out


def from_storage(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    if rt.key != "events" or rt.group != "events.k8s.io":
        return obj
    back = {v: k for k, v in _EVENT_FIELDS.items()}
    out = {back.get(k, k): v for k, v in obj.items()}
    out["apiVersion"], out["kind"] = rt.api_version, rt.kind
    return out
