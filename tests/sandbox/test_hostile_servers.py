"""Issue 22: the sandbox's servers answer malformed input as the real ones do, through real sockets.

Kubernetes API (real ``Status`` 400/401/422), OSS (XML ``Error``), ACK OpenAPI (``{"code","message","requestId"}``)
and the admin endpoint (``{"error"}``): every case of the issue has a test here, and each server is fuzzed with
hypothesis (random paths, queries, headers, bodies) within a small budget. Nothing may answer 5xx, and a refused
request leaves nothing behind (no bucket, no node pool, no applied fault).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from email.utils import formatdate
from pathlib import Path

import httpx
import oss2
import pytest
import yaml
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from hostile_tally import record  # tests/hostile_tally.py
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- plumbing ------------------------------------------------------------------------------------------------------
class _Tracebacks(logging.Handler):
    """Counts log records that carry a traceback: the servers' own logged exceptions (``log.exception``) and
    uvicorn's "Exception in ASGI application"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Exception in ASGI application" in record.getMessage():
            self.count += 1


@pytest.fixture(autouse=True)
def no_tracebacks(request):
    handler = _Tracebacks()
    loggers = [logging.getLogger(n) for n in ("sandbox", "uvicorn.error")]
    for lg in loggers:
        lg.addHandler(handler)
    yield
    for lg in loggers:
        lg.removeHandler(handler)
    server = {"kube": "kubernetes API", "oss": "OSS", "ack": "ACK OpenAPI", "admin": "admin endpoint"}
    name = next((v for k, v in server.items() if k in request.node.name), "kubernetes API")
    record(name, "server log", None, traceback=handler.count > 0)
    assert handler.count == 0, "a server logged a traceback"


@pytest.fixture(scope="module")
def info(sandbox) -> dict:
    return sandbox.info


@pytest.fixture(scope="module")
def kube(info):
    token = yaml.safe_load(Path(info["kubeconfig"]).read_text())["users"][0]["user"]["token"]
    with httpx.Client(base_url=info["kube_endpoint"], verify=False, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def kube_ok(r: httpx.Response, cls: str, *codes: int) -> dict | None:
    """A kube answer is < 500, and a 4xx is a Status of that code (or the mux's plain 404 page)."""
    record("kubernetes API", cls, r.status_code)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if codes:
        assert r.status_code in codes, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        if r.headers.get("content-type", "").startswith("text/plain"):
            assert r.status_code == 404 and r.text == "404 page not found\n", r.text[:200]
            return None
        status = r.json()
        assert status["kind"] == "Status" and status["code"] == r.status_code, status
        return status
    return None


def oss_ok(r: httpx.Response, cls: str, *codes: int) -> str | None:
    record("OSS", cls, r.status_code)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if codes:
        assert r.status_code in codes, (r.status_code, r.text[:500])
    if r.status_code >= 400 and r.request.method != "HEAD":
        assert r.text.startswith("<?xml") and "<Error>" in r.text, r.text[:300]
        return r.text.split("<Code>", 1)[1].split("</Code>", 1)[0]
    return None


def ack_ok(status: int, body: dict, cls: str) -> None:
    record("ACK OpenAPI", cls, status)
    assert status < 500, (status, body)
    if status >= 400:
        assert set(body) >= {"code", "message", "requestId"}, body


def alias_bomb(levels: int) -> bytes:
    """A few hundred bytes of YAML that expand to 10**(levels+1) values ("billion laughs")."""
    names = "abcdefghij"
    lines = ["a: &a [1,1,1,1,1,1,1,1,1,1]"]
    for prev, name in zip(names[:levels], names[1:levels + 1], strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 10)}]")
    return ("\n".join(lines) + "\n").encode()


# ---- Kubernetes API ------------------------------------------------------------------------------------------------
def test_a_non_ascii_bearer_token_is_401(info) -> None:
    r = httpx.get(info["kube_endpoint"] + "/api/v1/namespaces", verify=False, timeout=60,
                  headers={"Authorization": "Bearer \xe9t\xe9".encode("latin-1")})
    assert kube_ok(r, "auth", 401)["reason"] == "Unauthorized"


@pytest.mark.parametrize("token", [{"rv": 1, "start": [1, 2]}, {"rv": "x", "start": ["a", "b"]}, [1], "x", None])
def test_a_malformed_continue_token_is_400(kube, token) -> None:
    cont = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
    assert kube_ok(kube.get("/api/v1/namespaces", params={"continue": cont}), "continue", 400)["reason"] == "BadRequest"


@pytest.mark.parametrize("options", [{"propagationPolicy": 5}, {"gracePeriodSeconds": [1]}, {"dryRun": 3},
                                     {"dryRun": "All"}, {"preconditions": "x"}, {"gracePeriodSeconds": 1.5},
                                     {"orphanDependents": "yes"}, {"propagationPolicy": "Sideways"}])
def test_delete_options_of_the_wrong_types_are_refused_and_nothing_is_deleted(kube, options) -> None:
    name = f"keep-{uuid.uuid4().hex[:8]}"
    assert kube.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": name}}).status_code == 201
    r = kube.request("DELETE", f"/api/v1/namespaces/default/configmaps/{name}", json=options)
    status = kube_ok(r, "delete options", 400, 422)
    assert status["reason"] in ("BadRequest", "Invalid")
    still = kube.get(f"/api/v1/namespaces/default/configmaps/{name}")
    record("kubernetes API", "delete options", None, state_left=still.status_code != 200)
    assert still.status_code == 200


@pytest.mark.parametrize("body", [b'{"a":' * 900 + b"1" + b"}" * 900,
                                  b'{"metadata":{"name":"deep"},"data":' + b"[" * 500 + b"]" * 500 + b"}",
                                  b"[" * 5000 + b"]" * 5000], ids=["object 900", "data 500", "list 5000"])
def test_deeply_nested_json_is_400(kube, body: bytes) -> None:
    r = kube.post("/api/v1/namespaces/default/configmaps", content=body, headers={"Content-Type": "application/json"})
    assert kube_ok(r, "deep JSON", 400)["reason"] == "BadRequest"


def test_a_yaml_alias_bomb_is_400_before_it_expands(kube) -> None:
    r = kube.post("/api/v1/namespaces/default/configmaps", content=alias_bomb(8),
                  headers={"Content-Type": "application/yaml"})
    assert "aliases" in kube_ok(r, "YAML aliases", 400)["message"]


def test_a_watch_with_a_non_numeric_resource_version_is_400_not_a_cut_stream(kube) -> None:
    r = kube.get("/api/v1/namespaces", params={"watch": "1", "resourceVersion": "abc", "timeoutSeconds": "1"})
    kube_ok(r, "watch", 400)


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e9", "²", "1.5"])
def test_a_watch_timeout_that_is_not_an_integer_is_400(kube, timeout: str) -> None:
    kube_ok(kube.get("/api/v1/namespaces", params={"watch": "1", "timeoutSeconds": timeout}), "watch", 400)


@pytest.mark.parametrize("selector", ["a==b==c", "a,", "a=" + "x" * 64, "!", "a in (b", "a notin b", "é=1",
                                      "a>b", "a=b c", "=a", "a,,b"])
def test_label_selectors_the_real_parser_refuses_are_400(kube, selector: str) -> None:
    r = kube.get("/api/v1/pods", params={"labelSelector": selector})
    assert kube_ok(r, "label selector", 400)["reason"] == "BadRequest"
    w = kube.get("/api/v1/pods", params={"labelSelector": selector, "watch": "1", "timeoutSeconds": "1"})
    kube_ok(w, "label selector", 400)


@pytest.mark.parametrize("selector", ["a in ()", "x in (foo,,baz),y,z notin ()", "a=", "!a", "a in (in)", "a>1",
                                      "app.kubernetes.io/name=x"])
def test_label_selectors_the_real_parser_accepts_still_list(kube, selector: str) -> None:
    kube_ok(kube.get("/api/v1/pods", params={"labelSelector": selector}), "label selector", 200)


def test_annotations_over_256_kib_are_422(kube) -> None:
    r = kube.post("/api/v1/namespaces/default/configmaps",
                  json={"metadata": {"name": "big-annotations", "annotations": {"a": "x" * (256 * 1024)}}})
    status = kube_ok(r, "annotations", 422)
    assert status["details"]["causes"][0]["field"] == "metadata.annotations", status
    assert kube.get("/api/v1/namespaces/default/configmaps/big-annotations").status_code == 404


@pytest.mark.parametrize("key", ["../x", "..", ".", "a/b", "", "x" * 254, "é"])
def test_configmap_keys_the_real_server_refuses_are_422(kube, key: str) -> None:
    r = kube.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "bad-key"}, "data": {key: "1"}})
    status = kube_ok(r, "ConfigMap keys", 422)
    assert status["details"]["causes"][0]["field"].startswith("data["), status


def test_a_field_manager_over_128_bytes_is_422(kube) -> None:
    r = kube.post("/api/v1/namespaces/default/configmaps", params={"fieldManager": "m" * 129},
                  json={"metadata": {"name": "long-manager"}})
    assert kube_ok(r, "fieldManager", 422)["message"].startswith('CreateOptions.meta.k8s.io "" is invalid')
    r = kube.post("/api/v1/namespaces/default/configmaps", params={"fieldManager": "a\x01b"},
                  json={"metadata": {"name": "long-manager"}})
    kube_ok(r, "fieldManager", 422)


@pytest.mark.parametrize("patch", [{"$patch": "bogus"}, {"data": {"$patch": "x"}}])
def test_an_unknown_patch_directive_is_400_and_changes_nothing(kube, patch: dict) -> None:
    name = f"p-{uuid.uuid4().hex[:8]}"
    kube.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": name}, "data": {"a": "1"}})
    r = kube.patch(f"/api/v1/namespaces/default/configmaps/{name}", content=json.dumps(patch),
                   headers={"Content-Type": "application/strategic-merge-patch+json"})
    kube_ok(r, "$patch", 400)
    assert kube.get(f"/api/v1/namespaces/default/configmaps/{name}").json()["data"] == {"a": "1"}


def test_non_ascii_digits_in_numeric_parameters_are_400(kube) -> None:
    kube_ok(kube.get("/api/v1/namespaces/default/pods/p/log", params={"tailLines": "²"}), "numbers", 400, 404)
    kube_ok(kube.get("/api/v1/pods", params={"limit": "²"}), "numbers", 400)


_KUBE_PATHS = st.sampled_from(["/api/v1/namespaces", "/api/v1/namespaces/default/configmaps",
                               "/api/v1/namespaces/default/configmaps/x", "/apis/apps/v1/deployments",
                               "/apis/apps/v1/namespaces/default/deployments/d/scale", "/api/v1/pods",
                               "/api/v1/namespaces/default/pods/p/log", "/apis/coordination.k8s.io/v1/leases"])
_QUERY_KEYS = st.sampled_from(["labelSelector", "fieldSelector", "continue", "limit", "watch", "resourceVersion",
                               "timeoutSeconds", "fieldManager", "dryRun", "fieldValidation", "propagationPolicy",
                               "gracePeriodSeconds", "tailLines", "force"])
_CTYPES = st.sampled_from(["application/json", "application/yaml", "application/merge-patch+json",
                           "application/strategic-merge-patch+json", "application/json-patch+json",
                           "application/apply-patch+yaml", "text/plain", ""])
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4), max_leaves=15)


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]), path=_KUBE_PATHS | st.text(max_size=40),
       query=st.dictionaries(_QUERY_KEYS, st.text(max_size=30), max_size=4), ctype=_CTYPES,
       body=st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()))
@example(method="DELETE", path="/api/v1/namespaces/default/configmaps/x", query={}, ctype="application/json",
         body=b'{"preconditions": {"uid": 1}}')
@example(method="GET", path="/api/v1/pods", query={"labelSelector": "a in (b,", "watch": "1"}, ctype="", body=b"")
def test_fuzz_the_kubernetes_api(kube, method, path, query, ctype, body) -> None:
    if query.get("watch") is not None:
        query["timeoutSeconds"] = "1"  # a valid watch streams until its timeout
    url = "/" + path.lstrip("/")
    try:
        r = kube.request(method, url, params=query, content=body if method != "GET" else None,
                         headers={"Content-Type": ctype} if ctype else {})
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
        return  # a URL httpx itself will not send
    kube_ok(r, "fuzz")


# ---- OSS -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oss(info):
    auth = oss2.Auth(info["access_key_id"], info["access_key_secret"])
    bucket = oss2.Bucket(auth, info["oss_endpoint"], f"hostile-{uuid.uuid4().hex[:10]}")
    bucket.create_bucket()
    bucket.put_object("k", b"0123456789")
    return bucket


def _signed_url(oss, key: str = "k", **params) -> str:
    return oss.sign_url("GET", key, 600, params=params or None)


@pytest.mark.parametrize("scheme", ["OSS {ak}:\u00e9\u00e9", "OSS2 AccessKeyId:{ak},Signature:\u00e9",
                                    "OSS4-HMAC-SHA256 Credential={ak}/20260101/cn-hangzhou/oss/aliyun_v4_request,"
                                    "Signature=\u00e9"])
def test_a_non_ascii_signature_is_a_mismatch_not_a_500(info, oss, scheme: str) -> None:
    headers = {"Authorization": scheme.format(ak=info["access_key_id"]).encode("latin-1"),
               "Date": formatdate(usegmt=True), "x-oss-date": "20260101T000000Z"}
    r = httpx.get(f"{info['oss_endpoint']}/{oss.bucket_name}/k", headers=headers, timeout=60)
    assert oss_ok(r, "signatures") in ("SignatureDoesNotMatch", "RequestTimeTooSkewed", "InvalidArgument",
                                       "AccessDenied")


def test_a_non_ascii_url_signature_is_a_mismatch(info, oss) -> None:
    url = _signed_url(oss).replace("Signature=", "Signature=%C3%A9")
    assert oss_ok(httpx.get(url, timeout=60), "signatures", 403) == "SignatureDoesNotMatch"


@pytest.mark.parametrize("field", ["Expires", "x-oss-expires"])
def test_non_ascii_digits_in_expiry_fields_are_refused(info, oss, field: str) -> None:
    if field == "Expires":
        url = _signed_url(oss)
        url = url.split("Expires=")[0] + "Expires=%C2%B2&" + url.split("Expires=")[1].split("&", 1)[1]
    else:
        url = (f"{info['oss_endpoint']}/{oss.bucket_name}/k?x-oss-signature-version=OSS4-HMAC-SHA256"
               "&x-oss-date=20260101T000000Z&x-oss-expires=%C2%B2&x-oss-credential=a&x-oss-signature=b")
    assert oss_ok(httpx.get(url, timeout=60), "numbers", 403) == "AccessDenied"


def test_a_part_number_of_non_ascii_digits_is_invalid_argument(oss) -> None:
    upload = oss.init_multipart_upload("mp")
    r = httpx.put(oss.sign_url("PUT", "mp", 600, params={"partNumber": "²", "uploadId": upload.upload_id}),
                  content=b"x", timeout=60)
    assert oss_ok(r, "numbers", 400) == "InvalidArgument"
    oss.abort_multipart_upload("mp", upload.upload_id)


@pytest.mark.parametrize("name", ["ab²", "a٣b", "ab\u00b9c"])
def test_a_bucket_name_with_non_ascii_digits_is_refused_and_not_created(info, name: str) -> None:
    # oss2 refuses such a name itself, so the request is signed here as OSS documents V1 (HMAC-SHA1 of
    # "PUT\n\n\n<Date>\n/<bucket>/"), and sent as any other client could.
    date = formatdate(usegmt=True)
    sts = f"PUT\n\n\n{date}\n/{name}/"
    sig = base64.b64encode(hmac.new(info["access_key_secret"].encode(), sts.encode(), hashlib.sha1).digest()).decode()
    r = httpx.put(f"{info['oss_endpoint']}/{oss2.urlquote(name)}/", timeout=60,
                  headers={"Date": date, "Authorization": f"OSS {info['access_key_id']}:{sig}"})
    assert oss_ok(r, "bucket names", 400) == "InvalidBucketName"
    auth = oss2.Auth(info["access_key_id"], info["access_key_secret"])
    names = [b.name for b in oss2.BucketIterator(oss2.Service(auth, info["oss_endpoint"]))]
    record("OSS", "bucket names", None, state_left=name in names)
    assert name not in names


@pytest.mark.parametrize("value", ["bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000,
                                   "bytes=\u0663-\u0664"], ids=["start", "end", "suffix", "arabic digits"])
def test_a_range_of_thousands_of_digits_is_answered(info, oss, value: str) -> None:
    r = httpx.get(_signed_url(oss), headers={"Range": value.encode()}, timeout=60)
    oss_ok(r, "Range", 200, 206)


def test_user_metadata_over_8_kb_is_refused_and_nothing_is_written(oss) -> None:
    with pytest.raises(oss2.exceptions.OssError) as exc:
        oss.put_object("meta", b"x", headers={f"x-oss-meta-m{i}": "v" * 1000 for i in range(10)})
    record("OSS", "user metadata", exc.value.status)
    assert exc.value.status == 400 and exc.value.code == "InvalidArgument"
    assert not oss.object_exists("meta")


_OSS_PARAMS = st.sampled_from(["acl", "uploads", "uploadId", "partNumber", "prefix", "marker", "max-keys",
                               "encoding-type", "list-type", "continuation-token", "delimiter", "Expires",
                               "OSSAccessKeyId", "Signature", "x-oss-expires", "x-oss-signature-version"])
_OSS_HEADERS = st.sampled_from(["Range", "x-oss-meta-a", "Content-MD5", "x-oss-acl", "x-oss-copy-source",
                                "Authorization", "x-oss-range-behavior", "Content-Length", "If-Match", "Date"])


@FUZZ
@given(method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
       key=st.text(min_size=0, max_size=30), params=st.dictionaries(_OSS_PARAMS, st.text(max_size=20), max_size=3),
       headers=st.dictionaries(_OSS_HEADERS, st.text(st.characters(min_codepoint=32, max_codepoint=255),
                                                     max_size=30), max_size=3),
       body=st.binary(max_size=200), signed=st.booleans())
@example(method="PUT", key="", params={}, headers={}, body=b"", signed=False)
@example(method="GET", key="\r", params={}, headers={}, body=b"", signed=True)
def test_fuzz_oss(info, oss, method, key, params, headers, body, signed) -> None:
    headers = {k: v.strip() for k, v in headers.items() if k != "Content-Length" or v.strip().isdigit()}
    if signed:
        try:
            url = oss.sign_url(method, key or "k", 600, headers=headers, params=params or None)
        except (ValueError, UnicodeError, oss2.exceptions.ClientError):
            return  # oss2 refuses the key itself (blank, or starting with "?"): nothing reaches the server
    else:
        url = f"{info['oss_endpoint']}/{oss.bucket_name}/{oss2.urlquote(key)}"
    try:
        r = httpx.request(method, url, params=None if signed else params, headers=headers,
                          content=body if method in ("PUT", "POST") else None, timeout=60)
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
        return
    oss_ok(r, "fuzz")


# ---- ACK OpenAPI ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cs(info) -> AcsClient:
    return AcsClient(info["access_key_id"], info["access_key_secret"], info["region"], auto_retry=False)


def _ack_request(info, method: str, uri: str, raw: bytes | None = None, nonce: str | None = None) -> CommonRequest:
    r = CommonRequest(domain=info["cs_endpoint"].split("//", 1)[1], version="2015-12-15", uri_pattern=uri,
                      product="CS")
    r.set_protocol_type("http")
    r.set_method(method)
    r.add_path_param("ClusterId", info["cluster_id"])
    if nonce:
        r.add_header("x-acs-signature-nonce", nonce)
    if raw is not None:
        r.set_content_type("application/json")
        r.set_content(raw)
    return r


def _ack_call(cs: AcsClient, req: CommonRequest) -> tuple[int, dict]:
    try:
        return 200, json.loads(cs.do_action_with_exception(req))
    except ServerException as e:
        # aliyunsdkcore reads only capitalised keys; ACK's lower-case body is in the message (sandbox.ack.errors)
        raw = e.get_error_msg().split("ServerResponseBody: ", 1)[-1]
        try:
            return e.get_http_status(), json.loads(raw)
        except ValueError:
            return e.get_http_status(), {"code": e.get_error_code(), "message": e.get_error_msg(),
                                         "requestId": e.get_request_id()}


def _pool_names(cs: AcsClient, info) -> list[str]:
    _, body = _ack_call(cs, _ack_request(info, "GET", "/clusters/[ClusterId]/nodepools"))
    return [p["nodepool_info"]["name"] for p in body.get("nodepools", [])]


def test_a_replayed_classic_signed_create_is_refused_with_signature_nonce_used(info, cs) -> None:
    name = f"replay-{uuid.uuid4().hex[:6]}"
    body = json.dumps({"nodepool_info": {"name": name, "type": "ess"}, "scaling_group": {
        "instance_types": ["ecs.gn6i-c4g1.xlarge"], "vswitch_ids": ["vsw-sandbox0a"], "key_pair": "sandbox-key",
        "system_disk_category": "cloud_essd", "system_disk_size": 120, "desired_size": 0}}).encode()
    req = _ack_request(info, "POST", "/clusters/[ClusterId]/nodepools", body, nonce=uuid.uuid4().hex)
    req.trans_to_acs_request()  # what AcsClient does before signing; then sign as it does
    roa = req.request
    headers = roa.get_signed_header(info["region"], info["access_key_id"], info["access_key_secret"])
    url = roa.get_url(info["region"], info["access_key_id"], info["access_key_secret"])
    first = httpx.post(f"http://{info['cs_endpoint'].split('//', 1)[1]}{url}", headers=headers, content=body,
                       timeout=60)
    assert first.status_code in (200, 201, 202), first.text
    pool_id = first.json()["nodepool_id"]
    _ack_call(cs, _ack_request(info, "DELETE", f"/clusters/[ClusterId]/nodepools/{pool_id}?force=true"))
    again = httpx.post(f"http://{info['cs_endpoint'].split('//', 1)[1]}{url}", headers=headers, content=body,
                       timeout=60)  # the captured request, byte for byte
    ack_ok(again.status_code, again.json(), "replay")
    assert (again.status_code, again.json()["code"]) == (400, "SignatureNonceUsed"), again.text
    pools = [p for p in _pool_names(cs, info) if p == name]
    record("ACK OpenAPI", "replay", None, state_left=len(pools) > 1)
    assert len(pools) <= 1


def test_the_project_client_signs_every_call_with_a_fresh_nonce(info) -> None:
    from blocks.alibaba import AlibabaCloudCredentials
    from clients.ack import AckApi

    creds = AlibabaCloudCredentials(access_key_id=info["access_key_id"], access_key_secret=info["access_key_secret"],
                                    region_id=info["region"], cs_endpoint=info["cs_endpoint"])
    api = AckApi(creds, info["cluster_id"], max_attempts=1)
    seen = []
    original = api._client.do_action_with_exception

    def spy(req):
        seen.append(req.get_headers().get("x-acs-signature-nonce"))
        return original(req)

    api._client.do_action_with_exception = spy
    for _ in range(3):  # the same call again is not a replay: each attempt is signed with a fresh nonce
        assert api.describe_cluster()["cluster_id"] == info["cluster_id"]
    assert len(set(seen)) == 3 and all(seen), seen


@pytest.mark.parametrize("raw", [b'{"a":' * 900 + b"1" + b"}" * 900, b"[" * 5000 + b"]" * 5000],
                         ids=["object 900", "list 5000"])
def test_a_deeply_nested_body_is_invalid_parameter(info, cs, raw: bytes) -> None:
    status, body = _ack_call(cs, _ack_request(info, "POST", "/clusters/[ClusterId]/nodepools", raw))
    ack_ok(status, body, "deep JSON")
    assert (status, body["code"]) == (400, "InvalidParameter"), body


def test_a_non_ascii_classic_signature_is_a_mismatch(info) -> None:
    r = httpx.get(f"{info['cs_endpoint']}/clusters/{info['cluster_id']}/nodepools", timeout=60,
                  headers={"Authorization": f"acs {info['access_key_id']}:\u00e9\u00e9".encode("latin-1"),
                           "Date": formatdate(usegmt=True)})
    ack_ok(r.status_code, r.json(), "signatures")
    assert (r.status_code, r.json()["code"]) == (400, "SignatureDoesNotMatch")


def test_an_unsigned_huge_body_is_refused_before_it_is_read(info) -> None:
    import socket

    host, port = info["cs_endpoint"].split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.settimeout(60)  # a safety net for a hang, not a timing assertion
        s.sendall(b"POST /clusters/c/nodepools HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 200000000\r\n\r\n" + b"x" * 1024)
        status = s.recv(65536).split(b"\r\n", 1)[0]
    record("ACK OpenAPI", "body bound", int(status.split()[1]))
    assert status.split()[1] == b"413", status


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       uri=st.sampled_from(["/clusters/[ClusterId]/nodepools", "/clusters/[ClusterId]/nodepools/np-x",
                            "/clusters/[ClusterId]", "/tasks/t-1", "/clusters/[ClusterId]/nodepools/np-x/nodes",
                            "/clusters/[ClusterId]/nodes"]) | st.text(min_size=1, max_size=20).map(lambda t: "/" + t),
       raw=st.none() | st.binary(max_size=300) | _json.map(lambda v: json.dumps(v).encode()))
def test_fuzz_the_ack_openapi_signed(info, cs, method, uri, raw) -> None:
    try:
        status, body = _ack_call(cs, _ack_request(info, method, uri, raw))
    except Exception as e:  # noqa: BLE001 - a URL or header the SDK itself cannot build: nothing was sent
        if type(e).__name__ in ("ClientException", "InvalidURL", "UnicodeEncodeError", "ValueError"):
            return
        raise
    ack_ok(status, body, "fuzz")


# ---- admin endpoint ------------------------------------------------------------------------------------------------
def _admin(info, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, info["admin_endpoint"] + path, timeout=60,
                         headers={"Authorization": f"Bearer {info['admin_token']}", **kw.pop("headers", {})}, **kw)


_NO_FAULTS = json.loads(json.dumps({}))  # replaced by the first GET below


@pytest.fixture(scope="module", autouse=True)
def _no_faults(info):
    global _NO_FAULTS
    _NO_FAULTS = _admin(info, "GET", "/faults").json()["faults"]


def admin_ok(r: httpx.Response, cls: str, *codes: int) -> None:
    record("admin endpoint", cls, r.status_code)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if codes:
        assert r.status_code in codes, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str)


def test_a_fault_naming_an_unknown_instance_type_is_422_and_not_applied(info) -> None:
    before = _admin(info, "GET", "/faults").json()["faults"]
    r = _admin(info, "PUT", "/faults", content=json.dumps(
        {"spot_stockouts": [{"instance_type": "ecs.nope.xlarge", "available": 0}], "reclaim_rate": 0.5}))
    admin_ok(r, "faults", 422)
    assert "spot_stockouts.0.instance_type" in r.json()["error"]
    after = _admin(info, "GET", "/faults").json()["faults"]
    record("admin endpoint", "faults", None, state_left=after != before)
    assert after == before


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"a":' * 900 + b"1" + b"}" * 900,
                                  alias_bomb(7), b"\xff\xfe"],
                         ids=["deep list", "deep object", "alias bomb", "not UTF-8"])
def test_an_undecodable_faults_body_is_400(info, body: bytes) -> None:
    admin_ok(_admin(info, "PUT", "/faults", content=body), "faults", 400)


def test_a_huge_faults_body_is_413(info) -> None:
    admin_ok(_admin(info, "PUT", "/faults", content=b"#" * (2 * 1024 * 1024)), "body bound", 413)


@FUZZ
@given(path=st.sampled_from(["/faults", "/reclaim"]), method=st.sampled_from(["GET", "PUT", "POST"]),
       body=st.binary(max_size=200) | _json.map(lambda v: json.dumps(v).encode()))
def test_fuzz_the_admin_endpoint(info, path, method, body) -> None:
    r = _admin(info, method, path, content=body)
    admin_ok(r, "fuzz")
    if r.status_code >= 400 and method == "PUT":
        left = _admin(info, "GET", "/faults").json()["faults"] != _NO_FAULTS
        record("admin endpoint", "fuzz", None, state_left=left)
        assert not left
    if r.status_code < 400 and path == "/faults" and method == "PUT":
        _admin(info, "PUT", "/faults", content=b"")  # leave the session sandbox without faults
