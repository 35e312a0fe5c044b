"""Which services a sandbox runs, in start order (later services may use earlier ones through the context)."""

from __future__ import annotations

from .service import Service


def service_classes() -> list[type[Service]]:
    from .ack.service import AckService
    from .admin.service import AdminService
    from .autoscaler.service import AutoscalerService
    from .controllers.service import ControllersService
    from .fleet.service import FleetService
    from .hpa.service import HpaService
    from .ingress.service import IngressService
    from .kube.service import KubeService
    from .metrics.service import MetricsService
    from .oss.service import OssService
    from .runtime.service import RuntimeService

    return [OssService, FleetService, AckService, KubeService, ControllersService, RuntimeService,
            IngressService, MetricsService, HpaService,
            AutoscalerService, AdminService]
