"""Fixtures for the Kubernetes API server tests: real clients over real loopback TLS."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config


@pytest.fixture(scope="session")
def kubeconfig(sandbox_info) -> str:
    return sandbox_info["kubeconfig"]


@pytest.fixture(scope="session")
def kube(sandbox):
    """The KubeService (in-process API for white-box setup only)."""
    return sandbox.services.kube


@pytest.fixture(scope="session")
def kube_clients(kubeconfig):
    """The flow's own Kubernetes client (clients.kube.KubeClients) on the session sandbox, quick retries."""
    from clients.kube import KubeClients

    k = KubeClients.from_kubeconfig_file(kubeconfig, backoff_s=0.05, backoff_max_s=0.2)
    yield k
    k.close()


@pytest.fixture(scope="session")
def api_client(kubeconfig):
    c = config.new_client_from_config(kubeconfig)
    yield c
    c.close()


@pytest.fixture(scope="session")
def core(api_client):
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client):
    return client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client):
    return client.BatchV1Api(api_client)


@pytest.fixture(scope="session")
def policy(api_client):
    return client.PolicyV1Api(api_client)


@pytest.fixture
def ns(core):
    """A fresh namespace per test."""
    name = "t-" + uuid.uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def kubectl(kubeconfig, tmp_path_factory):
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(*args: str, input: str | None = None, check: bool = True, timeout: float = 60):
        cmd = ["kubectl", "--kubeconfig", kubeconfig, "--cache-dir", str(cache), *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    run.kubeconfig = kubeconfig  # type: ignore[attr-defined]
    run.cache = Path(cache)  # type: ignore[attr-defined]
    return run


def deployment(name: str, image: str = "nginx:1.25", labels: dict | None = None, replicas: int = 1) -> dict:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "main", "image": image,
                                                       "ports": [{"containerPort": 80}]}]}}},
    }


@pytest.fixture(scope="session")
def raw(kubeconfig):
    """Raw HTTPS requests with the kubeconfig's CA and token: ``raw(method, path, body=..., headers=...)``."""
    import base64
    import json
    import ssl

    import httpx
    import yaml

    doc = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = doc["clusters"][0]["cluster"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    token = doc["users"][0]["user"]["token"]
    http = httpx.Client(base_url=cluster["server"], verify=ctx, timeout=30)

    def call(method: str, path: str, body=None, headers: dict | None = None, params=None, token_override=None):
        h = {"Authorization": f"Bearer {token_override or token}", **(headers or {})}
        content = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        if content is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/json"
        return http.request(method, path, content=content, headers=h, params=params)

    yield call
    http.close()
