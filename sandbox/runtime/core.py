"""The model server's servable bookkeeping: version states per model, labels, and handle lookup.

Mirrors what TF Serving's REST handlers ask ``ServerCore`` for:

- status (``get_model_status_impl.cc``): every version the servable state monitor knows, newest first, each with
  ``state`` (START, LOADING, AVAILABLE, UNLOADING, END) and ``status`` (``error_code``/``error_message``); errors
  ``Could not find any versions of model <m>`` / ``Could not find version <v> of model <m>`` (NOT_FOUND);
- handles (``core/basic_manager.cc``, ``core/manager.h``): ``Latest(<m>)`` = the newest AVAILABLE version,
  ``Specific(<m>, <v>)``; otherwise NOT_FOUND ``Servable not found for request: Latest(<m>)``;
- labels (``server_core.cc`` ``GetModelVersionForLabel``): ``Unrecognized servable version label: <l>``
  (INVALID_ARGUMENT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .servables import Servable
from .tensors import ApiError

STATES = ("UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclass
class VersionState:
    version: int
    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None


@dataclass
class ServerCore:
    models: dict[str, dict[int, VersionState]] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)

    def version_state(self, model: str, version: int) -> VersionState:
        return self.models.setdefault(model, {}).setdefault(version, VersionState(version))

    def available(self, model: str) -> list[int]:
        return sorted((v for v, s in self.models.get(model, {}).items() if s.state == "AVAILABLE"), reverse=True)

    def resolve(self, model: str, version: int | None, label: str | None) -> int | None:
        """The version a request names (None = latest)."""
        if label is not None:
            v = self.labels.get(model, {}).get(label)
            if v is None:
                raise ApiError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            return v
        return version

    def handle(self, model: str, version: int | None, label: str | None = None) -> tuple[int, Servable]:
        v = self.resolve(model, version, label)
        if v is None:
            avail = self.available(model)
            if not avail:
                raise ApiError("NOT_FOUND", f"Servable not found for request: Latest({model})")
            v = avail[0]
        st = self.models.get(model, {}).get(v)
        if st is None or st.state != "AVAILABLE" or st.servable is None:
            raise ApiError("NOT_FOUND", f"Servable not found for request: Specific({model}, {v})")
        return v, st.servable

    def status(self, model: str, version: int | None, label: str | None = None) -> dict[str, Any]:
        """``GetModelStatusImpl::GetModelStatusWithModelSpec``: 200 for every version the state monitor knows, in
        whatever state (START, LOADING, AVAILABLE, UNLOADING, END), each with its ``status`` (``error_code`` as the
        ``tensorflow.error.Code`` name, ``error_message``; ``StatusProto`` json_names, printed with
        ``always_print_fields_with_no_presence``, ``http_rest_api_util.cc`` ``ToJsonString``); NOT_FOUND only for a
        version or a model it does not know. A label is not resolved there (only ``has_version()`` is looked at),
        so ``/labels/<l>`` answers every version, as TF Serving does."""
        v = version
        known = self.models.get(model, {})
        if v is not None:
            if v not in known:
                raise ApiError("NOT_FOUND", f"Could not find version {v} of model {model}")
            states = [known[v]]
        else:
            if not known:
                raise ApiError("NOT_FOUND", f"Could not find any versions of model {model}")
            states = [known[k] for k in sorted(known, reverse=True)]
        return {"model_version_status": [
            {"version": str(s.version), "state": s.state,
             "status": {"error_code": s.error_code, "error_message": s.error_message}} for s in states]}
