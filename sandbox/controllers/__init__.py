"""The sandbox cluster's controllers (nodes, deployments, replicasets, scheduler, kubelet, volumes, endpoints, jobs,
disruption)."""

from .runtime import ContainerHandle, ContainerRuntime, ContainerSpec, ContainerState, Mount, VolumeSource
from .service import ControllersService

__all__ = ["ContainerHandle", "ContainerRuntime", "ContainerSpec", "ContainerState", "ControllersService", "Mount",
           "VolumeSource"]
