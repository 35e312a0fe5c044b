"""Shared fixtures: a real sandbox on loopback, started in-process once per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never reach a real cloud: drop credentials a developer's environment may carry.
for _var in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "PREFECT_API_URL", "PREFECT_API_KEY"):
    os.environ.pop(_var, None)
# Prefect state of the test session stays in a temporary home, never in the user's ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="ei-prefect-home-")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "true")


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    """A running sandbox (all services) and its ``sandbox.json`` contents as ``sandbox.info``."""
    from sandbox.runner import Sandbox

    state = tmp_path_factory.mktemp("sandbox")
    sb = Sandbox(state, speed=float(os.environ.get("SANDBOX_TEST_SPEED", "50")))
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="session")
def sandbox_info(sandbox) -> dict:
    return sandbox.info


@pytest.fixture
def fresh_sandbox(tmp_path: Path):
    """A sandbox of its own for tests that change global state (restart, stock, faults)."""
    from sandbox.runner import Sandbox

    sb = Sandbox(tmp_path / "sb", speed=50.0)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A real Prefect server (subprocess, temporary SQLite database) for the whole session; returns its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (`make test`), every module that uses the session ``sandbox`` goes to one worker group.

    Those modules see each other's node pools, nodes and namespaces, as they do in a serial run; kept together (and
    in file order) they run as they do serially, while the modules with sandboxes and servers of their own spread
    over the other workers.
    """
    shared = {item.module for item in items if "sandbox" in getattr(item, "fixturenames", ())}
    for item in items:
        if item.module in shared:
            item.add_marker(pytest.mark.xdist_group("session-sandbox"))
