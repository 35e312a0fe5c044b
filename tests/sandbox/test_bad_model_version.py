"""A bad version is a bad *model*: the demo model's ``serving`` object (``extra_latency_ms``, ``error_rate``) is
written by ``generate_demo_model`` into ``model.json`` and applied by the sandbox's TF-Serving REST API, served here
by uvicorn on loopback and called with httpx. A failed run is answered as TF Serving answers a failed Session run:
HTTP 500 (INTERNAL) with ``{"error": "..."}``. The error share is checked against a 5-sigma binomial bound."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from polling import wait_for

from core.demo_model import DEFAULT_VERSION, DemoModel, ModelFormatError, example_inputs, generate_demo_model
from sandbox.runtime.capacity import Capacity, CapacitySettings
from sandbox.runtime.core import ServerCore
from sandbox.runtime.rest import RestApi
from sandbox.runtime.servables import DemoServable

MODEL = "chnsenticorp"


class _Server:
    """One model server (RestApi) for one version directory, on a loopback port of its own."""

    def __init__(self, vdir) -> None:
        core = ServerCore()
        st = core.version_state(MODEL, DEFAULT_VERSION)
        st.state, st.servable = "AVAILABLE", DemoServable(DemoModel.load(vdir))
        api = RestApi(core, Capacity(CapacitySettings(concurrency=8, service_time_ms=0)))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(api, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[sock])), daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, what="the model server")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve(tmp_path):
    servers: list[_Server] = []

    def make(name: str, **behaviour) -> str:
        vdir = generate_demo_model(tmp_path / name, DEFAULT_VERSION, **behaviour)
        servers.append(_Server(vdir))
        return servers[-1].url

    yield make
    for s in servers:
        s.stop()


BODY = {"inputs": example_inputs(batch=1)}


def _predict(c: httpx.Client, url: str) -> httpx.Response:
    return c.post(f"{url}/v1/models/{MODEL}:predict", json=BODY)


def test_defaults_write_the_same_model_as_before(tmp_path):
    manifest = json.loads((generate_demo_model(tmp_path, 7) / "model.json").read_text())
    assert "serving" not in manifest
    m = DemoModel.load(tmp_path / "7")
    assert (m.extra_latency_ms, m.error_rate) == (0.0, 0.0)
    bad = json.loads((generate_demo_model(tmp_path, 8, extra_latency_ms=120, error_rate=0.25) / "model.json")
                     .read_text())
    assert bad["serving"] == {"extra_latency_ms": 120.0, "error_rate": 0.25}


@pytest.mark.parametrize(("kw", "field"), [({"error_rate": 1.5}, "serving.error_rate"),
                                           ({"error_rate": -0.1}, "serving.error_rate"),
                                           ({"extra_latency_ms": -1}, "serving.extra_latency_ms"),
                                           ({"error_from_token": -1}, "serving.error_from_token"),
                                           ({"error_from_token": 2.5}, "serving.error_from_token"),
                                           ({"error_from_token": True}, "serving.error_from_token")])
def test_bad_behaviour_values_are_refused_naming_the_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        generate_demo_model(tmp_path, 1, **kw)
    vdir = generate_demo_model(tmp_path, 2)
    manifest = json.loads((vdir / "model.json").read_text())
    manifest["serving"] = {k: v for k, v in kw.items()}
    (vdir / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=field):
        DemoModel.load(vdir)


def test_a_failing_version_fails_its_share_like_tf_serving(serve):
    good, bad = serve("good"), serve("bad", error_rate=0.3)
    n, p = 400, 0.3
    with httpx.Client(timeout=30) as c:
        assert all(_predict(c, good).status_code == 200 for _ in range(100))
        codes = [_predict(c, bad) for _ in range(n)]
    failed = [r for r in codes if r.status_code != 200]
    assert {r.status_code for r in failed} == {500}
    body = failed[0].json()
    assert list(body) == ["error"] and "error_rate" in body["error"]
    assert all("outputs" in r.json() for r in codes if r.status_code == 200)
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(len(failed) - mean) <= 5 * sd, (len(failed), mean, sd)


def test_a_slow_version_holds_each_request_longer(serve):
    slow = serve("slow", extra_latency_ms=150)
    with httpx.Client(timeout=30) as c:
        for _ in range(5):
            t0 = time.perf_counter()
            assert _predict(c, slow).status_code == 200
            assert time.perf_counter() - t0 >= 0.150  # a lower bound: the model holds the slot that long


def test_a_version_broken_on_part_of_the_input_space_fails_only_there(serve, tmp_path):
    """``error_from_token``: every input reaching that token id fails (INTERNAL, 500), every other one is answered:
    the flow's own sample (every token id 1, loadtests.common.build_predict_body) passes, real text fails."""
    bad = serve("partial", error_from_token=1000)
    assert json.loads((tmp_path / "partial" / str(DEFAULT_VERSION) / "model.json").read_text())["serving"][
        "error_from_token"] == 1000
    low = {"inputs": example_inputs(token_ids=[[1] * 128])}
    high = {"inputs": example_inputs(token_ids=[[2, 999, 1000, 3]])}
    masked = example_inputs(token_ids=[[2, 3]])  # id 5000 sits only under a mask of 0: not read
    masked["input_ids"][0][100] = 5000
    with httpx.Client(timeout=30) as c:
        predict = f"{bad}/v1/models/{MODEL}:predict"
        assert all(c.post(predict, json=low).status_code == 200 for _ in range(20))
        assert c.post(predict, json={"inputs": masked}).status_code == 200
        failed = c.post(predict, json=high)
    assert failed.status_code == 500 and "error_from_token 1000" in failed.json()["error"], failed.text
