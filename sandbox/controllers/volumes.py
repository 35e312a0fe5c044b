"""The PV/PVC binder (``persistentvolume-controller``), after ``pkg/controller/volume/persistentvolume/
pv_controller.go`` (static binding only: the sandbox has no provisioner and no StorageClass).

- A claim with ``spec.volumeName`` binds to that PV when the PV is not bound to another claim and matches:
  ``storageClassName`` equal (unset and ``""`` are the same "no class"), the claim's ``accessModes`` offered by the
  PV, the PV's capacity >= the claim's request, ``volumeMode`` equal. A mismatch records a Warning
  ``VolumeMismatch`` ("Cannot bind to requested volume \"x\": ..."); a missing PV leaves the claim Pending.
- A claim without ``volumeName`` takes the smallest Available PV that matches (and its ``selector``); if none,
  Warning ``FailedBinding`` "no persistent volumes available for this claim and no storage class is set" (with a
  class: ``storageclass.storage.k8s.io "x" not found``, event ``ProvisioningFailed``).
- Binding sets the PV's ``claimRef`` (and annotation ``pv.kubernetes.io/bound-by-controller`` when the controller
  chose it), the claim's ``volumeName`` (annotation ``pv.kubernetes.io/bound-by-controller`` likewise) and
  ``pv.kubernetes.io/bind-completed``; phases PV ``Bound`` / claim ``Bound`` with ``status.capacity`` and
  ``accessModes`` from the PV. A PV without a claimRef is ``Available``; one whose claim is gone is ``Released``
  (``Retain``) or deleted (``Delete``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from ..kube.errors import KubeError
from ..kube.selectors import match_labels, selector_from_label_selector
from .base import Controller, log
from .resources import parse_quantity

COMPONENT = "persistentvolume-controller"
BOUND_BY = "pv.kubernetes.io/bound-by-controller"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"


def _class(obj: dict[str, Any]) -> str:
    return (obj.get("spec") or {}).get("storageClassName") or ""


def _capacity(pv: dict[str, Any]) -> float:
    try:
        return parse_quantity((((pv.get("spec") or {}).get("capacity")) or {}).get("storage", "0"))
    except ValueError:
        return 0.0


def _request(pvc: dict[str, Any]) -> float:
    try:
        return parse_quantity(((((pvc.get("spec") or {}).get("resources")) or {}).get("requests") or {})
                              .get("storage", "0"))
    except ValueError:
        return 0.0


def mismatch(pvc: dict[str, Any], pv: dict[str, Any]) -> str:
    """Why the PV cannot serve the claim ("" when it can)."""
    if _class(pvc) != _class(pv):
        return "storageClassName does not match"
    if ((pvc.get("spec") or {}).get("volumeMode") or "Filesystem") != \
            ((pv.get("spec") or {}).get("volumeMode") or "Filesystem"):
        return "incompatible volumeMode"
    modes = set((pv.get("spec") or {}).get("accessModes") or [])
    if not set((pvc.get("spec") or {}).get("accessModes") or []) <= modes:
        return "incompatible accessMode"
    if _capacity(pv) < _request(pvc):
        return "requested PV is too small"
    return ""


class VolumeBinder(Controller):
    name = COMPONENT
    topics = ("kube/persistentvolumes", "kube/persistentvolumeclaims")

    def __init__(self, svc) -> None:
        super().__init__(svc)
        self._reported: dict[str, str] = {}  # claim uid -> last warning message

    def reconcile(self) -> float | None:
        pvs = {p["metadata"]["name"]: p for p in self.objects("persistentvolumes")}
        claims = self.objects("persistentvolumeclaims")
        by_uid = {c["metadata"]["uid"]: c for c in claims}
        retry = False
        for pvc in claims:
            if pvc["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._sync_claim(pvc, pvs)
            except KubeError as e:  # one claim must not hold up the others: look again soon
                log.debug("claim %s/%s: %s", pvc["metadata"].get("namespace"), pvc["metadata"]["name"], e)
                retry = True
        for pv in list(pvs.values()):
            try:
                self._sync_volume(pv, by_uid)
            except KubeError as e:
                log.debug("volume %s: %s", pv["metadata"]["name"], e)
                retry = True
        return self.clock.now() + 1.0 if retry else None

    # ---- claims -------------------------------------------------------------------------------------------------
    def _sync_claim(self, pvc: dict[str, Any], pvs: dict[str, dict[str, Any]]) -> None:
        m, spec = pvc["metadata"], pvc.get("spec") or {}
        ref_ok = lambda pv: ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") in (None, m["uid"])  # noqa: E731
        want = spec.get("volumeName")
        if want:
            pv = pvs.get(want)
            if pv is None:
                self._claim_phase(pvc, "Pending")
                return
            claim_ref = (pv.get("spec") or {}).get("claimRef") or {}
            if claim_ref and (claim_ref.get("uid") not in (None, m["uid"]) or
                              claim_ref.get("name") != m["name"] or claim_ref.get("namespace") != m.get("namespace")):
                self._warn(pvc, "FailedBinding", f'volume "{want}" already bound to a different claim.')
                self._claim_phase(pvc, "Pending")
                return
            why = mismatch(pvc, pv)
            if why:
                self._warn(pvc, "VolumeMismatch", f'Cannot bind to requested volume "{want}": {why}')
                self._claim_phase(pvc, "Pending")
                return
            pvs[want] = self._bind(pvc, pv, by_controller=False)
            return
        candidates = [pv for pv in pvs.values() if not pv["metadata"].get("deletionTimestamp") and ref_ok(pv)
                      and not mismatch(pvc, pv) and ((pv.get("status") or {}).get("phase")) in (None, "Available",
                                                                                                  "Pending")]
        sel = spec.get("selector")
        if sel:
            reqs = selector_from_label_selector(sel)
            candidates = [pv for pv in candidates if match_labels(reqs, pv["metadata"].get("labels"))]
        if not candidates:
            if _class(pvc):
                self._warn(pvc, "ProvisioningFailed", f'storageclass.storage.k8s.io "{_class(pvc)}" not found')
            else:
                self._warn(pvc, "FailedBinding",
                           "no persistent volumes available for this claim and no storage class is set")
            self._claim_phase(pvc, "Pending")
            return
        pv = min(candidates, key=lambda p: (_capacity(p), p["metadata"]["name"]))
        pvs[pv["metadata"]["name"]] = self._bind(pvc, pv, by_controller=True)

    def _warn(self, pvc: dict[str, Any], reason: str, message: str) -> None:
        uid = pvc["metadata"]["uid"]
        if self._reported.get(uid) == message:
            return
        self._reported[uid] = message
        self.event(pvc, "Warning", reason, message, COMPONENT)

    def _claim_phase(self, pvc: dict[str, Any], phase: str) -> None:
        if ((pvc.get("status") or {}).get("phase")) == phase:
            return
        new = copy.deepcopy(pvc)
        new.setdefault("status", {})["phase"] = phase
        self.store.update_status("persistentvolumeclaims", new, field_manager=COMPONENT)

    def _bind(self, pvc: dict[str, Any], pv: dict[str, Any], by_controller: bool) -> dict[str, Any]:
        m = pvc["metadata"]
        ref = {"kind": "PersistentVolumeClaim", "namespace": m.get("namespace"), "name": m["name"],
               "uid": m["uid"], "apiVersion": "v1", "resourceVersion": m.get("resourceVersion")}
        try:
            # the volume first (pv_controller.bind: bindVolumeToClaim, then the claim)
            cur_ref = (pv.get("spec") or {}).get("claimRef") or {}
            if cur_ref.get("uid") != m["uid"]:
                upd = copy.deepcopy(pv)
                upd["spec"]["claimRef"] = ref
                if by_controller:
                    upd["metadata"].setdefault("annotations", {})[BOUND_BY] = "yes"
                pv = self.store.update("persistentvolumes", upd, field_manager=COMPONENT)
            if ((pv.get("status") or {}).get("phase")) != "Bound":
                upd = copy.deepcopy(pv)
                upd.setdefault("status", {})["phase"] = "Bound"
                pv = self.store.update_status("persistentvolumes", upd, field_manager=COMPONENT)
            ann = m.get("annotations") or {}
            spec = pvc.get("spec") or {}
            if spec.get("volumeName") != pv["metadata"]["name"] or ann.get(BIND_COMPLETED) != "yes":
                upd = copy.deepcopy(pvc)
                upd["spec"]["volumeName"] = pv["metadata"]["name"]
                anns = upd["metadata"].setdefault("annotations", {})
                anns[BIND_COMPLETED] = "yes"
                if by_controller:
                    anns[BOUND_BY] = "yes"
                pvc = self.store.update("persistentvolumeclaims", upd, field_manager=COMPONENT)
            st = pvc.get("status") or {}
            want = {"phase": "Bound", "accessModes": list((pv.get("spec") or {}).get("accessModes") or []),
                    "capacity": dict((pv.get("spec") or {}).get("capacity") or {})}
            if any(st.get(k) != v for k, v in want.items()):
                upd = copy.deepcopy(pvc)
                upd.setdefault("status", {}).update(want)
                self.store.update_status("persistentvolumeclaims", upd, field_manager=COMPONENT)
            self._reported.pop(m["uid"], None)
        except KubeError:
            pass
        return pv

    # ---- volumes ------------------------------------------------------------------------------------------------
    def _sync_volume(self, pv: dict[str, Any], claims: dict[str, dict[str, Any]]) -> None:
        if pv["metadata"].get("deletionTimestamp"):
            return
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        phase = (pv.get("status") or {}).get("phase")
        if not ref:
            want = "Available"
        elif ref.get("uid") and ref["uid"] not in claims:
            if ref.get("uid") and self.store.try_get("persistentvolumeclaims", ref.get("namespace"),
                                                     ref.get("name", "")) is not None:
                return  # a claim of that name exists but is newer: leave it to the claim's sync
            if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
                with contextlib.suppress(KubeError):
                    self.store.delete("persistentvolumes", None, pv["metadata"]["name"])
                return
            want = "Released"
        elif not ref.get("uid"):
            return  # pre-bound to a claim by name: the claim's sync binds it
        else:
            want = "Bound"
        if phase != want:
            upd = copy.deepcopy(pv)
            upd.setdefault("status", {})["phase"] = want
            with contextlib.suppress(KubeError):
                self.store.update_status("persistentvolumes", upd, field_manager=COMPONENT)
