"""Point the flow at a running sandbox: build and save the blocks from its ``sandbox.json``.

The sandbox is reached exactly like the cloud: endpoints, an AccessKey pair and a cluster id. Nothing here imports
the sandbox; it only reads the file the sandbox writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blocks import AckCluster, AlibabaCloudCredentials

SANDBOX_BLOCK = "sandbox"


def read_sandbox_info(state_dir: Path | str = ".sandbox") -> dict[str, Any]:
    path = Path(state_dir) / "sandbox.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start the sandbox first (`elastic-inference sandbox up -d`)")
    return json.loads(path.read_text())


def credentials_from_sandbox(info: dict[str, Any]) -> AlibabaCloudCredentials:
    return AlibabaCloudCredentials(
        access_key_id=info["access_key_id"],
        access_key_secret=info["access_key_secret"],
        region_id=info["region"],
        cs_endpoint=info["cs_endpoint"],
        oss_endpoint=info["oss_endpoint"],
        sls_endpoint=info.get("sls_endpoint"),
    )


def cluster_from_sandbox(info: dict[str, Any]) -> AckCluster:
    return AckCluster(cluster_id=info["cluster_id"], credentials=credentials_from_sandbox(info))


def save_sandbox_blocks(info: dict[str, Any], name: str = SANDBOX_BLOCK) -> str:
    """Save the sandbox's credentials and cluster as Prefect blocks named ``name``; returns the cluster block name."""
    creds = credentials_from_sandbox(info)
    creds.save(name, overwrite=True)
    AckCluster(cluster_id=info["cluster_id"], credentials=creds).save(name, overwrite=True)
    return name
