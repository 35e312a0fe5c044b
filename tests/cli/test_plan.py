"""`elastic-inference deploy --plan [--server]`: the whole plan as YAML, and as server-side dry runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from core.demo_model import generate_demo_model

REPO = Path(__file__).resolve().parents[2]


def _spec_file(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "chnsenticorp"
    generate_demo_model(model, version=1623831335)
    data = yaml.safe_load((REPO / "examples" / "sandbox.yaml").read_text())
    data["model"]["local_dir"] = str(model)
    data["serving"]["version"] = "202601010000"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_plan_prints_every_request_and_manifest_without_calling_anything(tmp_path: Path) -> None:
    res = _cli("deploy", "--plan", str(_spec_file(tmp_path)))
    assert res.returncode == 0, res.stderr
    docs = list(yaml.safe_load_all(res.stdout))
    assert "CreateClusterNodePool" in docs[0]
    kinds = [d["kind"] for d in docs[1:]]
    assert kinds == ["Secret", "PersistentVolume", "PersistentVolumeClaim", "ConfigMap", "Deployment", "Service",
                     "HorizontalPodAutoscaler", "Ingress"]
    secret = docs[1]
    assert set(secret["stringData"]) == {"akId", "akSecret"}
    assert secret["stringData"]["akSecret"] == "<redacted>"
    hpa = docs[7]
    assert hpa["apiVersion"] == "autoscaling/v2"


def test_plan_server_dry_runs_every_manifest_and_stores_nothing(tmp_path: Path, sandbox, sandbox_info) -> None:
    res = _cli("deploy", "--plan", "--server", "--sandbox-dir", str(sandbox.state_dir), str(_spec_file(tmp_path)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert sandbox_info["access_key_secret"] not in res.stdout + res.stderr
    dry = [line for line in res.stdout.splitlines() if line.startswith("# server dry run:")]
    assert len(dry) == 8, res.stdout
    assert all("(dry run)" in line for line in dry)

    api = k8s_config.new_client_from_config(config_file=sandbox_info["kubeconfig"])
    deployments = k8s.AppsV1Api(api).list_namespaced_deployment("default").items
    assert not [d for d in deployments if d.metadata.name.startswith("bert-tfserving-202601010000")]
    secrets = k8s.CoreV1Api(api).list_namespaced_secret("default").items
    assert not [s for s in secrets if s.metadata.name == "model-csi-pv-oss-secret"]
