"""The model-registry webhook receiver over real HTTP, posting to a real Prefect server (the session harness).

Deliveries are signed exactly as MLflow signs them (mlflow/webhooks/delivery.py) and sent with httpx to the
receiver running under uvicorn on a free loopback port; what reached Prefect is read back from its events API.
"Nothing was emitted" is checked against a barrier: a good delivery sent afterwards whose event is awaited first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_for
from prefect_http import prefect_http  # tests/prefect_http.py
from processes import free_port  # tests/processes.py

from receivers.registry_webhook import EVENT_NAME, ReceiverConfig, create_app

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec-" + secrets.token_urlsafe(24)


class Receiver:
    """The receiver app under uvicorn in a thread of this process (so caplog sees its logs)."""

    def __init__(self, config: ReceiverConfig) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/webhooks/mlflow"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(config), host="127.0.0.1", port=self.port, log_level="info")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        wait_for(lambda: self.server.started, "the receiver to start", timeout=30, interval=0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """Written out independently of the receiver: MLflow's _generate_hmac_signature."""
    mac = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def deliver(
    url: str, entity: str, action: str, data: dict[str, Any], *, secret: str = SECRET,
    delivery_id: str | None = None, timestamp: int | None = None, signature: str | None = "sign",
) -> httpx.Response:
    body = json.dumps({"entity": entity, "action": action, "timestamp": "2026-01-01T00:00:00+00:00", "data": data})
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": ts}
    if signature == "sign":
        headers["X-MLflow-Signature"] = mlflow_signature(secret, delivery_id, ts, body)
    elif signature is not None:
        headers["X-MLflow-Signature"] = signature
    return httpx.post(url, content=body.encode(), headers=headers, timeout=30)


def created(name: str, version: str = "1", source: str = "/srv/models/demo") -> dict[str, Any]:
    return {"name": name, "version": version, "source": source, "run_id": "r" + "0" * 31,
            "tags": {"team": "nlp"}, "description": None}


def read_events(api: str, resource_prefix: str) -> list[dict[str, Any]]:
    with prefect_http(api) as http:
        r = http.post("/events/filter", json={
            "filter": {"event": {"name": [EVENT_NAME]}, "resource": {"id_prefix": [resource_prefix]}},
            "limit": 50,
        })
        r.raise_for_status()
        return r.json()["events"]


def wait_events(api: str, resource_prefix: str, count: int = 1, timeout: float = 90) -> list[dict[str, Any]]:
    return wait_for(lambda: len(events := read_events(api, resource_prefix)) >= count and events,
                    f"{count} {EVENT_NAME} event(s) for {resource_prefix} in Prefect", timeout=timeout, interval=0.5)


@pytest.fixture(scope="module")
def receiver(prefect_api: str) -> Iterator[Receiver]:
    config = ReceiverConfig(secret=SECRET, prefect_api_url=prefect_api, tolerance_s=300, aliases=frozenset({"champion"}))
    with Receiver(config) as r:
        yield r


def _name() -> str:
    return "m-" + uuid.uuid4().hex[:10]


BAD_SIGNATURES = {
    "missing": None,
    "wrong": "v1," + base64.b64encode(b"\0" * 32).decode(),
    "garbled": "v1,not-base64!!",
    "unknown-version": "v2,abc",
}
STALE = {"just-stale": 301, "an-hour-old": 3600, "from-the-future": -3600}
FILTERED = {
    "other-alias": ("model_version_alias", "created", {"alias": "staging", "version": "3"}),
    "tag-event-off": ("model_version_tag", "set", {"version": "3", "key": "deploy", "value": "true"}),
    "registered-model": ("registered_model", "created", {"tags": {}, "description": None}),
}


class Sent:
    """Every delivery of the module, sent once (the event persister flushes every few seconds: waiting once for
    all of them keeps the module fast). ``refused`` and ``ignored`` name models whose events must not exist."""

    def __init__(self) -> None:
        self.responses: dict[str, httpx.Response] = {}
        self.models: dict[str, str] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}

    def send(self, key: str, *args: Any, **kwargs: Any) -> None:
        self.responses[key] = deliver(*args, **kwargs)


@pytest.fixture(scope="module")
def sent(prefect_api: str, receiver: Receiver) -> Sent:
    s = Sent()
    url = receiver.url
    for key in ("oss", "file", "replay", *(f"sig-{k}" for k in BAD_SIGNATURES), *(f"stale-{k}" for k in STALE),
                *(f"filtered-{k}" for k in FILTERED), "other-secret", "tampered"):
        s.models[key] = _name()
    m = s.models
    s.send("oss", url, "model_version", "created", created(m["oss"], "7", "oss://models-bucket/chnsenticorp/7/"))
    s.send("file", url, "model_version", "created", created(m["file"], "2", "file:///srv/models/my%20model"))
    for key, signature in BAD_SIGNATURES.items():
        s.send(f"sig-{key}", url, "model_version", "created", created(m[f"sig-{key}"]), signature=signature)
    s.send("other-secret", url, "model_version", "created", created(m["other-secret"]), secret="not-the-secret")
    for key, age in STALE.items():
        s.send(f"stale-{key}", url, "model_version", "created", created(m[f"stale-{key}"]),
               timestamp=int(time.time()) - age)
    delivery_id = str(uuid.uuid4())
    s.send("replay-first", url, "model_version", "created", created(m["replay"]), delivery_id=delivery_id)
    s.send("replay-again", url, "model_version", "created", created(m["replay"]), delivery_id=delivery_id)
    for key, (entity, action, data) in FILTERED.items():
        s.send(f"filtered-{key}", url, entity, action, {"name": m[f"filtered-{key}"], **data})
    # A body changed after signing.
    delivery_id, ts = str(uuid.uuid4()), str(int(time.time()))
    body = json.dumps({"entity": "model_version", "action": "created", "data": created(m["tampered"])})
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": ts,
               "X-MLflow-Signature": mlflow_signature(SECRET, delivery_id, ts, body)}
    s.responses["tampered"] = httpx.post(
        url, content=body.replace("/srv/models/demo", "/tmp/evil"), headers=headers, timeout=30
    )
    # Barrier: the last good delivery; once its event is stored, every earlier one has been processed.
    s.models["barrier"] = _name()
    s.send("barrier", url, "model_version", "created", created(s.models["barrier"]))
    for key in ("oss", "file", "replay", "barrier"):
        s.events[key] = wait_events(prefect_api, f"mlflow.model.{m[key]}.")
    for key, model in m.items():
        if key not in s.events:
            s.events[key] = read_events(prefect_api, f"mlflow.model.{model}.")
    return s


def test_signed_delivery_becomes_one_prefect_event(sent: Sent) -> None:
    r, model = sent.responses["oss"], sent.models["oss"]
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "emitted"
    (event,) = sent.events["oss"]
    assert event["event"] == "model.version.registered"
    assert event["resource"]["prefect.resource.id"] == f"mlflow.model.{model}.7"
    assert event["resource"]["prefect.resource.name"] == f"{model} v7"
    assert event["payload"] == {
        "name": model, "version": "7", "source": "oss://models-bucket/chnsenticorp/7/", "alias": None,
        "run_id": "r" + "0" * 31, "tags": {"team": "nlp"}, "registry_event": "model_version.created",
        "registry_source": "oss://models-bucket/chnsenticorp/7/",
    }
    assert event["id"] == r.json()["event_id"]
    assert SECRET not in json.dumps(event)


def test_file_uri_source_becomes_a_path(sent: Sent) -> None:
    assert sent.responses["file"].status_code == 200, sent.responses["file"].text
    (event,) = sent.events["file"]
    assert event["payload"]["source"] == "/srv/models/my model"
    assert event["payload"]["registry_source"] == "file:///srv/models/my%20model"


@pytest.mark.parametrize("key", list(BAD_SIGNATURES))
def test_bad_signature_is_refused_and_emits_nothing(sent: Sent, key: str) -> None:
    assert sent.responses[f"sig-{key}"].status_code == 401
    assert sent.events[f"sig-{key}"] == []


def test_signature_with_another_secret_is_refused(sent: Sent) -> None:
    assert sent.responses["other-secret"].status_code == 401
    assert sent.events["other-secret"] == []


def test_tampered_body_is_refused(sent: Sent) -> None:
    assert sent.responses["tampered"].status_code == 401
    assert sent.events["tampered"] == []


@pytest.mark.parametrize("key", list(STALE))
def test_stale_timestamp_is_refused(sent: Sent, key: str) -> None:
    r = sent.responses[f"stale-{key}"]
    assert r.status_code == 401
    assert "stale" in r.json()["reason"]
    assert sent.events[f"stale-{key}"] == []


def test_replayed_delivery_id_is_refused(sent: Sent) -> None:
    assert sent.responses["replay-first"].status_code == 200
    assert sent.responses["replay-again"].status_code == 409
    assert len(sent.events["replay"]) == 1


@pytest.mark.parametrize("key", list(FILTERED))
def test_filtered_registry_events_are_acknowledged_and_ignored(sent: Sent, key: str) -> None:
    r = sent.responses[f"filtered-{key}"]
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ignored"
    assert sent.events[f"filtered-{key}"] == []


def test_alias_event_needs_a_registry_to_find_its_source(receiver: Receiver) -> None:
    # The alias delivery names the version only; with no MLflow tracking URI configured it cannot be resolved.
    r = deliver(receiver.url, "model_version_alias", "created", {"name": _name(), "alias": "champion", "version": "3"})
    assert r.status_code == 422
    assert "tracking URI" in r.json()["reason"]


def test_allowlist_and_tag_filters(prefect_api: str) -> None:
    model = _name()
    config = ReceiverConfig(
        secret=SECRET, prefect_api_url=prefect_api, models=frozenset({model}),
        event_types=frozenset({"model_version.created", "model_version_tag.set"}), deploy_tags={"deploy": "true"},
    )
    with Receiver(config) as rcv:
        other = deliver(rcv.url, "model_version", "created", created(model + "-other"))
        assert other.json()["status"] == "ignored" and "allowlist" in other.json()["reason"]
        wrong_tag = deliver(rcv.url, "model_version_tag", "set",
                            {"name": model, "version": "4", "key": "deploy", "value": "false", "source": "/m"})
        assert wrong_tag.json()["status"] == "ignored"
        tagged = deliver(rcv.url, "model_version_tag", "set",
                         {"name": model, "version": "4", "key": "deploy", "value": "true", "source": "/m"})
        assert tagged.status_code == 200 and tagged.json()["status"] == "emitted", tagged.text
    (event,) = wait_events(prefect_api, f"mlflow.model.{model}.")
    assert event["payload"]["registry_event"] == "model_version_tag.set"
    assert read_events(prefect_api, f"mlflow.model.{model}-other.") == []


def test_prefect_unreachable_answers_502_and_lets_the_retry_through() -> None:
    config = ReceiverConfig(secret=SECRET, prefect_api_url=f"http://127.0.0.1:{free_port()}/api")
    with Receiver(config) as rcv:
        delivery_id = str(uuid.uuid4())
        first = deliver(rcv.url, "model_version", "created", created(_name()), delivery_id=delivery_id)
        assert first.status_code == 502  # MLflow retries 5xx
        retry = deliver(rcv.url, "model_version", "created", created(_name()), delivery_id=delivery_id)
        assert retry.status_code == 502  # not 409: the failed delivery was not remembered


def test_no_secret_or_signature_in_logs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model = _name()
    delivery_id, ts = str(uuid.uuid4()), str(int(time.time()))
    body = json.dumps({"entity": "model_version", "action": "created", "data": created(model)})
    good_sig = mlflow_signature(SECRET, delivery_id, ts, body)
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": ts, "X-MLflow-Signature": good_sig}
    good = httpx.post(receiver.url, content=body, headers=headers, timeout=30)
    assert good.status_code == 200
    bad_sig = mlflow_signature("wrong-" + SECRET, delivery_id + "x", ts, body)
    bad = deliver(receiver.url, "model_version", "created", created(model), signature=bad_sig)
    assert bad.status_code == 401
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert delivery_id in caplog.text  # the receiver did log these deliveries ...
    for needle in (SECRET, good_sig.split(",", 1)[1], bad_sig.split(",", 1)[1]):
        assert needle not in logged  # ... but never the secret or a signature
        assert needle not in good.text + bad.text


def test_emit_model_event_cli(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = _name()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
    }
    cli = Path(sys.executable).with_name("elastic-inference")
    proc = subprocess.run(
        [str(cli), "emit-model-event", "--name", model, "--version", "12", "--source", "oss://ci-models/bert/12",
         "--alias", "champion", "--tag", "commit=abc123"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (event,) = wait_events(prefect_api, f"mlflow.model.{model}.")
    assert event["resource"]["prefect.resource.id"] == f"mlflow.model.{model}.12"
    assert event["payload"]["source"] == "oss://ci-models/bert/12"
    assert event["payload"]["alias"] == "champion" and event["payload"]["tags"] == {"commit": "abc123"}
