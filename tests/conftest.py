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


def _uses_session_sandbox(item: pytest.Item) -> bool:
    """Whether ``item`` gets the session ``sandbox`` (a module that defines its own ``sandbox`` fixture, such as
    the rollout tests, does not, and can run on either worker)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get("sandbox") if info is not None else None
    return bool(defs) and defs[-1].scope == "session"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (`make test`, ``--dist loadgroup``), say which tests must share a worker.

    Every module that uses the session ``sandbox`` goes to one group: those modules see each other's node pools,
    nodes and namespaces, as they do in a serial run, so kept together (and in file order) they run as they do
    serially. Every other module is a group of its own, so its module-scoped servers (the MLflow stack, the
    Prefect deployments, a flow-made deployment) start once, on one worker; without a group, loadgroup hands out
    an unmarked module's tests one by one and each worker would start its own copy.
    """
    shared = {item.module for item in items if _uses_session_sandbox(item)}
    for item in items:
        group = "session-sandbox" if item.module in shared else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))

