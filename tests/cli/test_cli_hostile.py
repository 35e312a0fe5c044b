"""Issue 22, the CLI: each malformed input ends in one line naming what was wrong and exit 2, and leaves nothing.

A malformed ``--faults`` file gave a traceback whose cut-off line dropped the reason; a bad ``--port`` printed
uvicorn's traceback; ``deploy --plan`` on a FIFO hung; a spec that is a symlink to a system file echoed its lines;
``emit-model-event`` without a tracking URI created ``mlflow.db`` in the current directory; a ``sandbox.json`` of the
wrong shape gave "list indices must be integers". The ``--faults`` file and ``sandbox.json`` are also fuzzed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_tally import record  # tests/hostile_tally.py
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli.main import app

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
runner = CliRunner()


def one_line(result, code: int = 2, cls: str = "") -> str:
    out = result.output
    record("CLI", cls or "misc", 400 if result.exit_code == code else 500,
           traceback="Traceback" in out or not (result.exception is None or isinstance(result.exception, SystemExit)))
    assert result.exit_code == code, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return out


@pytest.mark.parametrize("content, reason", [
    (b"oss:\n  rules: [{operation: '*', error_rate: 2}]\n", "error_rate"),
    (b"spot_stockouts: 5\n", "spot_stockouts"),
    (b"[" * 3000, "not valid YAML"),
    (b"\xff\xfe", "not UTF-8"),
    (b"- a\n- b\n", "mapping"),
    (b"nope: 1\n", "nope"),
], ids=["rate", "type", "deep", "binary", "list", "unknown key"])
def test_a_malformed_faults_file_is_refused_up_front_with_its_reason(tmp_path: Path, content: bytes,
                                                                     reason: str) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_bytes(content)
    out = one_line(runner.invoke(app, ["sandbox", "up", "--dir", str(tmp_path / "sb"), "--faults", str(faults)]),
                   cls="--faults")
    assert reason in " ".join(out.split()), out
    assert not (tmp_path / "sb").exists()


def test_a_faults_fifo_is_refused_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "faults.yaml"
    os.mkfifo(fifo)
    out = one_line(runner.invoke(app, ["sandbox", "up", "--dir", str(tmp_path / "sb"), "--faults", str(fifo)]),
                   cls="--faults")
    assert "not a regular file" in out


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_a_port_out_of_range_is_refused(port: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "MLFLOW_WEBHOOK_SECRET": "s" * 32}
    res = subprocess.run([sys.executable, "-m", "cli.main", "registry-webhook", "--port", port], cwd=REPO,
                         capture_output=True, text=True, env=env, timeout=120)
    out = res.stdout + res.stderr
    record("CLI", "--port", 400 if res.returncode == 2 else 500, traceback="Traceback" in out)
    assert res.returncode == 2 and "--port" in out and "Traceback" not in out, out


@pytest.mark.parametrize("make", ["directory", "missing parent"])
def test_a_replay_file_that_cannot_be_written_is_refused_at_start(tmp_path: Path, make: str) -> None:
    path = tmp_path / "dir" if make == "directory" else tmp_path / "missing" / "replay.json"
    if make == "directory":
        path.mkdir()
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "MLFLOW_WEBHOOK_SECRET": "s" * 32}
    res = subprocess.run([sys.executable, "-m", "cli.main", "registry-webhook", "--port", "1",
                          "--replay-file", str(path)], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    out = res.stdout + res.stderr
    record("CLI", "--replay-file", 400 if res.returncode == 2 else 500, traceback="Traceback" in out)
    assert res.returncode == 2 and "replay file" in out and "Traceback" not in out, out


def test_a_fifo_spec_is_refused_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    res = subprocess.run([sys.executable, "-m", "cli.main", "deploy", "--plan", str(fifo)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)  # hung for ever before
    out = res.stdout + res.stderr
    record("CLI", "spec file", 400 if res.returncode == 2 else 500, traceback="Traceback" in out)
    assert res.returncode == 2 and "not a regular file" in out, out


def test_a_spec_that_is_a_symlink_to_a_config_file_does_not_echo_its_lines(tmp_path: Path) -> None:
    system = tmp_path / "debian.sources"  # deb822, a YAML mapping of keys that are not spec groups
    system.write_text("Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nSigned-By: /k.gpg\n")
    tabbed = tmp_path / "services"
    tabbed.write_text("tcpmux\t\t1/tcp\t\t\t# TCP port service multiplexer\n")
    for target in (system, tabbed):
        link = tmp_path / f"spec-{target.name}.yaml"
        link.symlink_to(target)
        out = one_line(runner.invoke(app, ["deploy", "--plan", str(link)]), cls="spec file")
        for secret_line in ("deb.debian.org", "Signed-By", "tcpmux", "multiplexer"):
            assert secret_line not in out, out


def test_emit_model_event_without_a_tracking_uri_creates_no_mlflow_db(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PREFECT_API_URL="http://127.0.0.1:9/api", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "cli.main", "emit-model-event", "--name", "m", "--version", "1",
                          "--source", "models:/m/1"], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    out = res.stdout + res.stderr
    record("CLI", "emit-model-event", 400 if res.returncode == 2 else 500, traceback="Traceback" in out,
           state_left=any(tmp_path.iterdir()))
    assert res.returncode == 2 and "MLFLOW_TRACKING_URI" in out, out
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no mlruns/


@pytest.mark.parametrize("content", [b"[]", b"[1, 2]", b'{"oss_endpoint": [1]}', b'"x"', b"\xff", b"[" * 5000,
                                     b'{"access_key_id": 1}'])
def test_a_sandbox_json_of_the_wrong_shape_is_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "sandbox.json").write_bytes(content)
    spec = REPO / "examples" / "ack-seed.yaml"
    out = one_line(runner.invoke(app, ["deploy", "--plan", "--sandbox-dir", str(tmp_path), str(spec)]),
                   cls="sandbox.json")
    assert "sandbox.json" in out and "list indices" not in out


@FUZZ
@given(content=st.binary(max_size=2000) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["oss", "cs", "kube", "rules", "operation", "error_rate", "spot_stockouts", "instance_type",
                         "zone", "available", "reclaims", "at", "count", "reclaim_rate", "boot_failures", "rate"])
        | st.text(max_size=8), inner, max_size=4), max_leaves=20).map(lambda v: json.dumps(v).encode()))
@example(content=b"oss: &a [*a]\n")
@example(content=b"spot_stockouts: [{instance_type: x, available: 1e999}]\n")
def test_fuzz_the_faults_file(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    d = tmp_path_factory.mktemp("faults")
    (d / "f.yaml").write_bytes(content)
    # --detach with a valid file would start a sandbox: only files the check refuses are run to the end
    from sandbox.faults import load_file

    try:
        load_file(d / "f.yaml")
    except ValueError:
        result = runner.invoke(app, ["sandbox", "up", "--dir", str(d / "sb"), "--faults", str(d / "f.yaml")])
        one_line(result, cls="--faults fuzz")
        assert not (d / "sb").exists()
        return
    record("CLI", "--faults fuzz", 200)
