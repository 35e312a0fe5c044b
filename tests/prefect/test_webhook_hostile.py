"""The webhook receiver against hostile deliveries (issue 14), over real HTTP on loopback.

Whatever arrives, the answer is a 2xx or a 4xx with the receiver's error shape ``{"status": "refused",
"reason": ...}``; never a 5xx or a traceback, and a body is never read beyond the cap. Prefect is stood in for by a
tiny events sink (a real HTTP server that answers ``POST /events`` with 204 as Prefect does), so that a delivery
that maps to an event gets a real answer without a Prefect server. Cases hypothesis found are ``@example``s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hostile_tally import record  # tests/hostile_tally.py
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from processes import free_port  # tests/processes.py
from pydantic import ValidationError

from receivers.registry_webhook import MAX_BODY_BYTES, ReceiverConfig, create_app

SECRET = "whsec-" + secrets.token_urlsafe(24)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Served:
    """A Starlette app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def events_sink():
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def events(request):
        json.loads(await request.body())
        return Response(status_code=204)

    return Starlette(routes=[Route("/api/events", events, methods=["POST"])])


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with Served(events_sink()) as sink:
        config = ReceiverConfig(secret=SECRET, prefect_api_url=f"http://127.0.0.1:{sink.port}/api", tolerance_s=300)
        with Served(create_app(config)) as receiver:
            yield f"http://127.0.0.1:{receiver.port}/webhooks/mlflow"


def sign(delivery_id: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(SECRET.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def post(url: str, body: bytes, *, timestamp: str | None = None, delivery_id: str | None = None,
         signature: str | None = "sign") -> httpx.Response:
    delivery_id = delivery_id if delivery_id is not None else str(uuid.uuid4())
    timestamp = timestamp if timestamp is not None else str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": timestamp}
    if signature == "sign":
        headers["X-MLflow-Signature"] = sign(delivery_id, timestamp, body)
    elif signature is not None:
        headers["X-MLflow-Signature"] = signature
    return httpx.post(url, content=body, headers=headers, timeout=60)


def _case() -> str:
    """The running test's name: the class of input in issue 22's tally."""
    name = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0].split("[")[0]
    return name.removeprefix("test_")[:48]


def assert_clean(response: httpx.Response, *allowed: int) -> None:
    record("webhook receiver", _case(), response.status_code,
           traceback="Traceback" in response.text)
    assert response.status_code < 500, (response.status_code, response.text)
    if allowed:
        assert response.status_code in allowed, (response.status_code, response.text)
    if response.status_code >= 400:
        payload = response.json()
        assert payload["status"] == "refused" and isinstance(payload["reason"], str), payload


def raw_exchange(port: int, head: bytes, body: bytes) -> bytes:
    """Send a request head and part of a body over a plain socket; return the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(60)  # a safety net for a hang, not a timing assertion
        s.sendall(head + body)
        return s.recv(65536).split(b"\r\n", 1)[0]


# ---- the cases of the issue --------------------------------------------------------------------------------------
def test_a_nan_timestamp_is_refused_even_when_validly_signed(url: str) -> None:
    body = json.dumps({"entity": "model_version", "action": "created", "data": {
        "name": "m", "version": "1", "source": "/srv/m"}}).encode()
    for stamp in ("nan", "NaN", "inf", "-inf", "1e9", "+1", "1.5", "0x10", "1_000"):
        response = post(url, body, timestamp=stamp)
        assert_clean(response, 400)
        assert "X-MLflow-Timestamp must be unix seconds" in response.json()["reason"]


def test_a_huge_declared_body_is_refused_before_it_is_read(url: str) -> None:
    port = int(url.split(":")[2].split("/")[0])
    head = (b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-MLflow-Delivery-Id: d\r\nX-MLflow-Timestamp: 1\r\nContent-Length: 300000000\r\n\r\n")
    # 300 MB declared, 1 KiB sent: the answer comes without waiting for the rest.
    assert raw_exchange(port, head, b"x" * 1024) == b"HTTP/1.1 413 Request Entity Too Large"


def test_a_chunked_body_over_the_cap_is_refused(url: str) -> None:
    port = int(url.split(":")[2].split("/")[0])
    head = (b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-MLflow-Delivery-Id: d\r\nX-MLflow-Timestamp: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 2))
    assert raw_exchange(port, head, body) == b"HTTP/1.1 413 Request Entity Too Large"


@pytest.mark.parametrize("body", [b"[" * 100000 + b"]" * 100000, b'{"a":' * 40 + b"1" + b"}" * 40, b"\xff\xfe{}"],
                         ids=["deep list", "deep object", "not UTF-8"])
def test_an_undecodable_signed_body_is_400(url: str, body: bytes) -> None:
    assert_clean(post(url, body), 400)


@pytest.mark.parametrize("tolerance", [float("inf"), 1e309, float("nan"), 0, -1, 86400 * 365])
def test_a_tolerance_that_turns_freshness_off_is_refused(tolerance: float) -> None:
    with pytest.raises(ValidationError):
        ReceiverConfig(secret=SECRET, prefect_api_url="http://127.0.0.1:9/api", tolerance_s=tolerance)


def test_the_cli_refuses_an_infinite_tolerance() -> None:
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "MLFLOW_WEBHOOK_SECRET": SECRET}
    res = subprocess.run([sys.executable, "-m", "cli.main", "registry-webhook", "--tolerance", "1e309"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2 and "tolerance_s" in res.stdout + res.stderr, res.stdout + res.stderr


# ---- fuzzing -----------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
deliveries = st.fixed_dictionaries(
    {"entity": st.sampled_from(["model_version", "model_version_alias", "model_version_tag"]) | json_values,
     "action": st.sampled_from(["created", "set"]) | json_values,
     "data": st.fixed_dictionaries({}, optional={
         "name": st.text(max_size=20) | json_values, "version": st.text(max_size=5) | json_values,
         "source": st.sampled_from(["/srv/m", "oss://b-1/p", "models:/m/1", "runs:/r/m", "s3://x/y", "http://[x",
                                    "file:///tmp/m"]) | json_values,
         "alias": json_values, "run_id": json_values, "tags": json_values, "key": json_values,
         "value": json_values}) | json_values,
     },
)


@FUZZ
@given(deliveries)
@example({"entity": "model_version", "action": "created", "data": {"name": "m", "version": "1", "source": "http://["}})
@example({"entity": "model_version_alias", "action": "created", "data": {"name": "m", "version": "1",
                                                                        "alias": ["champion"]}})
@example({"entity": "model_version", "action": "created", "data": {"name": "m", "version": "1", "source": "/m",
                                                                  "tags": [1]}})
@example({"entity": "model_version", "action": "created", "data": {"name": "m", "version": 1.5, "source": "/m"}})
@example({"entity": "model_version", "action": "created", "data": {"name": "m", "version": "1",
                                                                  "source": "models:/m/1"}})
def test_any_signed_delivery_is_answered_2xx_or_4xx(url: str, delivery: dict) -> None:
    assert_clean(post(url, json.dumps(delivery).encode()))


@FUZZ
@given(body=st.binary(max_size=4000), timestamp=st.text(max_size=20), delivery_id=st.text(max_size=40),
       signature=st.none() | st.text(max_size=60) | st.just("sign"))
@example(body=b"{}", timestamp="nan", delivery_id="d", signature="sign")
@example(body=b"", timestamp="", delivery_id="\x1f", signature=None)
@example(body=b"{}", timestamp="99999999999999999999", delivery_id="d", signature="sign")
def test_any_request_is_answered_2xx_or_4xx(url: str, body: bytes, timestamp: str, delivery_id: str,
                                            signature: str | None) -> None:
    try:
        response = post(url, body, timestamp=timestamp, delivery_id=delivery_id, signature=signature)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # a header httpx itself will not send (newline, non-Latin-1): nothing reached the receiver
    if response.status_code == 400 and response.headers.get("content-type", "").startswith("text/plain"):
        # A header value HTTP forbids (a control character): uvicorn's parser (h11) refuses the request itself
        # with "400 Invalid HTTP request received." before the receiver sees it.
        assert response.text == "Invalid HTTP request received."
        return
    assert_clean(response)


# ---- issue 22 ----------------------------------------------------------------------------------------------------
GOOD = json.dumps({"entity": "model_version", "action": "created", "data": {
    "name": "m", "version": "1", "source": "/srv/m"}}).encode()


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx",
                                   "multipart/form-data; boundary=x"])
def test_a_delivery_that_is_not_json_by_content_type_is_415(url: str, ctype: str) -> None:
    delivery_id, stamp = str(uuid.uuid4()), str(int(time.time()))
    r = httpx.post(url, content=GOOD, timeout=60, headers={
        "Content-Type": ctype, "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(delivery_id, stamp, GOOD)})
    assert_clean(r, 415)


def test_a_content_length_of_non_ascii_digits_is_refused(url: str) -> None:
    port = int(url.split(":")[2].split("/")[0])
    head = ("POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "X-MLflow-Delivery-Id: d\r\nX-MLflow-Timestamp: 1\r\nContent-Length: \u00b2\r\n\r\n").encode("latin-1")
    status = raw_exchange(port, head, b"{}")
    assert status.split()[1] in (b"400", b"413"), status  # h11 itself may refuse it; never a 500


def test_signed_fields_with_newlines_are_logged_escaped(url: str, caplog: pytest.LogCaptureFixture) -> None:
    forged = "\n2026-01-01 INFO elastic_inference.registry_webhook delivery ok: emitted\x00"
    body = json.dumps({"entity": "model_version", "action": "created", "data": {
        "name": "m" + forged, "version": "1", "source": "/srv/m" + forged}}).encode()
    with caplog.at_level("INFO", logger="elastic_inference.registry_webhook"):
        r = post(url, body, delivery_id="d-" + str(uuid.uuid4()))
    assert_clean(r)
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "elastic_inference.registry_webhook"]
    assert lines, "the delivery was not logged"
    for line in lines:
        assert "\n" not in line and "\x00" not in line, line


@pytest.mark.parametrize("make", ["directory", "missing parent"])
def test_a_replay_file_that_cannot_be_written_is_refused_at_start(tmp_path, make: str) -> None:
    from receivers.registry_webhook import ReplayGuard

    path = tmp_path / "d" if make == "directory" else tmp_path / "missing" / "replay.json"
    if make == "directory":
        path.mkdir()
    with pytest.raises(ValueError, match="replay file"):
        ReplayGuard(600, path)
    config = ReceiverConfig(secret=SECRET, prefect_api_url="http://127.0.0.1:9/api", replay_file=path)
    with pytest.raises(ValueError, match="replay file"):
        create_app(config)


def test_a_replay_file_that_breaks_later_keeps_answering(tmp_path) -> None:
    from receivers.registry_webhook import ReplayGuard

    path = tmp_path / "r" / "replay.json"
    path.parent.mkdir()
    guard = ReplayGuard(600, path)
    path.parent.chmod(0o500)  # no longer writable (root ignores this, so the directory goes instead)
    try:
        import shutil

        shutil.rmtree(path.parent)
        assert guard.claim("a") is True and guard.claim("a") is False  # remembered in memory, no exception
    finally:
        if path.parent.exists():
            path.parent.chmod(0o700)
