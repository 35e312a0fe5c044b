"""`make test` runs on pytest-xdist workers with ``--dist loadgroup``; tests/conftest.py puts each module (and all
the modules on the session sandbox together) in one group so that module-scoped servers start once.

pytest-xdist carries the group in the node id ("<id>@<group>"); when a pytest release stops honouring that
(pytest 9.2, pytest-dev/pytest-xdist#1386) grouping is silently lost, so this checks it where it matters."""

from __future__ import annotations

import pytest


def test_under_loadgroup_this_module_is_its_own_group(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not on a pytest-xdist worker with --dist loadgroup")
    module = "tests/test_xdist_groups.py"
    assert request.node.nodeid == f"{module}::{request.node.name}@{module}"
