"""Which services a sandbox runs, in start order (later services may use earlier ones through the context)."""

from __future__ import annotations

from .service import Service


def service_classes() -> list[type[Service]]:
    from .ack.service import AckService
    from .fleet.service import FleetService
    from .kube.service import KubeService
    from .oss.service import OssService

    return [OssService, FleetService, AckService, KubeService]
