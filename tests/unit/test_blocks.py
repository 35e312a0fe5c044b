"""AlibabaCloudCredentials and AckCluster: secrets stay masked, endpoints resolve, the SDK clients sign with them.

The wire checks use a tiny local HTTP server that records what the SDK clients send (headers only); it is not an
emulation of the cloud, just a place to look at the request.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import oss2
import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.request import CommonRequest
from pydantic import ValidationError

from blocks.alibaba import AckCluster, AlibabaCloudCredentials

AK_ID = "LTAI5tTestAccessKey0001"


def new_secret() -> str:
    # Made at run time so a traceback's source lines can never contain it.
    return "sk" + secrets.token_hex(15)


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def token() -> str:
    return "sts." + secrets.token_urlsafe(48)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict] = []


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    """An HTTP server on loopback that records each request and answers with an error in the service's style."""
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            rec.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
            if self.headers.get("Authorization", "").startswith("OSS"):
                body = b""
                self.send_response(404)
                self.send_header("x-oss-request-id", "5F0000000000000000000001")
            else:
                err = {"code": "ErrorClusterNotFound", "message": "cluster not found", "requestId": "R-1"}
                err |= {"Code": err["code"], "Message": err["message"], "RequestId": err["requestId"]}
                body = json.dumps(err).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def creds(secret: str, token: str | None = None, **kw: object) -> AlibabaCloudCredentials:
    return AlibabaCloudCredentials(access_key_id=AK_ID, access_key_secret=secret, security_token=token, **kw)


def cs_get(client, cred: AlibabaCloudCredentials, uri: str) -> None:
    protocol, host = cred.cs_domain()
    req = CommonRequest()
    req.set_domain(host)
    req.set_protocol_type(protocol)
    req.set_method("GET")
    req.set_version("2015-12-15")
    req.set_uri_pattern(uri)
    req.add_header("Content-Type", "application/json")
    client.do_action_with_exception(req)


# ---- masking ---------------------------------------------------------------------------------------------------
def test_secret_and_token_are_masked_everywhere(secret: str, token: str) -> None:
    c = creds(secret, token)
    for text in (repr(c), str(c), c.model_dump_json(), json.dumps(c.model_dump(mode="json")), f"{c!r}"):
        assert secret not in text and token not in text
    dumped = json.loads(c.model_dump_json())
    assert dumped["access_key_secret"] == "**********"
    assert dumped["security_token"] == "**********"
    assert dumped["access_key_id"] == AK_ID
    # The value is still there for the moment a client is built.
    assert c.access_key_secret.get_secret_value() == secret


def test_ack_cluster_nests_the_credentials(secret: str, token: str) -> None:
    cluster = AckCluster(cluster_id="c210fbedb96674b9eaf15f2dc47d169a8", credentials=creds(secret, token))
    assert isinstance(cluster.credentials, AlibabaCloudCredentials)
    assert cluster.credentials.access_key_secret.get_secret_value() == secret
    for text in (repr(cluster), str(cluster), cluster.model_dump_json()):
        assert secret not in text and token not in text
    nested = json.loads(cluster.model_dump_json())["credentials"]
    assert nested["access_key_secret"] == "**********"
    assert cluster.kubeconfig_minutes == 60 and cluster.private_ip is False
    # Built from plain data too (what a flow parameter or a saved block document gives back).
    again = AckCluster.model_validate(
        {"cluster_id": "cabc12345678", "credentials": {"access_key_id": AK_ID, "access_key_secret": secret}}
    )
    assert again.credentials.access_key_secret.get_secret_value() == secret


def test_ack_cluster_kubeconfig_lifetime_bounds(secret: str) -> None:
    with pytest.raises(ValidationError, match="kubeconfig_minutes"):
        AckCluster(cluster_id="cabc12345678", credentials=creds(secret), kubeconfig_minutes=5)


# ---- endpoints -------------------------------------------------------------------------------------------------
def test_default_endpoints_follow_the_region(secret: str) -> None:
    c = creds(secret)
    assert c.region_id == "cn-hangzhou"
    assert c.cs_domain() == ("https", "cs.cn-hangzhou.aliyuncs.com")
    assert c.oss_endpoint_url() == "https://oss-cn-hangzhou.aliyuncs.com"
    bj = creds(secret, region_id="cn-beijing")
    assert bj.cs_domain() == ("https", "cs.cn-beijing.aliyuncs.com")
    assert bj.oss_endpoint_url() == "https://oss-cn-beijing.aliyuncs.com"
    assert c.sls_endpoint_url() == "https://cn-hangzhou.log.aliyuncs.com"
    assert bj.get_sls_client()._endpoint == "cn-beijing.log.aliyuncs.com:443"
    # a bare IP (the sandbox's) stays bare: the SDK then sends the project in Host only
    ip = creds(secret, sls_endpoint="127.9.8.7")
    assert ip.sls_endpoint_url() == "127.9.8.7" and ip.get_sls_client()._isRowIp


@pytest.mark.parametrize(
    ("cs", "oss", "cs_domain", "oss_url"),
    [
        ("http://127.0.0.1:18080", "http://127.0.0.1:18081", ("http", "127.0.0.1:18080"), "http://127.0.0.1:18081"),
        ("cs-vpc.cn-shanghai.aliyuncs.com", "oss-cn-shanghai-internal.aliyuncs.com",
         ("https", "cs-vpc.cn-shanghai.aliyuncs.com"), "https://oss-cn-shanghai-internal.aliyuncs.com"),
        ("https://cs.example.internal/", "https://oss.example.internal:8443/",
         ("https", "cs.example.internal"), "https://oss.example.internal:8443"),
        ("", "", ("https", "cs.cn-hangzhou.aliyuncs.com"), "https://oss-cn-hangzhou.aliyuncs.com"),
    ],
)
def test_endpoint_overrides(secret: str, cs: str, oss: str, cs_domain: tuple[str, str], oss_url: str) -> None:
    c = creds(secret, cs_endpoint=cs, oss_endpoint=oss)
    assert c.cs_domain() == cs_domain
    assert c.oss_endpoint_url() == oss_url


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("cs_endpoint", "ftp://cs.example.com", "must be host[:port] or http(s)://host[:port]"),
        ("oss_endpoint", "http://", "must be host[:port] or http(s)://host[:port]"),
        ("region_id", "cn hangzhou", "must look like cn-hangzhou"),
        ("region_id", "", "must look like cn-hangzhou"),
        ("access_key_id", "LTAI with space", "without spaces"),
        ("access_key_id", "", "non-empty"),
    ],
)
def test_bad_fields_are_rejected_without_the_secret(field: str, value: str, needle: str, secret: str) -> None:
    kw = {"access_key_id": AK_ID, "access_key_secret": secret, field: value}
    with pytest.raises(ValidationError) as exc:
        AlibabaCloudCredentials(**kw)
    assert field in str(exc.value) and needle in str(exc.value)
    assert secret not in str(exc.value)
    assert secret not in "".join(traceback.format_exception(exc.value))


def test_missing_secret_is_rejected(secret: str) -> None:
    with pytest.raises(ValidationError, match="access_key_secret"):
        AlibabaCloudCredentials(access_key_id=AK_ID)


def test_get_client_dispatch(secret: str) -> None:
    c = creds(secret)
    assert type(c.get_client("cs")).__name__ == "AcsClient"
    bucket = c.get_client("oss", bucket="elastic-inference-models")
    assert isinstance(bucket, oss2.Bucket) and bucket.bucket_name == "elastic-inference-models"
    assert isinstance(c.get_oss_service(), oss2.Service)
    with pytest.raises(ValueError, match="bucket="):
        c.get_client("oss")
    with pytest.raises(ValueError, match="client_type"):
        c.get_client("ecs")  # type: ignore[arg-type]


# ---- what the clients send -------------------------------------------------------------------------------------
def test_access_key_clients_sign_without_a_token(recorder, secret: str, caplog) -> None:
    rec, url = recorder
    c = creds(secret, cs_endpoint=url, oss_endpoint=url)
    assert type(c.get_oss_auth()) is oss2.Auth
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ServerException) as exc:
        cs_get(c.get_client("cs"), c, "/clusters/cnotthere000/nodepools")
    assert exc.value.get_error_code() == "ErrorClusterNotFound"
    with pytest.raises(oss2.exceptions.NotFound):
        c.get_client("oss", bucket="elastic-inference-models").get_object_meta("chnsenticorp/1/saved_model.pb")
    cs_req, oss_req = rec.requests[0], rec.requests[-1]
    assert cs_req["path"].startswith("/clusters/cnotthere000/nodepools")
    assert cs_req["headers"]["authorization"].startswith(f"acs {AK_ID}:")
    assert "x-acs-security-token" not in cs_req["headers"]
    assert oss_req["headers"]["authorization"].startswith(f"OSS {AK_ID}:")
    assert "x-oss-security-token" not in oss_req["headers"]
    for r in rec.requests:
        assert secret not in json.dumps(r)
    assert secret not in caplog.text


def test_sts_token_clients_send_the_token(recorder, secret: str, token: str, caplog, monkeypatch) -> None:
    rec, url = recorder
    c = creds(secret, token, cs_endpoint=url, oss_endpoint=url)
    assert type(c.get_oss_auth()) is oss2.StsAuth
    monkeypatch.setenv("DEBUG", "sdk")  # aliyunsdkcore's own switch to log every request's headers
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ServerException):
        cs_get(c.get_client("cs"), c, "/clusters/cnotthere000/nodepools")
    with pytest.raises(oss2.exceptions.NotFound):
        c.get_client("oss", bucket="elastic-inference-models").get_object_meta("k")
    cs_headers, oss_headers = rec.requests[0]["headers"], rec.requests[-1]["headers"]
    assert cs_headers["x-acs-security-token"] == token
    assert cs_headers["authorization"].startswith(f"acs {AK_ID}:")
    assert oss_headers["x-oss-security-token"] == token
    assert oss_headers["authorization"].startswith(f"OSS {AK_ID}:")
    for r in rec.requests:
        assert secret not in json.dumps(r)
    # The SDKs log what they sign and send at DEBUG; neither the secret nor the token may reach the logs.
    assert caplog.records, "expected the SDKs to log at DEBUG"
    assert secret not in caplog.text and token not in caplog.text
    assert "******" in caplog.text


def test_building_clients_logs_no_secret(secret: str, token: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for c in (creds(secret), creds(secret, token)):
        c.get_client("cs")
        c.get_client("oss", bucket="elastic-inference-models")
        c.get_oss_service()
        c.get_sls_client()
    assert secret not in caplog.text and token not in caplog.text


def test_block_forms_title_every_field_with_units_and_both_examples_import_from_blocks() -> None:
    props = AckCluster.model_json_schema()["properties"]
    assert props["credentials"]["title"] == "Credentials"  # not the nested block's class name
    assert "access to the cluster" in props["credentials"]["description"]
    assert props["kubeconfig_minutes"]["title"] == "Kubeconfig lifetime (min)"
    assert props["private_ip"]["title"] == "Private IP"
    for block in (AckCluster, AlibabaCloudCredentials):
        assert all(p.get("title") and p.get("description") for p in block.model_json_schema()["properties"].values())
        example = block.get_code_example()
        assert f"from blocks import {block.__name__}" in example, example


def test_cluster_reference_is_a_block_or_the_name_of_one(secret: str) -> None:
    from pydantic import TypeAdapter

    from blocks import AckClusterRef, load_cluster

    cluster = AckCluster(cluster_id="cabc12345678", credentials=creds(secret))
    adapter = TypeAdapter(AckClusterRef)
    assert adapter.validate_python("prod-ack") == "prod-ack"
    assert adapter.validate_python(cluster) is cluster
    assert load_cluster(cluster) is cluster
    options = adapter.json_schema()["anyOf"]
    assert options[0]["$ref"].endswith("AckCluster") and options[1]["title"] == "Block name"
