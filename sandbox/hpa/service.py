"""The HorizontalPodAutoscaler controller (autoscaling/v2): a thin loop applying :mod:`sandbox.hpa.algorithm`.

``reconcile`` follows upstream ``pkg/controller/podautoscaler/horizontal.go`` ``reconcileAutoscaler`` step by step:
get the target's ``/scale`` (``FailedGetScale``), min/max pre-clamping (``Current number of replicas above
Spec.MaxReplicas``), ``computeReplicasForMetrics`` (max over metrics, invalid metrics block a scale-down,
``ScalingActive`` ``ValidMetricFound`` / ``InvalidSelector`` / ``FailedGetExternalMetric`` ...), normalization with or
without ``spec.behavior``, the ``/scale`` update (``SuccessfulRescale`` "New size: N; reason: ..." /
``FailedRescale``), and a status write only when the status changed.

Metrics: ``External`` (Value and AverageValue targets) read in-process from the metrics service
(:meth:`sandbox.metrics.service.MetricsService.values`, the same computation as the HTTP endpoint). The sandbox
runs no metrics-server and no custom metrics API, so ``Resource`` / ``ContainerResource`` / ``Pods`` / ``Object``
metrics fail the way they do on a cluster without those APIs (``ScalingActive=False`` with
``FailedGetResourceMetric`` etc.). Not modelled: the AmbiguousSelector check, the HPAScaleToZero and
HPAConfigurableTolerance feature gates (alpha), ``status.observedGeneration``.

Timing: every HPA is synced every ``hpa_sync`` simulated seconds (``--horizontal-pod-autoscaler-sync-period``,
15 s) and at once when it is created; windows and policy periods are simulated seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..kube.errors import KubeError
from ..kube.resources import RESOURCES, ResourceType
from ..service import Service
from ..timings import resolve as resolve_timings
from . import algorithm as A

if TYPE_CHECKING:
    from ..context import SandboxContext
    from ..kube.api import KubeStore
    from ..kube.service import KubeService
    from ..metrics.service import MetricsService

log = logging.getLogger("sandbox.hpa")
COMPONENT = "horizontal-pod-autoscaler"
_NO_CUSTOM = "unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
_NO_RESOURCE = ("unable to fetch metrics from resource metrics API: the server could not find the requested resource "
                "(get pods.metrics.k8s.io)")


class MetricFailure(Exception):
    def __init__(self, reason: str, inner: str, outer: str) -> None:
        super().__init__(outer)
        self.reason, self.inner, self.outer = reason, inner, outer


@dataclass
class _State:
    recommendations: list[A.Recommendation] = field(default_factory=list)
    up_events: list[A.ScaleEvent] = field(default_factory=list)
    down_events: list[A.ScaleEvent] = field(default_factory=list)
    last_sync: float = -1e18


def scale_target(ref: dict[str, Any]) -> ResourceType:
    """The resource of a scaleTargetRef (the RESTMapper's job); KubeError like upstream when unknown."""
    api_version = ref.get("apiVersion") or ""
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    for r in RESOURCES:
        if r.group == group and r.kind == ref.get("kind") and not r.storage and r.sub("scale") is not None:
            return r
    raise KubeError(404, "NotFound", f'no matches for kind "{ref.get("kind")}" in group "{group}"')


class HpaService(Service):
    name = "hpa"

    def __init__(self, ctx: SandboxContext, kube: KubeService, metrics: MetricsService) -> None:
        super().__init__(ctx)
        self.kube = kube
        self.metrics = metrics
        timings = resolve_timings(ctx.options)
        self.sync_period = timings["hpa_sync"]
        self.downscale_window = timings["hpa_downscale_stabilization"]
        self.tolerance = A.DEFAULT_TOLERANCE
        self.state: dict[str, _State] = {}
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def store(self) -> KubeStore:
        return self.kube.store

    # ---- loop ------------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.store.on_change(self._on_change)
        self.spawn(self._run(), name="hpa-controller")

    def _on_change(self, key: str, change: Any) -> None:
        if not key.startswith("horizontalpodautoscalers") or getattr(change, "type", "") != "ADDED":
            return
        if self._loop is None or self._wake is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        clock = self.ctx.clock
        while True:
            now = clock.now()
            try:
                self.sync_all(now)
            except Exception:  # noqa: BLE001 - the loop must survive one bad object
                log.exception("hpa sync failed")
            nxt = min([s.last_sync + self.sync_period for s in self.state.values()] or [now + self.sync_period])
            wait = clock.real_seconds(max(nxt - clock.now(), 0.0)) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()

    def sync_all(self, now: float) -> None:
        hpas = self.store.list("horizontalpodautoscalers")
        live = set()
        for hpa in hpas:
            key = f"{hpa['metadata']['namespace']}/{hpa['metadata']['name']}"
            live.add(key)
            st = self.state.setdefault(key, _State())
            if now - st.last_sync < self.sync_period - 1e-6:
                continue
            st.last_sync = now
            try:
                self.reconcile(hpa, now)
            except Exception:  # noqa: BLE001
                log.exception("hpa %s: reconcile failed", key)
        for key in set(self.state) - live:
            del self.state[key]  # deleted HPA: forget its histories (reconcileKey on NotFound)

    # ---- one HPA ---------------------------------------------------------------------------------------------------
    def reconcile(self, hpa: dict[str, Any], now: float) -> None:
        store = self.store
        meta, spec = hpa["metadata"], hpa.get("spec") or {}
        ns, key = meta["namespace"], f"{meta['namespace']}/{meta['name']}"
        st = self.state.setdefault(key, _State())
        old_status = copy.deepcopy(hpa.get("status") or {})
        iso = self.ctx.clock.iso(now)
        conds: list[dict[str, Any]] = list(old_status.get("conditions") or [])

        def cond(ctype: str, status: str, reason: str, message: str) -> None:
            nonlocal conds
            conds = A.set_condition(conds, ctype, status, reason, message, iso)

        def event(etype: str, reason: str, message: str) -> None:
            self.kube.events.record(hpa, etype, reason, message, component=COMPONENT)

        def write(current: int, desired: int, statuses: list[dict[str, Any]] | None, rescaled: bool) -> None:
            new: dict[str, Any] = {"currentReplicas": current, "desiredReplicas": desired}
            last = iso if rescaled else old_status.get("lastScaleTime")
            if last:
                new["lastScaleTime"] = last
            if statuses:
                new["currentMetrics"] = statuses
            new["conditions"] = conds
            if new == old_status:
                return
            obj = copy.deepcopy(hpa)
            obj["status"] = new
            obj["metadata"].pop("resourceVersion", None)
            store.update_status("horizontalpodautoscalers", obj, field_manager="kube-controller-manager")

        ref = spec.get("scaleTargetRef") or {}
        reference = f"{ref.get('kind')}/{ns}/{ref.get('name')}"
        try:
            rt = scale_target(ref)
            scale = store.get_scale(rt, ns, ref.get("name"))
        except KubeError as e:
            event("Warning", "FailedGetScale", e.message)
            cond("AbleToScale", "False", "FailedGetScale",
                 f"the HPA controller was unable to get the target's current scale: {e.message}")
            write(old_status.get("currentReplicas", 0), old_status.get("desiredReplicas", 0),
                  old_status.get("currentMetrics"), False)
            log.debug("failed to query scale subresource for %s: %s", reference, e.message)
            return
        cond("AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get the target's current scale")
        current = int(scale["spec"].get("replicas") or 0)
        if not st.recommendations:
            st.recommendations = [A.Recommendation(current, now)]  # recordInitialRecommendation
        min_r = spec.get("minReplicas", 1)
        max_r = spec["maxReplicas"]
        behavior = A.fill_behavior(spec.get("behavior"), self.downscale_window)
        statuses: list[dict[str, Any]] | None = None
        desired, reason, rescale = 0, "", True

        if current == 0 and min_r != 0:
            rescale = False
            cond("ScalingActive", "False", "ScalingDisabled", "scaling is disabled since the replica count of the "
                 "target is zero")
        elif current > max_r:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", max_r
        elif current < min_r:
            reason, desired = "Current number of replicas below Spec.MinReplicas", min_r
        else:
            proposal, metric_name, statuses, err, invalid_cond = self.compute_for_metrics(hpa, scale, spec, current)
            if proposal == -1:
                if invalid_cond:
                    cond(*invalid_cond)
                write(current, old_status.get("desiredReplicas", 0), statuses, False)
                if err:
                    event("Warning", "FailedComputeMetricsReplicas", err)
                return
            cond("ScalingActive", "True", "ValidMetricFound",
                 f"the HPA was able to successfully calculate a replica count from {metric_name}")
            rescale_metric = ""
            if proposal > desired:
                desired, rescale_metric = proposal, metric_name
            if desired > current:
                reason = f"{rescale_metric} above target"
            if desired < current:
                reason = "All metrics below target"
            if behavior is None:
                n, st.recommendations = A.normalize(st.recommendations, current, desired, min_r, max_r, now,
                                                    self.downscale_window)
            else:
                n, st.recommendations = A.normalize_with_behaviors(st.recommendations, behavior, current, desired,
                                                                   min_r, max_r, st.up_events, st.down_events, now)
            cond("AbleToScale", "True", n.able_reason, n.able_message)
            cond("ScalingLimited", "True" if n.limited else "False", n.limited_reason, n.limited_message)
            desired = n.replicas
            rescale = desired != current

        if rescale:
            try:
                store.update_scale(rt, ns, ref["name"], desired, field_manager="kube-controller-manager")
            except KubeError as e:
                event("Warning", "FailedRescale", f"New size: {desired}; reason: {reason}; error: {e.message}")
                cond("AbleToScale", "False", "FailedUpdateScale",
                     f"the HPA controller was unable to update the target scale: {e.message}")
                write(current, old_status.get("desiredReplicas", 0), statuses, False)
                return
            cond("AbleToScale", "True", "SucceededRescale",
                 f"the HPA controller was able to update the target scale to {desired}")
            event("Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
            st.up_events, st.down_events = A.store_scale_event(behavior, st.up_events, st.down_events, current,
                                                               desired, now)
            log.info("hpa %s: rescaled %s from %d to %d (%s)", key, reference, current, desired, reason)
        else:
            desired = current
        write(current, desired, statuses, rescale)

    # ---- metrics ---------------------------------------------------------------------------------------------------
    def compute_for_metrics(self, hpa: dict[str, Any], scale: dict[str, Any], spec: dict[str, Any], current: int
                            ) -> tuple[int, str, list[dict[str, Any]] | None, str, tuple[str, str, str, str] | None]:
        """``computeReplicasForMetrics`` -> (replicas or -1, metric description, statuses, error, condition)."""
        selector = (scale.get("status") or {}).get("selector") or ""
        if not selector:
            self.kube.events.record(hpa, "Warning", "SelectorRequired", "selector is required", component=COMPONENT)
            return -1, "", None, "selector is required", (
                "ScalingActive", "False", "InvalidSelector", "the HPA target's scale is missing a selector")
        metrics = spec.get("metrics") or []
        status_replicas = int((scale.get("status") or {}).get("replicas") or 0)
        statuses: list[dict[str, Any]] = [{"type": ""} for _ in metrics]
        replicas, metric, invalid, first_err, first_cond = 0, "", 0, "", None
        for i, m in enumerate(metrics):
            try:
                proposal, name, statuses[i] = self.compute_for_metric(hpa, m, current, status_replicas, selector)
            except MetricFailure as f:
                self.kube.events.record(hpa, "Warning", f.reason, f.inner, component=COMPONENT)
                if invalid == 0:
                    first_err = f.outer
                    first_cond = ("ScalingActive", "False", f.reason,
                                  f"the HPA was unable to compute the replica count: {f.inner}")
                invalid += 1
                continue
            if replicas == 0 or proposal > replicas:
                replicas, metric = proposal, name
        err = f"invalid metrics ({invalid} invalid out of {len(metrics)}), first error is: {first_err}" if invalid \
            else ""
        if invalid >= len(metrics) or (invalid and replicas < current):
            return -1, "", statuses, err, first_cond
        return replicas, metric, statuses, err, None

    def compute_for_metric(self, hpa: dict[str, Any], m: dict[str, Any], current: int, status_replicas: int,
                           selector: str) -> tuple[int, str, dict[str, Any]]:
        ns = hpa["metadata"]["namespace"]
        mtype = m.get("type")
        tol = A.Tolerances(self.tolerance, self.tolerance)
        if mtype == "External":
            ext = m.get("external") or {}
            ident = ext.get("metric") or {}
            name, sel = ident.get("name", ""), ident.get("selector")
            target = ext.get("target") or {}
            sel_s = A.label_selector_string(sel)
            desc = f"external metric {name}({sel_s})"
            ident_out = {"name": name, **({"selector": sel} if sel is not None else {})}

            def fail(inner: str, average: bool) -> MetricFailure:
                mid = f"failed to get {name} external metric: {inner}" if average else \
                    f"failed to get external metric {name}: {inner}"
                return MetricFailure("FailedGetExternalMetric", inner,
                                     f"failed to get {name} external metric value: {mid}")

            if target.get("averageValue") is not None:
                values = self._external(ns, name, sel, sel_s, fail, True)
                replicas, _usage, per_pod = A.external_per_pod_replicas(
                    status_replicas, A.milli_value(target["averageValue"]), values, tol)
                return replicas, desc, {"type": "External", "external": {
                    "metric": ident_out, "current": {"averageValue": A.format_milli(per_pod)}}}
            if target.get("value") is not None:
                values = self._external(ns, name, sel, sel_s, fail, False)
                target_milli = A.milli_value(target["value"])
                usage = sum(values)
                ready = 0
                if current != 0 and not tol.is_within(usage / target_milli):
                    pods = self.store.list("pods", ns, label_selector=selector)
                    if not pods:
                        raise fail("unable to calculate ready pods: no pods returned by selector while calculating "
                                   "replica count", False)
                    ready = sum(1 for p in pods if _running_and_ready(p))
                replicas, usage = A.external_value_replicas(current, target_milli, values, ready, tol)
                return replicas, desc, {"type": "External", "external": {
                    "metric": ident_out, "current": {"value": A.format_milli(usage)}}}
            msg = "invalid external metric source: neither a value target nor an average value target was set"
            raise MetricFailure("FailedGetExternalMetric", msg, f"failed to get {name} external metric value: {msg}")
        if mtype in ("Resource", "ContainerResource"):
            src = m.get("resource") or m.get("containerResource") or {}
            rname = src.get("name", "cpu")
            kind = "utilization" if (src.get("target") or {}).get("averageUtilization") is not None else "usage"
            inner = f"failed to get {rname} {kind}: unable to get metrics for resource {rname}: {_NO_RESOURCE}"
            if mtype == "Resource":
                return self._raise("FailedGetResourceMetric", inner, f"failed to get {rname} resource metric value: "
                                   f"{inner}")
            return self._raise("FailedGetContainerResourceMetric", inner,
                               f"failed to get {src.get('container')} container metric value: {inner}")
        if mtype == "Pods":
            name = ((m.get("pods") or {}).get("metric") or {}).get("name", "")
            inner = f"unable to get metric {name}: {_NO_CUSTOM}"
            return self._raise("FailedGetPodsMetric", inner, f"failed to get pods metric value: {inner}")
        if mtype == "Object":
            obj = m.get("object") or {}
            name = (obj.get("metric") or {}).get("name", "")
            d = obj.get("describedObject") or {}
            inner = f"unable to get metric {name} on {d.get('kind')} {ns}/{d.get('name')}: {_NO_CUSTOM}"
            return self._raise("FailedGetObjectMetric", inner, f"failed to get object metric value: {inner}")
        inner = f'unknown metric source type "{mtype}"'
        return self._raise("InvalidMetricSourceType", inner, inner)

    @staticmethod
    def _raise(reason: str, inner: str, outer: str):
        raise MetricFailure(reason, inner, outer)

    def _external(self, ns: str, name: str, sel: dict[str, Any] | None, sel_s: str, fail, average: bool) -> list[int]:
        """Values in milli-units (``externalMetricsClient.GetExternalMetric``)."""
        try:
            items = self.metrics.values(ns, name, sel)
        except KubeError as e:
            raise fail(f"unable to get external metric {ns}/{name}/{sel_s}: unable to fetch metrics from external "
                       f"metrics API: {e.message}", average) from e
        if not items:
            raise fail(f"unable to get external metric {ns}/{name}/{sel_s}: no metrics returned from external "
                       f"metrics API", average)
        return [A.milli_value(i.value) for i in items]


def _running_and_ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    if st.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
