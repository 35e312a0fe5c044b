"""Recording core/v1 Events the way client-go's event recorder does, with its correlation.

:class:`EventRecorder` is what a component (kubelet, controllers, the HPA, the cluster-autoscaler) records Events
through (``kube.events.record(involved, type, reason, message, component=..., host=...)``). As client-go's
``tools/record`` ``EventCorrelator``: an Event identical to one recorded for the same object within the last
10 minutes (same involved object, type, reason and message) is not created again; the existing Event's ``count``
goes up by one and its ``lastTimestamp`` moves to now, written as a patch, as ``recordToSink`` does. Otherwise a new
Event named ``<object>.<hex nanoseconds>`` is created with ``source``/``reportingComponent`` set to the component.
Every write goes through the store's verbs (validation, resourceVersion, managedFields, watch).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import KubeStore

# client-go record.EventCorrelator: identical events within this window are aggregated into one (count + 1)
CORRELATION_WINDOW = 600.0


def _ts(s: str) -> float:
    dt = datetime.fromisoformat(s)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class EventRecorder:
    def __init__(self, store: KubeStore) -> None:
        self.store = store

    def record(self, involved: dict[str, Any], type: str, reason: str, message: str, *,
               component: str = "sandbox", host: str | None = None) -> dict[str, Any]:
        """Record an Event about ``involved`` (an object as read from the store); returns the Event written."""
        store = self.store
        meta = involved.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        ref = {"kind": involved.get("kind"), "namespace": meta.get("namespace"), "name": meta.get("name"),
               "uid": meta.get("uid"), "apiVersion": involved.get("apiVersion"),
               "resourceVersion": meta.get("resourceVersion")}
        ref = {k: v for k, v in ref.items() if v}
        now = store.now()
        now_ts = store.clock.now()
        for e in store.indexed("events", "involvedObject.uid", (ref.get("uid"),)):
            ev = e.obj
            if ev["metadata"].get("namespace", "") != ns:
                continue
            io = ev.get("involvedObject") or {}
            if (io.get("uid") == ref.get("uid") and io.get("name") == ref.get("name") and ev.get("reason") == reason
                    and ev.get("message") == message and ev.get("type") == type
                    and now_ts - _ts(ev.get("lastTimestamp") or now) < CORRELATION_WINDOW):
                out, _ = store.patch("events", ns, ev["metadata"]["name"],
                                     {"count": (ev.get("count") or 1) + 1, "lastTimestamp": now}, "merge",
                                     field_manager=component)
                return out
        name = f"{meta.get('name', 'unknown')}.{int(time.time_ns()) & 0xFFFFFFFFFFFFFFFF:x}"
        source = {"component": component}
        if host:
            source["host"] = host
        ev = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
              "involvedObject": ref, "reason": reason, "message": message, "type": type, "source": source,
              "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": component,
              "reportingInstance": host or ""}
        return store.create("events", ev, ns, field_manager=component)
