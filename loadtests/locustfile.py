"""Locust load test of a TF Serving model behind an Ingress: any model, no hand-written payload.

Run by Locust in its OWN process (``tasks/loadtest.py`` starts ``locust -f loadtests/locustfile.py --headless``):
importing Locust monkey-patches the process with gevent, so the flow never imports this file.

Configuration (environment variables; ``-H`` gives the Ingress address, e.g. ``http://10.0.0.1:80``):

``EI_MODEL``         model name (``/v1/models/{EI_MODEL}``), required
``EI_HOST_HEADER``   Host header of the Ingress rule (e.g. ``test.example.com``); none when empty
``EI_EXTRA_HEADERS`` JSON object of more headers for every request (the header that selects a canary)
``EI_STAGES_FILE``   JSON list of ``{duration_s, users, spawn_rate}`` (or ``EI_STAGES``, the same JSON inline)
``EI_PAYLOAD_FILE``  a ``:predict`` body to send instead of the one built from the model's signature
``EI_WAIT_TIME``     pause of each user between requests in seconds (default 1)
``EI_SIGNATURE``     signature name (default ``serving_default``, else the only predict signature)
``EI_STAGE_LOG``     file the shape appends JSON lines to: when each stage began and when the test ended

Each user reads the model's REST metadata once (``GET /v1/models/{m}/metadata``, request name ``metadata``) and
builds a valid ``:predict`` body from the signature (``loadtests.common.build_predict_body``); the body is shared by
all users once built. Predictions go to ``POST /v1/models/{m}:predict`` named ``predict [stage N]`` after the
stage of the step shape they were sent in, so Locust's per-name statistics are per-stage statistics. A request
fails when the status is not 200 or the answer has no ``predictions``/``outputs``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, ClassVar

from locust import FastHttpUser, LoadTestShape, constant, task

from loadtests.common import (
    ENV_EXTRA_HEADERS,
    ENV_HOST_HEADER,
    ENV_MODEL,
    ENV_PAYLOAD_FILE,
    ENV_SIGNATURE,
    ENV_STAGE_LOG,
    ENV_WAIT_TIME,
    METADATA,
    PREDICT,
    SignatureError,
    build_predict_body,
    load_stages,
    predict_ok,
    request_name,
)

MODEL = os.environ.get(ENV_MODEL, "")
if not MODEL:
    raise SystemExit(f"{ENV_MODEL} is required (the model name TF Serving serves)")
HOST_HEADER = os.environ.get(ENV_HOST_HEADER, "")
EXTRA_HEADERS: dict[str, str] = {str(k): str(v) for k, v in json.loads(os.environ.get(ENV_EXTRA_HEADERS) or "{}").items()}
PAYLOAD_FILE = os.environ.get(ENV_PAYLOAD_FILE, "")
SIGNATURE = os.environ.get(ENV_SIGNATURE) or None
STAGE_LOG = os.environ.get(ENV_STAGE_LOG, "")
WAIT_TIME = float(os.environ.get(ENV_WAIT_TIME, "1") or 1)
PLAN = load_stages(dict(os.environ))


def _log_stage(record: dict[str, Any]) -> None:
    if STAGE_LOG:
        with open(STAGE_LOG, "a") as fh:
            fh.write(json.dumps(record) + "\n")


class StepShape(LoadTestShape):
    """Each stage holds its user count for its duration; the test stops after the last stage."""

    def __init__(self) -> None:
        super().__init__()
        self.stage_index = 0
        self._logged: int | None = None
        self._ended = False

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        index = PLAN.index_at(run_time)
        if index is None:
            if not self._ended:
                self._ended = True
                _log_stage({"event": "end", "time": time.time(), "run_time": run_time})
            return None
        stage = PLAN.stages[index]
        if index != self._logged:
            self._logged = index
            _log_stage(
                {"event": "stage", "index": index, "users": stage.users, "spawn_rate": stage.spawn_rate,
                 "time": time.time(), "run_time": run_time}
            )
        self.stage_index = index
        return stage.users, stage.spawn_rate


class TFServingUser(FastHttpUser):
    wait_time = constant(WAIT_TIME)
    network_timeout = 30.0
    connection_timeout = 10.0
    # The :predict body, built once and shared by every user of this process.
    body: ClassVar[bytes | None] = None

    def _headers(self, json_body: bool = False) -> dict[str, str]:
        h = {"Accept": "application/json", **EXTRA_HEADERS}
        if HOST_HEADER:
            h["Host"] = HOST_HEADER
        if json_body:
            h["Content-Type"] = "application/json"
        return h

    def _stage(self) -> int:
        shape = self.environment.shape_class
        return int(getattr(shape, "stage_index", 0) or 0)

    def on_start(self) -> None:
        if TFServingUser.body is None:
            self._prepare()

    def _prepare(self) -> None:
        if PAYLOAD_FILE:
            with open(PAYLOAD_FILE, "rb") as fh:
                raw = fh.read()
            json.loads(raw)  # a payload that is not JSON stops the run at once, visibly
            TFServingUser.body = raw
            return
        with self.client.get(
            f"/v1/models/{MODEL}/metadata", headers=self._headers(), name=METADATA, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                body = build_predict_body(resp.json(), SIGNATURE)
            except (ValueError, SignatureError) as exc:
                resp.failure(f"cannot build a predict body from the metadata: {exc}")
                return
            resp.success()
        TFServingUser.body = json.dumps(body, separators=(",", ":")).encode()

    @task
    def predict(self) -> None:
        if TFServingUser.body is None:
            self._prepare()  # the metadata was not available yet: try again after the wait
            return
        with self.client.post(
            f"/v1/models/{MODEL}:predict",
            data=TFServingUser.body,
            headers=self._headers(json_body=True),
            name=request_name(PREDICT, self._stage()),
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
                return
            try:
                problem = predict_ok(resp.json())
            except ValueError:
                problem = "the answer is not JSON"
            if problem:
                resp.failure(problem)
            else:
                resp.success()
