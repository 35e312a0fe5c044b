"""Which services a sandbox runs and how they are wired: each is given the services it uses when it is built.

:func:`build` constructs the services in dependency order and passes each one what it depends on (constructor
arguments, typed); nothing looks a service up by name. :class:`Services` holds them, typed, in start order (the
runner starts them in that order and stops them in reverse). Who uses whom:

- ``ack`` (CS OpenAPI): ``fleet`` (ESS/ECS behind node pools), ``kube`` (DescribeClusterUserKubeconfig)
- ``kube`` (API server): the kubelets' container logs (``pods/log``), a :class:`~sandbox.controllers.runtime.PodLogs`
  it shares with ``controllers``
- ``controllers``: ``kube`` (the store they reconcile), ``fleet`` (instances become nodes), ``oss`` (CSI mounts)
- ``runtime`` (TF Serving pods): ``kube``, ``controllers`` (registers its container runtime), ``oss`` (model files)
- ``ingress``: ``kube`` (Ingresses, Services, Endpoints), ``runtime`` (where a pod IP's server really listens)
- ``sls`` (Log Service GetLogs): ``ingress`` (its per-request access log is the ``nginx-ingress`` logstore),
  ``admin``'s fault engine
- ``metrics`` (external metrics API): ``kube`` (serves on it), ``ingress`` (its access log is the SLS logstore),
  ``sls`` (the project, the lag and the faults its GetLogs meets)
- ``hpa``: ``kube``, ``metrics``
- ``autoscaler``: ``kube``, ``fleet`` (scaling groups), ``ack`` (node pool conditions)
- ``admin`` (faults): ``fleet`` (stock-outs, launch failures, reclaims); the runner puts its fault engine around the
  HTTP apps of the services that name their operations (:class:`sandbox.faults.FaultTarget`)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .ack.service import AckService
from .admin.service import AdminService
from .autoscaler.service import AutoscalerService
from .context import SandboxContext
from .controllers.runtime import PodLogs
from .controllers.service import ControllersService
from .fleet.service import FleetService
from .hpa.service import HpaService
from .ingress.service import IngressService
from .kube.service import KubeService
from .metrics.service import MetricsService
from .oss.service import OssService
from .runtime.service import RuntimeService
from .service import Service
from .sls.service import SlsService


@dataclass(frozen=True)
class Services:
    """The services of one sandbox; the field order is the start order."""

    oss: OssService
    fleet: FleetService
    ack: AckService
    kube: KubeService
    controllers: ControllersService
    runtime: RuntimeService
    ingress: IngressService
    sls: SlsService
    metrics: MetricsService
    hpa: HpaService
    autoscaler: AutoscalerService
    admin: AdminService

    def in_start_order(self) -> list[Service]:
        return [getattr(self, f.name) for f in fields(self)]


def build(ctx: SandboxContext) -> Services:
    """Construct every service, each after the ones it uses."""
    oss = OssService(ctx)
    fleet = FleetService(ctx)
    logs = PodLogs()
    kube = KubeService(ctx, logs=logs)
    ack = AckService(ctx, fleet=fleet, kube=kube)
    controllers = ControllersService(ctx, kube=kube, fleet=fleet, oss=oss, logs=logs)
    runtime = RuntimeService(ctx, kube=kube, controllers=controllers, oss=oss)
    ingress = IngressService(ctx, kube=kube, resolvers=[runtime.resolve])
    admin = AdminService(ctx, fleet=fleet)  # before the services whose in-process calls consult its faults
    sls = SlsService(ctx, ingress=ingress, faults=admin.faults)
    metrics = MetricsService(ctx, kube=kube, ingress=ingress, logs=sls)
    hpa = HpaService(ctx, kube=kube, metrics=metrics)
    autoscaler = AutoscalerService(ctx, kube=kube, fleet=fleet, ack=ack)
    return Services(oss=oss, fleet=fleet, ack=ack, kube=kube, controllers=controllers, runtime=runtime,
                    ingress=ingress, sls=sls, metrics=metrics, hpa=hpa, autoscaler=autoscaler, admin=admin)
