"""Step 6: the Internet-facing Ingress (``networking.k8s.io/v1``), then wait for its address.

The seed creates it in the ACK console (name ``bert-tfserving``, host ``test.example.com``, path ``/``, rule
``ImplementationSpecific``, the service from ``kubectl get service``, port 8501). We render the same object with
``ingressClassName`` (the v1 replacement of the ``kubernetes.io/ingress.class`` annotation) and wait, like
``kubectl get ingress`` users do, until the controller publishes ``status.loadBalancer.ingress[0]`` (``ip`` or
``hostname``, optionally ``ports``; core/v1 ``IngressLoadBalancerIngress``).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from clients.kube import ApplyResult, KubeClients
from clients.logs import run_logger
from core.spec import DeploySpec


def render_ingress(spec: DeploySpec) -> dict[str, Any]:
    names = spec.names
    ing = spec.ingress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": names.ingress,
            "namespace": names.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "elastic-inference",
                "servingName": spec.serving.name,
                "release": names.release,
            },
        },
        "spec": {
            "ingressClassName": ing.class_name,
            "rules": [
                {
                    "host": ing.host,
                    "http": {
                        "paths": [
                            {
                                "path": ing.path,
                                "pathType": ing.path_type,
                                "backend": {
                                    "service": {"name": names.service, "port": {"number": ing.service_port}}
                                },
                            }
                        ]
                    },
                }
            ],
        },
    }


class IngressEndpoint(BaseModel):
    """Where the Ingress answers: connect to ``address:port`` and send ``Host: host``."""

    model_config = ConfigDict(frozen=True)

    address: str
    port: int
    host: str
    path: str
    headers: dict[str, str] = {}
    """More headers every request sends: the header that selects a canary (tasks/rollout/canary.py)."""

    @property
    def url(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{address}:{self.port}{self.path}"


def ingress_address(obj: dict[str, Any]) -> tuple[str, int] | None:
    """``(ip or hostname, port)`` of the first load balancer entry; the port defaults to 80 (HTTP)."""
    entries = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if not entries:
        return None
    first = entries[0]
    address = first.get("ip") or first.get("hostname")
    if not address:
        return None
    ports = first.get("ports") or []
    port = next((p["port"] for p in ports if p.get("port") and not p.get("error")), 80)
    return address, int(port)


def wait_for_address(kube: KubeClients, spec: DeploySpec, name: str, timeout_s: float = 300) -> IngressEndpoint:
    """Wait for the controller to publish the address of Ingress ``name``; where requests for the spec go."""
    obj = kube.wait_for(
        "Ingress",
        name,
        spec.names.namespace,
        lambda o: ingress_address(o) is not None,
        timeout_s,
        what="get a load balancer address",
    )
    found = ingress_address(obj)
    assert found is not None
    return IngressEndpoint(address=found[0], port=found[1], host=spec.ingress.host, path=spec.ingress.path)


@task(name="ingress", cache_policy=NO_CACHE)
def apply_ingress(
    kube: KubeClients, spec: DeploySpec, timeout_s: float = 300
) -> tuple[ApplyResult, IngressEndpoint]:
    """Apply the Ingress and wait for the controller to publish its address."""
    names = spec.names
    applied = kube.apply(render_ingress(spec))
    endpoint = wait_for_address(kube, spec, names.ingress, timeout_s)
    run_logger().info(
        "Ingress %s/%s answers at %s (Host: %s)", names.namespace, names.ingress, endpoint.url, endpoint.host
    )
    return applied, endpoint
