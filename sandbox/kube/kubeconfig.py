"""Kubeconfig files for the sandbox API server (CA embedded, bearer token)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def render(server: str, ca_pem: bytes, token: str, *, cluster: str = "sandbox", user: str = "sandbox-admin",
           context: str = "sandbox") -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server,
                                                    "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def ca_pem(path: Path) -> bytes:
    return Path(path).read_bytes()
