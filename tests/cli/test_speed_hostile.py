"""Issue 22: a --speed the clock cannot run at is refused up front and never persisted.

``sandbox up --speed inf`` (or ``nan``, ``1e308``) used to be accepted; the clock stored in the state database then
made every later start crash or answer 500 on every create, so the state directory was broken for good.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import urllib3
import yaml
from hostile_tally import record  # tests/hostile_tally.py
from typer.testing import CliRunner

from cli.main import app
from sandbox.clock import MAX_SPEED, SimClock
from sandbox.runner import Sandbox
from sandbox.store import Store

REPO = Path(__file__).resolve().parents[2]
BAD_SPEEDS = ["inf", "-inf", "nan", "1e308", "0", "-1", str(MAX_SPEED * 2)]


@pytest.mark.parametrize("command", [["sandbox", "up", "--detach"], ["sandbox", "up"], ["demo"]])
def test_the_cli_refuses_a_speed_the_clock_cannot_run_at(tmp_path: Path, command: list[str]) -> None:
    for speed in BAD_SPEEDS:
        state = tmp_path / "sb"
        result = CliRunner().invoke(app, [*command, "--dir", str(state), "--speed", speed])
        record("CLI", "--speed", 400 if result.exit_code == 2 else 500, traceback="Traceback" in result.output,
               state_left=state.exists())
        assert result.exit_code == 2, (speed, result.output)
        assert "--speed" in result.output and "Traceback" not in result.output, result.output
        assert not state.exists(), speed  # nothing created, nothing persisted


def test_as_a_user_runs_it(tmp_path: Path) -> None:
    state = tmp_path / "sb"
    for cmd in (["cli.main", "sandbox"], ["sandbox"]):  # the CLI, and what `up --detach` starts
        res = subprocess.run([sys.executable, "-m", *cmd, "up", "--dir", str(state), "--speed", "inf"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        out = res.stdout + res.stderr
        assert res.returncode == 2 and "--speed" in out and "Traceback" not in out, out
        assert not state.exists()


@pytest.mark.parametrize("speed", [math.inf, math.nan, 1e308, 0.0])
def test_the_sandbox_refuses_it_before_creating_its_state(tmp_path: Path, speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        Sandbox(tmp_path / "sb", speed=speed)
    assert not (tmp_path / "sb").exists()


@pytest.mark.parametrize("stored", [math.inf, "x"])
def test_a_clock_an_older_version_stored_does_not_break_the_state_dir(tmp_path: Path, stored: object) -> None:
    state = tmp_path / "sb"
    state.mkdir()
    store = Store(state / "state.db")
    store.set_meta("clock", stored)
    store.close()
    urllib3.disable_warnings()
    with Sandbox(state, speed=50.0) as sb:
        token = yaml.safe_load(Path(sb.info["kubeconfig"]).read_text())["users"][0]["user"]["token"]
        r = requests.post(sb.info["kube_endpoint"] + "/api/v1/namespaces/default/configmaps", verify=False,
                          headers={"Authorization": f"Bearer {token}"}, json={"metadata": {"name": "c"}}, timeout=30)
        assert r.status_code == 201, r.text
    store = Store(state / "state.db")
    try:
        again = store.get_meta("clock")
    finally:
        store.close()
    SimClock(50.0, start=again)  # what was persisted can be read back


def test_the_clock_refuses_to_resume_from_a_value_it_cannot_represent() -> None:
    for bad in (math.inf, math.nan, 1e308, -5.0, "x", True):
        with pytest.raises(ValueError):
            SimClock(10.0, start=bad)
