"""Point the flow at a running sandbox: build and save the blocks from its ``sandbox.json``.

The sandbox is reached exactly like the cloud: endpoints, an AccessKey pair and a cluster id. Nothing here imports
the sandbox; it only reads the file the sandbox writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blocks import AckCluster, AlibabaCloudCredentials
from core.spec import SpecError, read_small_file

SANDBOX_BLOCK = "sandbox"


class SandboxInfoError(SpecError):
    """``sandbox.json`` is not what a sandbox writes (a user error: one line, exit 2)."""


_REQUIRED = ("access_key_id", "access_key_secret", "region", "cs_endpoint", "oss_endpoint", "cluster_id")


def read_sandbox_info(state_dir: Path | str = ".sandbox") -> dict[str, Any]:
    """``sandbox.json``, checked to be what a sandbox writes: an object with the endpoint and credential strings;
    SandboxInfoError naming the file and what is wrong otherwise (a file of another shape is not a sandbox's)."""
    path = Path(state_dir) / "sandbox.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start the sandbox first (`elastic-inference sandbox up -d`)")
    try:
        info = json.loads(read_small_file(path, 1024 * 1024))
    except RecursionError:
        raise SandboxInfoError(f"{path} is not a sandbox's sandbox.json: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SandboxInfoError(f"{path} is not a sandbox's sandbox.json: not JSON ({type(exc).__name__})") from None
    if not isinstance(info, dict):
        raise SandboxInfoError(f"{path} is not a sandbox's sandbox.json: expected an object, got {type(info).__name__}")
    bad = [k for k in _REQUIRED if not isinstance(info.get(k), str) or not info[k]]
    if bad:
        raise SandboxInfoError(f"{path} is not a sandbox's sandbox.json: {', '.join(bad)} missing or not a string")
    return info


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
