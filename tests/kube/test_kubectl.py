"""kubectl (the real binary) against the sandbox API server, the way users work daily."""

from __future__ import annotations

import json
import re
import subprocess
import threading

import yaml
from polling import wait_for

from sandbox.kube import protobuf

from .conftest import deployment


def _configmap(ns: str, name: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
                           "data": {"a": "b"}})


def _manifest(ns: str, name: str = "web", image: str = "nginx:1.25", replicas: int = 1) -> str:
    d = deployment(name, image=image, replicas=replicas)
    d["metadata"]["namespace"] = ns
    return yaml.safe_dump(d)


class LineReader:
    """Reads a subprocess' pipe on a thread, so a test can wait for a line without blocking on the pipe."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, match, what: str, timeout: float = 30.0) -> str:
        return wait_for(lambda: next((line for line in list(self.lines) if match(line)), None), what,
                        timeout=timeout, state=lambda: self.lines[-5:])


def test_get_prints_real_columns(kubectl, ns):
    kubectl("apply", "-f", "-", input=_manifest(ns))
    kubectl("-n", ns, "run", "pod1", "--image=busybox:1.36", "--restart=Never")
    out = kubectl("-n", ns, "get", "pods").stdout
    assert out.split("\n")[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "pod1" in out  # its STATUS depends on the controllers (Pending, ContainerCreating, Running)
    wide = kubectl("-n", ns, "get", "pods", "-o", "wide").stdout.split("\n")[0]
    assert "NOMINATED NODE" in wide and "READINESS GATES" in wide and "IP" in wide
    head = kubectl("-n", ns, "get", "deploy").stdout.split("\n")[0].split()
    assert head == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    nodes = kubectl("get", "nodes")
    assert nodes.stdout == "" and "No resources found" in nodes.stderr or \
        nodes.stdout.split("\n")[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], nodes
    ns_out = kubectl("get", "ns").stdout
    assert ns_out.split("\n")[0].split() == ["NAME", "STATUS", "AGE"] and "kube-system" in ns_out
    ic = kubectl("get", "ingressclass").stdout
    assert "k8s.io/ingress-nginx" in ic
    everything = kubectl("-n", ns, "get", "all").stdout
    assert "deployment.apps/web" in everything and "pod/pod1" in everything


def test_get_json_and_short_names(kubectl, ns):
    kubectl("apply", "-f", "-", input=_manifest(ns))
    doc = json.loads(kubectl("-n", ns, "get", "deploy", "web", "-o", "json").stdout)
    assert doc["kind"] == "Deployment" and doc["spec"]["replicas"] == 1
    lst = json.loads(kubectl("-n", ns, "get", "deployments.apps", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in lst["items"]] == ["web"]
    r = kubectl("-n", ns, "get", "deploy", "missing", check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr


def test_apply_client_side_and_server_side(kubectl, ns):
    out = kubectl("apply", "-f", "-", input=_manifest(ns, "csa")).stdout
    assert "created" in out
    out = kubectl("apply", "-f", "-", input=_manifest(ns, "csa")).stdout
    assert "unchanged" in out
    out = kubectl("apply", "-f", "-", input=_manifest(ns, "csa", image="nginx:1.26")).stdout
    assert "configured" in out
    doc = json.loads(kubectl("-n", ns, "get", "deploy", "csa", "-o", "json").stdout)
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert doc["metadata"]["generation"] == 2
    out = kubectl("apply", "--server-side", "-f", "-", input=_manifest(ns, "ssa")).stdout
    assert "serverside-applied" in out
    out = kubectl("apply", "--server-side", "-f", "-", input=_manifest(ns, "ssa", replicas=3)).stdout
    assert "serverside-applied" in out
    doc = json.loads(kubectl("-n", ns, "get", "deploy", "ssa", "-o", "json", "--show-managed-fields").stdout)
    assert doc["spec"]["replicas"] == 3
    assert any(m["manager"] == "kubectl" and m["operation"] == "Apply" for m in doc["metadata"]["managedFields"])
    kubectl("-n", ns, "scale", "deploy", "ssa", "--replicas=5")
    r = kubectl("apply", "--server-side", "-f", "-", input=_manifest(ns, "ssa", replicas=2), check=False)
    assert r.returncode != 0 and "conflict" in r.stderr.lower()
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=_manifest(ns, "ssa", replicas=2))
    assert json.loads(kubectl("-n", ns, "get", "deploy", "ssa", "-o", "json").stdout)["spec"]["replicas"] == 2


def test_create_dry_run_server_and_invalid(kubectl, ns):
    out = kubectl("create", "-f", "-", "--dry-run=server", input=_manifest(ns, "dry")).stdout
    assert "server dry run" in out
    assert kubectl("-n", ns, "get", "deploy", "dry", check=False).returncode != 0
    bad = yaml.safe_load(_manifest(ns, "bad"))
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "nope"}
    r = kubectl("create", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert r.returncode != 0 and "Invalid" in r.stderr and "selector" in r.stderr
    bad = yaml.safe_load(_manifest(ns, "bad2"))
    bad["spec"]["bogus"] = 1
    r = kubectl("create", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert r.returncode != 0 and "bogus" in r.stderr


def test_patch_scale_label_describe(kubectl, ns):
    kubectl("apply", "-f", "-", input=_manifest(ns, "pt"))
    kubectl("-n", ns, "patch", "deploy", "pt", "-p",
            '{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"nginx:1.27"}]}}}}')
    kubectl("-n", ns, "patch", "deploy", "pt", "--type=merge", "-p", '{"metadata":{"annotations":{"a":"b"}}}')
    kubectl("-n", ns, "patch", "deploy", "pt", "--type=json", "-p",
            '[{"op":"add","path":"/metadata/labels/extra","value":"1"}]')
    kubectl("-n", ns, "scale", "deploy", "pt", "--replicas=4")
    kubectl("-n", ns, "label", "deploy", "pt", "team=ml")
    doc = json.loads(kubectl("-n", ns, "get", "deploy", "pt", "-o", "json").stdout)
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert doc["spec"]["replicas"] == 4
    assert doc["metadata"]["labels"]["team"] == "ml" and doc["metadata"]["labels"]["extra"] == "1"
    assert doc["metadata"]["annotations"]["a"] == "b"
    assert kubectl("-n", ns, "get", "deploy", "-l", "team=ml", "-o", "name").stdout.strip() == "deployment.apps/pt"
    desc = kubectl("-n", ns, "describe", "deploy", "pt").stdout
    assert "Name:" in desc and "pt" in desc and "nginx:1.27" in desc and "RollingUpdate" in desc
    kubectl("-n", ns, "run", "dp", "--image=busybox:1.36", "--restart=Never")
    desc = kubectl("-n", ns, "describe", "pod", "dp").stdout
    assert "busybox:1.36" in desc and "Status:" in desc


def test_delete_and_wait_for_delete(kubectl, ns):
    kubectl("apply", "-f", "-", input=_manifest(ns, "del"))
    out = kubectl("-n", ns, "delete", "deploy", "del").stdout
    assert 'deleted' in out
    kubectl("apply", "-f", "-", input=_configmap(ns, "cmw"))
    # -v=6 logs each request once its answer's headers are in: the watch line means kubectl is watching
    waiter = subprocess.Popen(["kubectl", "--kubeconfig", kubectl.kubeconfig, "--cache-dir", str(kubectl.cache),
                               "-v=6", "-n", ns, "wait", "--for=delete", "configmap/cmw", "--timeout=30s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines = LineReader(waiter.stderr)
    err_lines.wait_for(lambda line: "watch=true" in line and "200 OK" in line, "kubectl wait's watch")
    kubectl("-n", ns, "delete", "configmap", "cmw", "--wait=false")
    out = waiter.stdout.read()
    assert waiter.wait(timeout=40) == 0, err_lines.lines
    assert "condition met" in out
    kubectl("apply", "-f", "-", input=_configmap(ns, "cmc"))
    out = kubectl("-n", ns, "wait", "--for=jsonpath={.data.a}=b", "configmap/cmc", "--timeout=10s").stdout
    assert "condition met" in out


def test_get_watch_streams_changes(kubectl, ns):
    kubectl("apply", "-f", "-", input=_configmap(ns, "w0"))
    proc = subprocess.Popen(["kubectl", "--kubeconfig", kubectl.kubeconfig, "--cache-dir", str(kubectl.cache),
                             "-n", ns, "get", "configmaps", "-w", "--request-timeout=20s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = LineReader(proc.stdout)
    try:
        # the list is printed first; the watch starts from the list's resourceVersion, so w1 cannot be missed
        out.wait_for(lambda line: line.split()[:1] == ["w0"], "w0 listed")
        kubectl("apply", "-f", "-", input=_configmap(ns, "w1"))
        out.wait_for(lambda line: line.split()[:1] == ["w1"], "w1 streamed")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert out.lines[0].split() == ["NAME", "DATA", "AGE"], out.lines


def test_events_listed_for_describe(kubectl, kube, ns):
    kubectl("-n", ns, "run", "evp", "--image=busybox:1.36", "--restart=Never")
    pod = kube.store.get("pods", ns, "evp")
    kube.events.record(pod, "Warning", "FailedScheduling",
                            "0/0 nodes are available: no nodes available to schedule pods.",
                            component="default-scheduler")
    desc = kubectl("-n", ns, "describe", "pod", "evp").stdout
    assert "FailedScheduling" in desc
    ev = kubectl("-n", ns, "get", "events").stdout
    assert ev.split("\n")[0].split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"] and "FailedScheduling" in ev


def test_rollout_status_through_a_rolling_update(kubectl, ns):
    d = deployment("ro", image="nginx:1.25", replicas=2)
    d["metadata"]["namespace"] = ns
    d["spec"]["template"]["spec"]["nodeSelector"] = {"node.kubernetes.io/instance-type": "ecs.g7.xlarge"}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(d))
    r = kubectl("-n", ns, "rollout", "status", "deployment/ro", "--timeout=120s", timeout=150)
    assert r.returncode == 0 and 'deployment "ro" successfully rolled out' in r.stdout, r.stdout + r.stderr
    kubectl("-n", ns, "set", "image", "deployment/ro", "main=nginx:1.26")
    r = kubectl("-n", ns, "rollout", "status", "deployment/ro", "--timeout=120s", timeout=150)
    assert r.returncode == 0 and 'deployment "ro" successfully rolled out' in r.stdout, r.stdout + r.stderr
    doc = json.loads(kubectl("-n", ns, "get", "deploy", "ro", "-o", "json").stdout)
    assert doc["spec"]["strategy"]["type"] == "RollingUpdate"
    assert doc["status"]["updatedReplicas"] == 2 and doc["status"]["availableReplicas"] == 2
    assert doc["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    rs = json.loads(kubectl("-n", ns, "get", "rs", "-l", "app=ro", "-o", "json").stdout)["items"]
    images = {x["spec"]["template"]["spec"]["containers"][0]["image"]: x["spec"]["replicas"] for x in rs}
    assert images == {"nginx:1.25": 0, "nginx:1.26": 2}


def test_create_subcommands_send_protobuf(kubectl, raw, ns):
    # client-go's generated clients send built-in kinds as application/vnd.kubernetes.protobuf whatever discovery says
    assert kubectl("-n", ns, "create", "configmap", "x", "--from-literal=a=b").stdout.strip() == "configmap/x created"
    cm = json.loads(kubectl("-n", ns, "get", "configmap", "x", "-o", "json").stdout)
    assert cm["data"] == {"a": "b"} and cm["metadata"]["namespace"] == ns
    kubectl("-n", ns, "create", "secret", "generic", "s", "--from-literal=p=q")
    sec = json.loads(kubectl("-n", ns, "get", "secret", "s", "-o", "json").stdout)
    assert sec["data"] == {"p": "cQ=="} and sec["type"] == "Opaque"
    kubectl("-n", ns, "create", "serviceaccount", "sa1")
    kubectl("-n", ns, "get", "serviceaccount", "sa1")
    out = kubectl("-n", ns, "create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server", "-o", "json").stdout
    assert json.loads(out)["data"] == {"a": "b"} and kubectl("-n", ns, "get", "cm", "dry", check=False).returncode
    r = kubectl("-n", ns, "create", "configmap", "x", "--from-literal=a=c", check=False)
    assert r.returncode != 0 and 'configmaps "x" already exists' in r.stderr
    # a kind whose protobuf form the sandbox does not decode is a 415 (as a real server answers protobuf for a
    # custom resource), a body without the envelope a 400
    assert ("apps/v1", "StatefulSet") not in protobuf.KINDS
    type_meta = b"\x0a\x07apps/v1\x12\x0bStatefulSet"
    body = b"k8s\x00" + b"\x0a" + bytes([len(type_meta)]) + type_meta
    proto = {"Content-Type": "application/vnd.kubernetes.protobuf"}
    r = raw("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", body, headers=proto)
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
    assert r.json()["message"] == ("the body of the request was in an unknown format - accepted media types "
                                   "include: application/json, application/yaml")
    r = raw("POST", f"/api/v1/namespaces/{ns}/configmaps", b"{}", headers=proto)
    assert r.status_code == 400 and r.json()["reason"] == "BadRequest"


def _pruned(x):
    """``x`` without the null/empty values Go's JSON writes for unset non-pointer fields."""
    if isinstance(x, dict):
        out = {k: _pruned(v) for k, v in x.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [], "")}
    if isinstance(x, list):
        return [_pruned(v) for v in x]
    return x


def _missing(stored, want, path: str = "") -> list[str]:
    """Where ``stored`` differs from ``want`` on a field ``want`` sets (server-set fields are not compared)."""
    if isinstance(want, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r} != {want!r}"]
        return [m for k, v in want.items() for m in _missing(stored.get(k), v, f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(stored, list) or len(stored) != len(want):
            return [f"{path}: {stored!r} != {want!r}"]
        return [m for i, (s, w) in enumerate(zip(stored, want, strict=True)) for m in _missing(s, w, f"{path}[{i}]")]
    return [] if stored == want else [f"{path}: {stored!r} != {want!r}"]


def _with(args: tuple[str, ...], *flags: str) -> list[str]:
    """``args`` with ``flags`` added before a ``--`` (the container command)."""
    i = args.index("--") if "--" in args else len(args)
    return [*args[:i], *flags, *args[i:]]


def _sent_body(stderr: str) -> bytes:
    """The request body client-go logged at -v=10 (``"Request Body" body=<`` then ``hex.Dump`` lines)."""
    m = re.search(r'"Request Body" body=<\n(.*?)\n >', stderr, re.S)
    assert m, stderr[-2000:]
    out = bytearray()
    for line in m.group(1).splitlines():
        h = re.match(r"\s*[0-9a-f]{8}\s\s(.*?)\s\s\|", line)
        assert h, line
        out += bytes.fromhex(h.group(1).replace(" ", ""))
    return bytes(out)


def test_imperative_workloads_sent_as_protobuf_are_stored_as_kubectl_built_them(kubectl, ns):
    # kubectl create deployment|service|ingress and autoscale send protobuf, run and expose send JSON; each stored
    # object carries every field `--dry-run=client -o json` shows (the server adds defaults, metadata, status)
    cases = [
        ("create", "deployment", "web", "--image=nginx:1.25", "--port=80", "--replicas=2"),
        ("create", "deployment", "zero", "--image=nginx:1.25", "--replicas=0", "--", "nginx", "-g", "daemon off;"),
        ("run", "p1", "--image=nginx:1.25", "--port=80", "--env=A=B", "--labels=x=y", "--restart=Never"),
        ("create", "service", "clusterip", "svc1", "--tcp=80:8080", "--tcp=443:https"),
        ("create", "service", "nodeport", "np1", "--tcp=80:8080", "--node-port=30080"),
        ("expose", "deployment", "web", "--port=81", "--target-port=80", "--name=web2"),
        ("create", "ingress", "ing1", "--class=nginx", "--rule=foo.com/bar*=svc1:8080,tls=sec",
         "--default-backend=svc1:http", "--annotation=a=b"),
        ("autoscale", "deployment", "zero", "--min=1", "--max=3", "--cpu-percent=50"),
    ]
    for args in cases:
        want = json.loads(kubectl("-n", ns, *_with(args, "--dry-run=client", "-o", "json")).stdout)
        r = kubectl("-n", ns, *_with(args, "-v=6"))
        sent = re.findall(r'"Response" verb="POST" .*', r.stderr)
        assert sent and "status=\"201 Created\"" in sent[-1], r.stderr[-2000:]
        group, _, version = want["apiVersion"].rpartition("/")
        resource = f"{want['kind'].lower()}.{version}.{group}" if group else want["kind"].lower()
        got = json.loads(kubectl("-n", ns, "get", resource, want["metadata"]["name"], "-o", "json").stdout)
        assert not _missing(got, _pruned(want)), (args, _missing(got, _pruned(want)))
    zero = json.loads(kubectl("-n", ns, "get", "deploy", "zero", "-o", "json").stdout)
    assert zero["spec"]["replicas"] == 0  # a pointer field sent as 0 is not dropped to the default (1)
    svc = json.loads(kubectl("-n", ns, "get", "svc", "svc1", "-o", "json").stdout)
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == [8080, "https"]  # IntOrString both ways
    r = kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
    assert 'deployment "web" successfully rolled out' in r.stdout, r.stdout + r.stderr
    pods = json.loads(kubectl("-n", ns, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(pods) == 2 and {p["status"]["phase"] for p in pods} == {"Running"}
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {"nginx:1.25"}


def test_protobuf_bodies_of_kinds_the_sandbox_does_not_serve_decode_as_kubectl_built_them(kubectl, ns):
    # scheduling and ResourceQuota are not served (404; batch/v1, policy/v1 and rbac are), but the decoder is
    # checked on the bytes the real kubectl sends for all of them: its -v=10 log of the protobuf request body
    suffix = ns[2:]
    cases = [
        ("create", "job", "j1", "--image=busybox", "--", "sh", "-c", "echo hi"),
        ("create", "cronjob", "cj1", "--image=busybox", "--schedule=*/5 * * * *", "--restart=OnFailure", "--",
         "echo", "hi"),
        ("create", "pdb", "pdb1", "--selector=app=web", "--max-unavailable=20%"),
        ("create", "pdb", "pdb2", "--selector=app=web", "--min-available=1"),
        ("create", "quota", "q1", "--hard=cpu=1,pods=2,requests.memory=1Gi", "--scopes=BestEffort"),
        ("create", "role", "r1", "--verb=get,list", "--resource=pods,deployments.apps", "--resource-name=x"),
        ("create", "rolebinding", "rb1", "--role=r1", "--user=u", "--group=g", f"--serviceaccount={ns}:default"),
        ("create", "clusterrole", f"cr-{suffix}", "--verb=get", "--non-resource-url=/logs"),
        ("create", "clusterrole", f"agg-{suffix}", "--aggregation-rule=a=b"),
        ("create", "clusterrolebinding", f"crb-{suffix}", f"--clusterrole=cr-{suffix}", "--user=u"),
        ("create", "priorityclass", f"pc-{suffix}", "--value=1000", "--description=d", "--preemption-policy=Never"),
    ]
    for args in cases:
        want = json.loads(kubectl("-n", ns, *_with(args, "--dry-run=client", "-o", "json")).stdout)
        r = kubectl("-n", ns, "-v=10", *args, check=False)
        assert "Content-Type: application/vnd.kubernetes.protobuf" in r.stderr, args
        body = _sent_body(r.stderr)
        assert _pruned(protobuf.decode(body)) == _pruned(want), args


def test_create_batch_policy_rbac_and_get_upstream_columns(kubectl, ns):
    suffix = ns[2:]
    created = [
        (("create", "job", "j1", "--image=busybox:1.36", "--", "sh", "-c", "echo hi"), "job.batch/j1 created"),
        (("create", "cronjob", "cj1", "--image=busybox:1.36", "--schedule=*/5 * * * *", "--", "echo", "hi"),
         "cronjob.batch/cj1 created"),
        (("create", "pdb", "pdb1", "--selector=app=web", "--max-unavailable=20%"),
         "poddisruptionbudget.policy/pdb1 created"),
        (("create", "role", "r1", "--verb=get,list", "--resource=pods"), "role.rbac.authorization.k8s.io/r1 created"),
        (("create", "rolebinding", "rb1", "--role=r1", "--user=u", f"--serviceaccount={ns}:default"),
         "rolebinding.rbac.authorization.k8s.io/rb1 created"),
        (("create", "clusterrole", f"cr-{suffix}", "--verb=get", "--resource=nodes"),
         f"clusterrole.rbac.authorization.k8s.io/cr-{suffix} created"),
        (("create", "clusterrolebinding", f"crb-{suffix}", f"--clusterrole=cr-{suffix}", "--group=g"),
         f"clusterrolebinding.rbac.authorization.k8s.io/crb-{suffix} created"),
    ]
    try:
        for args, want in created:
            assert kubectl("-n", ns, *args).stdout.strip() == want
        heads = {
            "jobs": ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
            "cronjobs": ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"],
            "pdb": ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"],
            "roles": ["NAME", "CREATED", "AT"],
            "rolebindings": ["NAME", "ROLE", "AGE"],
        }
        for res, head in heads.items():
            lines = kubectl("-n", ns, "get", res).stdout.splitlines()
            assert lines[0].split() == head, (res, lines)
        job = kubectl("-n", ns, "get", "job", "j1").stdout.splitlines()[1].split()
        assert job[0] == "j1" and job[1] in ("Running", "Complete") and job[2] in ("0/1", "1/1"), job
        cj = kubectl("-n", ns, "get", "cj", "cj1").stdout.splitlines()[1].split()
        assert cj[:7] == ["cj1", "*/5", "*", "*", "*", "*", "<none>"] and cj[7:10] == ["false", "0", "<none>"], cj
        pdb = kubectl("-n", ns, "get", "pdb", "pdb1").stdout.splitlines()[1].split()
        assert pdb[:4] == ["pdb1", "N/A", "20%", "0"], pdb
        rb = kubectl("-n", ns, "get", "rolebinding", "rb1", "-o", "wide").stdout.splitlines()
        assert rb[0].split() == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
        assert rb[1].split()[1] == "Role/r1" and rb[1].split()[-1] == f"{ns}/default"
        crb = kubectl("get", "clusterrolebinding", f"crb-{suffix}").stdout.splitlines()[1].split()
        assert crb[1] == f"ClusterRole/cr-{suffix}"
        doc = json.loads(kubectl("-n", ns, "get", "rolebinding", "rb1", "-o", "json").stdout)
        assert doc["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
        assert doc["subjects"][0] == {"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}
        assert kubectl("-n", ns, "delete", "cronjob", "cj1").stdout.strip() == 'cronjob.batch "cj1" deleted'
        assert "j1" in kubectl("-n", ns, "get", "all").stdout
    finally:
        kubectl("delete", "clusterrolebinding", f"crb-{suffix}", "--ignore-not-found")
        kubectl("delete", "clusterrole", f"cr-{suffix}", "--ignore-not-found")
