"""Small helpers shared by the controllers: timestamps, Go-style durations, conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def ts(iso: str | None) -> float:
    """RFC 3339 (``2026-01-02T03:04:05Z``, fractional seconds allowed) to a Unix timestamp; 0 when empty."""
    if not iso:
        return 0.0
    s = iso.rstrip("Z")
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(s, fmt).replace(tzinfo=UTC).timestamp()


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String()`` prints it after ``Truncate(time.Millisecond)``
    (``29.1s``, ``1m2.5s``, ``850ms``, ``0s``)."""
    ms = int(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s = f"{rem / 1000:.3f}".rstrip("0").rstrip(".")
    out = f"{s}s"
    if h:
        return f"{h}h{m}m{out}"
    if m:
        return f"{m}m{out}"
    return out


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in ((obj.get("status") or {}).get("conditions")) or []:
        if c.get("type") == type_:
            return c
    return None


def set_condition(conds: list[dict[str, Any]], new: dict[str, Any], now_iso: str) -> list[dict[str, Any]]:
    """Replace the condition of ``new["type"]``; ``lastTransitionTime`` moves only when the status flips."""
    out = []
    found = False
    for c in conds:
        if c.get("type") == new["type"]:
            found = True
            merged = dict(new)
            merged["lastTransitionTime"] = c.get("lastTransitionTime") or now_iso \
                if c.get("status") == new.get("status") else now_iso
            out.append(merged)
        else:
            out.append(c)
    if not found:
        out.append(dict(new, lastTransitionTime=now_iso))
    return out


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None
