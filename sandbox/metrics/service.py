"""External metrics API (``external.metrics.k8s.io/v1beta1``) served on the sandbox's Kubernetes API server.

On ACK the alibaba-cloud-metrics-adapter sits behind the APIService ``v1beta1.external.metrics.k8s.io`` (seeded by
:mod:`sandbox.kube.seed`); here :meth:`KubeService.register_api` plays the aggregator, so clients use the
kubeconfig as usual::

    GET /apis/external.metrics.k8s.io/v1beta1                                   -> APIResourceList (discovery)
    GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=sls.project%3D...
        -> ExternalMetricValueList, or 500 InternalError carrying the adapter's error

The HPA controller (:mod:`sandbox.hpa`) reads the same values in-process through :meth:`MetricsService.values`,
which is also what the HTTP handler renders: one computation (:func:`sandbox.metrics.sls.query_value`).
Errors follow kubernetes-sigs/custom-metrics-apiserver: a provider error that is not an API status becomes
``apierrors.NewInternalError`` ("Internal error occurred: ...").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..hpa.algorithm import format_milli
from ..kube.errors import KubeError
from ..kube.selectors import parse_labels
from ..service import Service
from . import sls

if TYPE_CHECKING:
    from ..context import SandboxContext
    from ..ingress.service import IngressService
    from ..kube.service import KubeService
    from ..sls.service import SlsService

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"


class MetricsService(Service):
    name = "metrics"

    def __init__(self, ctx: SandboxContext, kube: KubeService, ingress: IngressService,
                 logs: SlsService | None = None) -> None:
        super().__init__(ctx)
        self.ingress = ingress
        self.logs = logs
        opts = ctx.options.get("sls") or {}
        self.logstore = opts.get("logstore", sls.DEFAULT_LOGSTORE)
        resources = [{"resource": m, "responseKind": {"group": "", "version": "", "kind": "ExternalMetricValueList"},
                      "scope": "Namespaced", "verbs": ["get"]} for m in sls.METRICS]
        kube.register_api(GROUP, VERSION, resources, self.handle)

    @property
    def project(self) -> str:
        return f"k8s-log-{self.ctx.identity.cluster_id}"

    # ---- the one computation ---------------------------------------------------------------------------------------
    def values(self, namespace: str, metric: str, selector: str | dict[str, Any] | None) -> list[sls.ExternalMetricValue]:
        """The metric's values for ``selector`` (a label selector string, or a LabelSelector dict).

        Raises :class:`KubeError` exactly as the API server would answer (404 unknown metric, 500 adapter error).
        """
        if metric not in sls.METRICS:
            raise KubeError(404, "NotFound", f"the server could not find the metric {metric} for namespace "
                            f"{namespace}", kind=metric, group=GROUP)
        reqs = parse_labels(_selector_string(selector))
        q = sls.Query(self.project, self.logstore, self.ingress.log, self.ctx.clock.speed,
                      lag=self.logs.lag if self.logs else 0.0,
                      fault=self.logs.adapter_query_fault() if self.logs else None)
        try:
            params = sls.parse_params(reqs)
            value = sls.query_value(q, params, metric)
        except sls.MetricError as e:
            raise KubeError(500, "InternalError", f"Internal error occurred: {e}",
                            causes=[{"message": str(e)}]) from e
        return [sls.ExternalMetricValue(metricName=metric, timestamp=self.ctx.clock.iso(),
                                        value=format_milli(value * 1000))]

    # ---- HTTP --------------------------------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        seg = [s for s in request.url.path.split("/") if s][3:]  # after /apis/{group}/{version}
        if request.method not in ("GET", "HEAD"):
            raise KubeError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                            "resource")
        if not seg:
            body: dict[str, Any] = {
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
                "resources": [{"name": m, "singularName": "", "namespaced": True, "kind": "ExternalMetricValueList",
                               "verbs": ["get"]} for m in sls.METRICS]}
            return _json(body)
        if len(seg) == 3 and seg[0] == "namespaces":
            items = self.values(seg[1], seg[2], request.query_params.get("labelSelector"))
            return _json(sls.ExternalMetricValueList(items=items).model_dump(exclude_none=True))
        raise KubeError(404, "NotFound", "the server could not find the requested resource")


def _selector_string(selector: str | dict[str, Any] | None) -> str:
    if selector is None:
        return ""
    if isinstance(selector, str):
        return selector
    from ..kube.selectors import selector_string

    return selector_string(selector)


def _json(body: Any, code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type="application/json")
