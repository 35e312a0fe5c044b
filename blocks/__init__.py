"""Prefect blocks of elastic-inference: `prefect block register -m blocks` registers them."""

from .alibaba import AckCluster, AckClusterRef, AlibabaCloudCredentials, load_cluster

__all__ = ["AckCluster", "AckClusterRef", "AlibabaCloudCredentials", "load_cluster"]
