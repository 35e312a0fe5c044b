"""Prefect blocks of elastic-inference: `prefect block register -m blocks` registers them."""

from .alibaba import AckCluster, AlibabaCloudCredentials

__all__ = ["AckCluster", "AlibabaCloudCredentials"]
