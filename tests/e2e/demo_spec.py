"""The demo spec (``examples/sandbox.yaml``) with per-test names and overrides, shared by the e2e tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.spec import DeploySpec

REPO = Path(__file__).resolve().parents[2]


def demo_spec(model_dir: Path, name: str, overrides: dict[str, Any]) -> DeploySpec:
    """The demo spec with its own pool, label, bucket and serving name (so runs do not see each other).

    ``overrides`` maps dotted paths (``"load_test.enabled"``) to values.
    """
    # Read the example as data: its model.local_dir (where `make demo` generates the model) need not exist here.
    data = yaml.safe_load((REPO / "examples" / "sandbox.yaml").read_text())
    data["model"]["local_dir"] = str(model_dir)
    data["node_pool"]["name"] = f"e2e-{name}"
    data["node_pool"]["labels"] = {"inference": "tensorflow", "e2e": name}
    data["serving"]["name"] = f"e2e-{name}"
    data["serving"]["selector"] = None
    # its own host: a deploy whose host and path already serve another service's version would roll out over it
    data["ingress"]["host"] = f"{name}.example.com"
    data["storage"]["bucket"] = f"e2e-{name}"
    data["storage"]["pv_name"] = f"e2e-{name}-pv"
    data["storage"]["pvc_name"] = f"e2e-{name}-pvc"
    for path, value in overrides.items():
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return DeploySpec.parse(data)
