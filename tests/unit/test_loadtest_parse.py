"""The load test: bodies built from TF Serving signatures, and a REAL Locust subprocess run against a tiny local
TF-Serving-like server on loopback (real sockets), whose files the pure parsers turn into the typed result.

The server answers the metadata and :predict endpoints only for the Ingress Host header, executes the demo model
on every prediction (so the generated body must be valid for it), fails every 7th prediction with a 500, and
counts what it received, so the parsed numbers can be checked against what actually went over the wire.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import uvicorn
from polling import wait_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.demo_model import SIGNATURE_NAME, DemoModel, generate_demo_model
from loadtests.common import (
    SignatureError,
    StagePlan,
    build_predict_body,
    parse_request_name,
    predict_ok,
    request_name,
)
from tasks.loadtest import (
    LoadTestError,
    parse_failures_csv,
    parse_history_csv,
    parse_locust_output,
    parse_stage_log,
    percentile,
    run_locust,
    summarize_stats,
)

HOST = "test.example.com"
MODEL = "chnsenticorp"


# --- pure: bodies from signatures ---------------------------------------------------------------------------------
def _info(dtype: str, dims: list[int] | None) -> dict:
    if dims is None:
        return {"dtype": dtype, "tensor_shape": {"unknown_rank": True}}
    return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d)} for d in dims], "unknown_rank": False}}


def _metadata(inputs: dict, name: str = "serving_default", nested: bool = True) -> dict:
    sigs = {name: {"inputs": inputs, "outputs": {}, "method_name": "tensorflow/serving/predict"}}
    return {"model_spec": {"name": "m"}, "metadata": {"signature_def": {"signature_def": sigs} if nested else sigs}}


def test_row_format_drops_the_batch_dimension_and_fills_valid_values():
    md = _metadata({
        "ids": _info("DT_INT64", [-1, 3]),
        "x": _info("DT_FLOAT", [-1, 2, 2]),
        "flag": _info("DT_BOOL", [-1]),
        "text": _info("DT_STRING", [-1]),
        "image_bytes": _info("DT_STRING", [-1]),
    })
    body = build_predict_body(md)
    assert body["signature_name"] == "serving_default"
    (inst,) = body["instances"]
    assert inst["ids"] == [1, 1, 1]
    assert inst["x"] == [[0.5, 0.5], [0.5, 0.5]]
    assert inst["flag"] is True
    assert inst["text"] == "a"
    assert inst["image_bytes"] == {"b64": "YQ=="}


def test_columnar_format_when_an_input_has_no_batch_dimension():
    md = _metadata({"a": _info("DT_INT32", [2, -1]), "b": _info("DT_HALF", None)}, nested=False)
    body = build_predict_body(md)
    assert "instances" not in body
    assert body["inputs"] == {"a": [[1], [1]], "b": [0.5]}


def test_signature_choice():
    two = {"metadata": {"signature_def": {"signature_def": {
        "classify": {"inputs": {"x": _info("DT_FLOAT", [-1])}, "method_name": "tensorflow/serving/classify"},
        "predict_it": {"inputs": {"x": _info("DT_FLOAT", [-1])}, "method_name": "tensorflow/serving/predict"},
    }}}}
    assert build_predict_body(two)["signature_name"] == "predict_it"
    assert build_predict_body(two, "classify")["signature_name"] == "classify"
    with pytest.raises(SignatureError, match="nope"):
        build_predict_body(two, "nope")
    with pytest.raises(SignatureError, match="no signature_def"):
        build_predict_body({"metadata": {}})
    with pytest.raises(SignatureError, match="complex"):
        build_predict_body(_metadata({"z": _info("DT_COMPLEX64", [-1])}))


def test_the_demo_models_signature_gives_a_body_the_demo_model_accepts(tmp_path):
    model = DemoModel.load(generate_demo_model(tmp_path / "m"))
    body = build_predict_body({"metadata": {"signature_def": {"signature_def": model.signature()}}})
    inst = body["instances"][0]
    columns = {k: [v] for k, v in inst.items()}
    out = model.predict(columns)
    assert len(out["probabilities"]) == 1 and len(out["probabilities"][0]) == 2


def test_names_and_predict_answers():
    assert parse_request_name(request_name("predict", 3)) == ("predict", 3)
    assert parse_request_name("metadata") == ("metadata", None)
    assert predict_ok({"predictions": [[0.1, 0.9]]}) is None
    assert predict_ok({"outputs": {}}) is None
    assert "error" in predict_ok({"error": "Servable not found"})
    assert predict_ok([1]) is not None


def test_percentile_follows_locusts_rule():
    """Same answers as locust.stats.calculate_response_time_percentile (asked in a subprocess: importing Locust
    here would monkey-patch the test process with gevent)."""
    cases = [
        {10 * i: 1 for i in range(1, 11)},
        {5: 99, 900: 1},
        {1: 3, 2: 5, 40: 7, 410: 2, 3300: 1},
        {7: 1},
    ]
    percents = [0.5, 0.66, 0.95, 0.99, 1.0]
    code = (
        "import json,sys\n"
        "from locust.stats import calculate_response_time_percentile as f\n"
        "cases=[{int(k):v for k,v in c.items()} for c in json.loads(sys.argv[1])]\n"
        "print(json.dumps([[f(c, sum(c.values()), p) for p in json.loads(sys.argv[2])] for c in cases]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cases), json.dumps(percents)],
                         capture_output=True, text=True, check=True).stdout
    expected = json.loads(out)
    assert [[percentile(c, p) for p in percents] for c in cases] == expected
    assert percentile({}, 0.95) is None


def test_stage_plan():
    plan = StagePlan.from_json([{"duration_s": 2, "users": 1}, {"duration_s": 3, "users": 4, "spawn_rate": 2}])
    assert plan.total_s == 5
    assert [plan.index_at(t) for t in (0, 1.9, 2, 4.99, 5)] == [0, 0, 1, 1, None]
    with pytest.raises(ValueError):
        StagePlan.from_json([])


def test_summary_without_a_stage_log_anchors_the_plan_at_the_first_request():
    plan = StagePlan.from_json([{"duration_s": 10, "users": 1}, {"duration_s": 10, "users": 2}])
    entries = [
        {"name": "predict [stage 0]", "method": "POST", "num_requests": 4, "num_failures": 1,
         "total_response_time": 40, "max_response_time": 20, "response_times": {"5": 2, "15": 1, "20": 1},
         "start_time": 1000.0, "last_request_timestamp": 1009.0},
        {"name": "predict [stage 1]", "method": "POST", "num_requests": 10, "num_failures": 0,
         "total_response_time": 100, "max_response_time": 10, "response_times": {"10": 10},
         "start_time": 1010.0, "last_request_timestamp": 1019.5},
        {"name": "metadata", "method": "GET", "num_requests": 2, "num_failures": 0, "total_response_time": 2,
         "max_response_time": 1, "response_times": {"1": 2}, "start_time": 999.5, "last_request_timestamp": 1000.0},
    ]
    r = summarize_stats(entries, plan)
    assert (r.requests, r.failures, r.metadata_requests) == (14, 1, 2)
    assert r.started_at == 999.5
    assert [(s.index, s.requests, s.failures, s.start_s, s.end_s) for s in r.stages] == [
        (0, 4, 1, 0.0, 10.0), (1, 10, 0, 10.0, 20.0)]
    assert r.stages[1].rps == 1.0 and r.stages[1].p95_ms == 10
    assert r.stages[0].error_rate == 0.25


# --- a real Locust run -------------------------------------------------------------------------------------------
class FakeTFServing:
    """TF Serving's REST metadata and :predict for the demo model, behind a Host check, counting requests."""

    def __init__(self, model: DemoModel, fail_every: int = 7) -> None:
        self.model = model
        self.fail_every = fail_every
        self.counts = {"metadata": 0, "predict": 0, "predict_failed": 0, "wrong_host": 0}
        self.lock = threading.Lock()

    def _host_ok(self, request: Request) -> bool:
        ok = request.headers.get("host") == HOST
        if not ok:
            with self.lock:
                self.counts["wrong_host"] += 1
        return ok

    async def metadata(self, request: Request) -> JSONResponse:
        if not self._host_ok(request):
            return JSONResponse({"error": "default backend - 404"}, status_code=404)
        with self.lock:
            self.counts["metadata"] += 1
        return JSONResponse({
            "model_spec": {"name": MODEL, "signature_name": "", "version": "1623831335"},
            "metadata": {"signature_def": {"signature_def": self.model.signature()}},
        })

    async def predict(self, request: Request) -> JSONResponse:
        if not self._host_ok(request):
            return JSONResponse({"error": "default backend - 404"}, status_code=404)
        body = await request.json()
        with self.lock:
            self.counts["predict"] += 1
            n = self.counts["predict"]
            if n % self.fail_every == 0:
                self.counts["predict_failed"] += 1
                return JSONResponse({"error": "injected failure"}, status_code=500)
        try:
            assert body["signature_name"] == SIGNATURE_NAME
            columns: dict[str, list] = {}
            for inst in body["instances"]:
                for k, v in inst.items():
                    columns.setdefault(k, []).append(v)
            out = self.model.predict(columns)
        except (AssertionError, KeyError, ValueError) as exc:
            return JSONResponse({"error": f"bad request: {exc}"}, status_code=400)
        return JSONResponse({"predictions": out["probabilities"]})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route(f"/v1/models/{MODEL}/metadata", self.metadata, methods=["GET"]),
            Route(f"/v1/models/{MODEL}:predict", self.predict, methods=["POST"]),
        ])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = DemoModel.load(generate_demo_model(tmp_path_factory.mktemp("model") / MODEL))
    fake = FakeTFServing(model)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, "the fake server to start", timeout=30, interval=0.05)
    yield fake, f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


PLAN = StagePlan.from_json([
    {"duration_s": 2, "users": 2, "spawn_rate": 10},
    {"duration_s": 2.5, "users": 5, "spawn_rate": 10},
])


@pytest.fixture(scope="module")
def run(server, tmp_path_factory):
    fake, url = server
    out = tmp_path_factory.mktemp("locust")
    lines: list[str] = []
    before = dict(fake.counts)
    result = run_locust(url, MODEL, PLAN, out, host_header=HOST, wait_time_s=0.05, on_line=lines.append)
    sent = {k: fake.counts[k] - before[k] for k in fake.counts}
    return result, sent, out, lines


def test_real_run_counts_match_what_the_server_saw(run):
    result, sent, out, lines = run
    assert sent["wrong_host"] == 0, "every request must carry the Ingress Host header"
    assert sent["predict"] > 10
    assert result.requests == sent["predict"]
    assert result.failures == sent["predict_failed"] > 0  # only the injected 500s: every body was valid
    assert result.metadata_requests == sent["metadata"] >= 1 and result.metadata_failures == 0
    assert result.error_rate == pytest.approx(result.failures / result.requests, abs=1e-6)
    assert any("injected failure" in e.error for e in result.errors)
    assert lines, "Locust's output is streamed line by line"


def test_real_run_per_stage_stats(run):
    result, _, _, _ = run
    assert [s.index for s in result.stages] == [0, 1]
    assert [s.users for s in result.stages] == [2, 5]
    assert sum(s.requests for s in result.stages) == result.requests
    assert sum(s.failures for s in result.stages) == result.failures
    s0, s1 = result.stages
    assert s0.start_s == 0 and s0.end_s == s1.start_s and s1.end_s >= s1.start_s
    assert s1.end_s == pytest.approx(result.duration_s, abs=1e-3)
    for s in result.stages:
        assert s.requests > 0 and s.rps > 0
        assert s.p50_ms is not None and s.p50_ms <= s.p95_ms <= s.p99_ms
    assert result.p50_ms <= result.p95_ms <= result.p99_ms <= result.max_ms


def test_real_run_files_and_history(run):
    result, _, out, _ = run
    assert Path(result.html_path).read_text().lstrip().lower().startswith("<!doctype html")
    assert Path(result.json_path).is_file() and Path(result.log_path).is_file()
    assert Path(result.csv_prefix + "_stats_history.csv").is_file()
    assert result.history, "the Aggregated history rows are parsed"
    assert all(p.users <= 5 for p in result.history)
    assert max(p.users for p in result.history) >= 2
    # the pure parsers agree with the task on the same files
    again = parse_locust_output(out, PLAN)
    assert again.model_dump() == result.model_dump()
    starts, end = parse_stage_log((out / "stage-log.jsonl").read_text())
    assert sorted(starts) == [0, 1] and end is not None and end > starts[1]
    assert parse_history_csv((out / "locust_stats_history.csv").read_text()) != []
    # Locust writes its failures CSV and its JSON stats at slightly different moments of shutdown: a request
    # in flight when the run stops (at most one per user, <= 5 here) may be in one and not yet in the other.
    in_csv = sum(e.occurrences for e in parse_failures_csv((out / "locust_failures.csv").read_text()))
    assert abs(in_csv - result.failures) <= 5


def test_payload_file_overrides_the_generated_body(server, tmp_path):
    fake, url = server
    payload = tmp_path / "body.json"
    payload.write_text(json.dumps({"signature_name": SIGNATURE_NAME, "instances": [
        {"input_ids": [1] * 128, "input_mask": [1] * 128, "segment_ids": [0] * 128}]}))
    before = dict(fake.counts)
    plan = StagePlan.from_json([{"duration_s": 1.5, "users": 2, "spawn_rate": 10}])
    r = run_locust(url, MODEL, plan, tmp_path / "out", host_header=HOST, wait_time_s=0.1, payload_file=payload)
    assert fake.counts["metadata"] == before["metadata"], "no metadata read with a payload file"
    assert r.requests == fake.counts["predict"] - before["predict"] > 0
    assert r.failures == fake.counts["predict_failed"] - before["predict_failed"]


def test_a_wrong_host_header_is_counted_as_failures_not_a_crash(server, tmp_path):
    _, url = server
    plan = StagePlan.from_json([{"duration_s": 1, "users": 1, "spawn_rate": 10}])
    r = run_locust(url, MODEL, plan, tmp_path / "out", host_header="other.example.com", wait_time_s=0.2)
    assert r.requests == 0 and r.metadata_failures == r.metadata_requests > 0


def test_a_locustfile_error_is_a_load_test_error(tmp_path):
    plan = StagePlan.from_json([{"duration_s": 1, "users": 1, "spawn_rate": 1}])
    with pytest.raises(LoadTestError, match="exited with code"):
        run_locust("http://127.0.0.1:9", "", plan, tmp_path / "out")  # no model name: the locustfile refuses
