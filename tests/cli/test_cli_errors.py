"""Errors a user can cause end the CLI with one clear line and a non-zero exit code; ``--debug`` shows the traceback.

Issue 14: missing files, /dev/zero, deeply nested files, a missing --sandbox-dir, an unreachable endpoint and a
manifest the API server refuses gave tracebacks. The CLI's file arguments are also fuzzed (in-process, typer's
CliRunner) and a few cases run as a user runs them (subprocess).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli.main import app
from core.demo_model import generate_demo_model

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=True)


def assert_one_clean_line(result, code: int) -> str:
    out = result.output
    assert result.exit_code == code, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    return lines[0]


def spec_file(tmp_path: Path, **changes) -> Path:
    model = tmp_path / "models" / "chnsenticorp"
    if not model.exists():
        generate_demo_model(model, version=1623831335)
    data = yaml.safe_load((REPO / "examples" / "sandbox.yaml").read_text())
    data["model"]["local_dir"] = str(model)
    data["serving"]["version"] = "202601010000"
    for group, values in changes.items():
        data[group] = {**data.get(group, {}), **values}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda p: p / "missing.yaml", 2, "cannot read the spec"),
        (lambda p: Path("/dev/zero"), 2, "larger than 1048576 bytes"),
        (lambda p: p, 2, "cannot read the spec"),  # a directory
    ],
    ids=["missing file", "/dev/zero", "a directory"],
)
def test_unreadable_spec_files_are_one_line(tmp_path: Path, make, code: int, words: str) -> None:
    result = invoke("deploy", "--plan", str(make(tmp_path)))
    # The spec error's own header line names the file; the detail is on it.
    assert words in result.output
    assert result.exit_code == code
    assert "Traceback" not in result.output


def test_a_deeply_nested_spec_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "deep.json"
    f.write_text('{"serving": ' + "[" * 50000 + "]" * 50000 + "}")
    line = assert_one_clean_line(invoke("deploy", "--plan", str(f)), 2)
    assert str(f) in line and "nested deeper than 32" in line


def test_a_spec_error_names_the_field_and_exits_2(tmp_path: Path) -> None:
    result = invoke("deploy", "--plan", str(spec_file(tmp_path, storage={"bucket": "models\n"})))
    assert result.exit_code == 2
    assert "storage.bucket: bucket 'models\\n' breaks the OSS bucket naming rules" in result.output
    assert "Traceback" not in result.output


def test_a_missing_sandbox_dir_is_one_line(tmp_path: Path) -> None:
    result = invoke("deploy", "--plan", "--sandbox-dir", str(tmp_path / "nowhere"), str(spec_file(tmp_path)))
    line = assert_one_clean_line(result, 2)
    assert line.startswith("error: ") and "sandbox.json not found" in line


def test_a_deploy_without_a_model_source_is_refused_before_any_call(tmp_path: Path) -> None:
    f = spec_file(tmp_path, model={"local_dir": None})
    result = invoke("deploy", "--sandbox-dir", str(tmp_path / "nowhere"), str(f))
    assert result.exit_code == 2
    assert "model.local_dir: set model.local_dir" in result.output and "Traceback" not in result.output


def test_an_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    port = closed_port()
    state = tmp_path / "sb"
    state.mkdir()
    (state / "sandbox.json").write_text(json.dumps({
        "access_key_id": "LTAI-test", "access_key_secret": "not-a-real-secret", "region": "cn-hangzhou",
        "cs_endpoint": f"http://127.0.0.1:{port}", "oss_endpoint": f"http://127.0.0.1:{port}",
        "cluster_id": "c0123456789abcdef", "kubeconfig": str(state / "kubeconfig"),
    }))
    res = subprocess.run(
        [sys.executable, "-m", "cli.main", "deploy", "--plan", "--server", "--sandbox-dir", str(state),
         str(spec_file(tmp_path))], cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "--debug shows the traceback" in errors[0], res.stderr
    assert "Connection refused" in errors[0] or "Failed to establish" in errors[0]
    assert "not-a-real-secret" not in res.stdout + res.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke("--debug", "deploy", "--plan", "--sandbox-dir", str(tmp_path / "nowhere"),
                    str(spec_file(tmp_path)))
    assert isinstance(result.exception, FileNotFoundError)


def test_a_manifest_the_api_server_refuses_is_one_line(tmp_path: Path, sandbox) -> None:
    # A namespace that does not exist: the API server answers 404 NotFound to the dry-run create.
    f = spec_file(tmp_path, serving={"namespace": "nowhere"})
    result = invoke("deploy", "--plan", "--server", "--sandbox-dir", str(sandbox.state_dir), str(f))
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert "nowhere" in errors[0] and "404" in errors[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["deploy", "--plan", "/nonexistent/spec.yaml"], 2, "cannot read the spec"),
        (["deploy", "--plan", "/dev/zero"], 2, "larger than"),
        (["deploy", "--plan", "--sandbox-dir", "/nonexistent/sandbox", "examples/ack-seed.yaml"], 2,
         "sandbox.json not found"),
        (["sandbox", "status", "--dir", "/nonexistent/sandbox"], 3, "no sandbox running"),
    ],
    ids=["missing spec", "dev zero", "missing sandbox dir", "status of nothing"],
)
def test_as_a_user_runs_it(args: list[str], code: int, words: str) -> None:
    res = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == code, res.stdout + res.stderr
    assert words in res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr


FILE_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FILE_FUZZ
@given(content=st.binary(max_size=3000), suffix=st.sampled_from([".yaml", ".json", ".yml", ""]))
@example(content=b"serving:\n  tolerations: " + b"[" * 3000, suffix=".yaml")
@example(content=b"a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                 b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                 b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n", suffix=".yaml")
@example(content=b"", suffix=".json")
@example(content=b"\x00", suffix=".yaml")
def test_any_spec_file_content_is_refused_cleanly(tmp_path_factory: pytest.TempPathFactory, content: bytes,
                                                  suffix: str) -> None:
    path = tmp_path_factory.mktemp("cli") / f"spec{suffix}"
    path.write_bytes(content)
    result = invoke("deploy", "--plan", str(path))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output


@FILE_FUZZ
@given(name=st.text(min_size=1, max_size=60).filter(lambda t: "\x00" not in t))
@example(name="../" * 30)
@example(name="-")
@example(name="--debug")
def test_any_sandbox_dir_argument_is_refused_cleanly(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    spec = spec_file(tmp_path_factory.mktemp("cli"))
    result = invoke("deploy", "--plan", "--sandbox-dir", name, str(spec))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
