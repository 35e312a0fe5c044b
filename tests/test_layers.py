"""The layers of the README's layout section, as import-linter contracts in pyproject.toml: they hold, and each one bites.

``lint-imports`` runs on the real tree (it must keep every contract), then on copies of the tree into which one
forbidden import has been written: each copy must break exactly the contract that forbids it, so a contract that
silently stopped checking anything (a typo in a module name, a layer left out) fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("cli", "receivers", "flows", "tasks", "clients", "blocks", "core", "loadtests", "sandbox")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root)})


def test_every_contract_is_kept() -> None:
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


# (file that gets the import, the import, the contract that must break)
VIOLATIONS = [
    ("core/spec.py", "import tasks.serving", "The core imports none of the project's other packages"),
    ("blocks/alibaba.py", "import clients.ack", "Layers run one way"),
    ("clients/kube.py", "import tasks.serving", "Layers run one way"),
    ("tasks/serving.py", "import flows.deploy", "Layers run one way"),
    ("flows/deploy.py", "import cli.main", "Layers run one way"),
    ("sandbox/clock.py", "import blocks", "The sandbox uses only the shared core"),
    ("tasks/smoke.py", "import sandbox.runner", "Nothing the flow runs imports the sandbox"),
    ("loadtests/common.py", "import tasks.smoke", "The locustfile (run by Locust apart)"),
    ("receivers/registry_webhook.py", "import flows.deploy", "The webhook receiver emits events"),
]


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize(("path", "statement", "contract"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_a_forbidden_import_breaks_its_contract(tree_copy: Path, path: str, statement: str, contract: str) -> None:
    target = tree_copy / path
    original = target.read_text()
    target.write_text(original + f"\n{statement}  # a forbidden import\n")
    try:
        res = _lint(tree_copy)
    finally:
        target.write_text(original)
    assert res.returncode == 1, res.stdout + res.stderr
    broken = [line for line in res.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), res.stdout
