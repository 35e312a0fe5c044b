"""The report writer: files, the JSON schema, the chart, the markdown, artifacts, and no secret in any output."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from clients.ack import Node, NodePoolCondition
from core.spec import DeploySpec
from tasks.cost import PriceTable
from tasks.ingress import IngressEndpoint
from tasks.loadtest import ErrorCount, HistoryPoint, LoadTestResult, StageStats
from tasks.report import publish_artifacts, write_report, write_report_files
from tasks.timeline import TimelineSample
from tasks.verify import Facts, NodeFact, PodFact, run_checks

FAKE_SECRET = "FAKE-AkSecret-9f8e7d6c5b4a"  # a valid ECS password: 8-30 characters
POOL = "np-report"
T0 = 1_800_000_000.0

ALLOWED_PATHS = {
    "schema", "generated_at", "run", "passed",
    "deployment", "deployment.cluster_id", "deployment.namespace", "deployment.deployment", "deployment.hpa",
    "deployment.ingress", "deployment.model", "deployment.node_pool", "deployment.nodepool_id",
    "endpoint", "endpoint.url", "endpoint.host", "endpoint.address", "endpoint.port",
    "checks", "checks[].name", "checks[].passed", "checks[].expected", "checks[].actual", "checks[].detail",
    "load_test", *(f"load_test.{k}" for k in (
        "requests", "failures", "error_rate", "rps", "p50_ms", "p95_ms", "p99_ms", "avg_ms", "max_ms", "duration_s",
        "started_at", "metadata_requests", "metadata_failures", "stages", "errors")),
    *(f"load_test.stages[].{k}" for k in (
        "index", "users", "start_s", "end_s", "requests", "failures", "error_rate", "rps", "p50_ms", "p95_ms",
        "p99_ms")),
    "load_test.errors[].name", "load_test.errors[].error", "load_test.errors[].occurrences",
    "node_mix", "node_mix.configured", *(f"node_mix.configured.{k}" for k in (
        "billing", "on_demand_base_capacity", "on_demand_percentage_above_base", "compensate_with_on_demand",
        "min_instances", "max_instances")),
    "node_mix.pay_as_you_go", "node_mix.spot", "node_mix.instances", "node_mix.pool_state", "node_mix.pool_conditions",
    *(f"node_mix.instances[].{k}" for k in (
        "instance_id", "instance_type", "billing", "instance_charge_type", "spot_strategy", "node_name",
        "node_status", "zone")),
    *(f"node_mix.pool_conditions[].{k}" for k in ("type", "status", "reason", "message")),
    "pods", "pods[].name", "pods[].node", "pods[].phase", "pods[].ready",
    "cost", *(f"cost.{k}" for k in (
        "currency", "source", "hourly", "hourly_all_on_demand", "saving", "saving_pct", "unpriced")),
    "timeline", *(f"timeline[].{k}" for k in (
        "t", "timestamp", "metric_value", "hpa_current", "hpa_desired", "replicas", "pods_ready", "nodes_total",
        "nodes_ready", "nodes_pay_as_you_go", "nodes_spot", "nodes_subscription", "nodes_pay_as_you_go_ready",
        "nodes_spot_ready", "errors")),
    "files", "files.report_md", "files.timeline_png", "files.locust_html",
}


def key_paths(value: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            p = f"{prefix}.{k}" if prefix else k
            out.add(p)
            out |= key_paths(v, p)
    elif isinstance(value, list):
        for v in value:
            out |= key_paths(v, prefix + "[]")
    return out


def spec(**verification) -> DeploySpec:
    return DeploySpec.parse({
        "cluster_id": "cabcdef0123",
        "node_pool": {"login_password": FAKE_SECRET, "labels": {"inference": "tensorflow"}},
        "serving": {"version": "202107141745"},
        "verification": verification,
    })


def facts() -> Facts:
    def knode(i: int, spot: bool) -> NodeFact:
        return NodeFact(name=f"cn-hangzhou.10.0.0.{i}", ready=True, instance_id=f"i-{i}", zone="cn-hangzhou-h", labels={
            "alibabacloud.com/nodepool-id": POOL, "inference": "tensorflow",
            "node.alibabacloud.com/instance-charge-type": "PostPaid",
            "node.alibabacloud.com/spot-strategy": "SpotAsPriceGo" if spot else "NoSpot",
            "leaky-label": FAKE_SECRET,  # an unrelated field carrying a secret: must never reach the report
        })

    def anode(i: int, spot: bool) -> Node:
        return Node(instance_id=f"i-{i}", node_name=f"cn-hangzhou.10.0.0.{i}", instance_type="ecs.gn6i-c4g1.xlarge",
                    instance_charge_type="PostPaid", spot_strategy="SpotAsPriceGo" if spot else "NoSpot",
                    nodepool_id=POOL, state="running", node_status="Ready",
                    login_password=FAKE_SECRET)  # extra fields are kept by the open model: still not emitted
    spots = [False, True, True]
    return Facts(
        collected_at="2026-01-01T00:00:00+00:00", nodepool_id=POOL,
        pods=[PodFact(name=f"bert-{i}", phase="Running", ready=True, node_name=f"cn-hangzhou.10.0.0.{i}")
              for i in range(3)],
        nodes=[knode(i, s) for i, s in enumerate(spots)],
        ack_nodes=[anode(i, s) for i, s in enumerate(spots)],
        pool_state="active",
        pool_conditions=[NodePoolCondition(type="InstanceMix", status="True", reason="AsConfigured", message="ok")],
    )


def load(tmp_path: Path) -> LoadTestResult:
    html = tmp_path / "locust-out" / "locust.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text("<!DOCTYPE html><html><body>locust report</body></html>")
    stages = [StageStats(index=0, users=5, start_s=0, end_s=10, requests=50, failures=0, error_rate=0, rps=5,
                         p50_ms=10, p95_ms=20, p99_ms=30),
              StageStats(index=1, users=40, start_s=10, end_s=40, requests=1200, failures=2, error_rate=2 / 1200,
                         rps=40, p50_ms=40, p95_ms=300, p99_ms=600)]
    history = [HistoryPoint(timestamp=T0 + s, t=s, users=5 if s < 10 else 40, rps=5 if s < 10 else 40,
                            failures_per_s=0, p50_ms=10, p95_ms=20 if s < 10 else 900 - 20 * s)
               for s in range(0, 40)]
    return LoadTestResult(requests=1250, failures=2, error_rate=2 / 1250, rps=31.25, p50_ms=40, p95_ms=280,
                          p99_ms=590, avg_ms=55, max_ms=1200, started_at=T0, ended_at=T0 + 40, duration_s=40,
                          stages=stages, history=history, html_path=str(html),
                          log_path=f"/tmp/{FAKE_SECRET}/locust.log",
                          errors=[ErrorCount(name="predict [stage 1]", error="HTTP 503: no endpoints", occurrences=2)])


def timeline() -> list[TimelineSample]:
    out = []
    for i in range(0, 45, 5):
        scaled = i >= 15
        out.append(TimelineSample(
            t=i, timestamp=f"2027-01-15T08:00:{i:02d}+00:00", unix=T0 - 2 + i, metric_value=None if i == 0 else (5 if i < 10 else 40),
            hpa_current=1 if not scaled else 4, hpa_desired=1 if i < 10 else 4, replicas=1 if i < 10 else 4,
            pods_ready=1 if not scaled else 3, nodes_total=1 if i < 20 else 3, nodes_ready=1 if i < 25 else 3,
            nodes_pay_as_you_go=1, nodes_spot=0 if i < 20 else 2, nodes_subscription=0,
            errors=["external metric: 503"] if i == 0 else []))
    return out


PRICES = PriceTable.model_validate({"source": "test table", "prices": {
    "ecs.gn6i-c4g1.xlarge": {"on_demand": 10.0, "spot": 2.0}}})
ENDPOINT = IngressEndpoint(address="127.0.0.1", port=18080, host="test.example.com", path="/")


@pytest.fixture
def written(tmp_path):
    s = spec()
    f, lt, tl = facts(), load(tmp_path), timeline()
    verification = run_checks(f, s, lt, tl)
    files, doc = write_report_files(s, verification, endpoint=ENDPOINT, load=lt, timeline=tl, facts=f,
                                    prices=PRICES, reports_dir=tmp_path / "reports", run_name="crafty owl/1",
                                    nodepool_id=POOL)
    return files, doc, verification, tmp_path


def test_files_are_written_under_the_run_name(written):
    files, _, _, tmp = written
    d = Path(files.directory)
    assert d == tmp / "reports" / "crafty-owl-1"
    assert {p.name for p in d.iterdir()} == {"report.json", "report.md", "timeline.png", "locust.html"}
    png = Path(files.png_path).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert "locust report" in (d / "locust.html").read_text()


def test_report_json_schema(written):
    files, _, verification, _ = written
    doc = json.loads(Path(files.json_path).read_text())
    assert doc["passed"] is verification.passed is True
    assert [c["name"] for c in doc["checks"]] == ["placement", "scale_out", "mix", "slo_error_rate", "slo_p95"]
    for c in doc["checks"]:
        assert {"name", "passed", "expected", "actual"} <= set(c)
    assert {k: doc["load_test"][k] for k in ("requests", "failures", "p50_ms", "p95_ms", "p99_ms")} == {
        "requests": 1250, "failures": 2, "p50_ms": 40, "p95_ms": 280, "p99_ms": 590}
    assert doc["load_test"]["rps"] == 31.25 and len(doc["load_test"]["stages"]) == 2
    assert len(doc["timeline"]) == 9 and doc["timeline"][0]["metric_value"] is None
    assert doc["endpoint"] == {"url": "http://127.0.0.1:18080/", "host": "test.example.com",
                               "address": "127.0.0.1", "port": 18080}
    assert (doc["node_mix"]["pay_as_you_go"], doc["node_mix"]["spot"]) == (1, 2)
    assert doc["cost"]["hourly"] == 14.0 and doc["cost"]["hourly_all_on_demand"] == 30.0
    assert "test table" in doc["cost"]["source"]
    assert doc["files"] == {"report_md": "report.md", "timeline_png": "timeline.png", "locust_html": "locust.html"}


def test_only_whitelisted_fields_and_no_secret_anywhere(written):
    files, doc, _, _ = written
    paths = key_paths(json.loads(Path(files.json_path).read_text()))
    assert paths <= ALLOWED_PATHS, sorted(paths - ALLOWED_PATHS)
    for p in Path(files.directory).iterdir():
        if p.suffix != ".png":
            assert FAKE_SECRET not in p.read_text(), p.name
    assert FAKE_SECRET not in json.dumps(doc)


def test_markdown_lists_every_check_and_the_numbers(written):
    files, _, verification, _ = written
    md = Path(files.markdown_path).read_text()
    assert md.startswith("# Deploy PASSED")
    for c in verification.checks:
        assert f"| {c.name} | PASS |" in md
    assert "http://127.0.0.1:18080/" in md and "Host: test.example.com" in md
    assert "![timeline](timeline.png)" in md and "locust.html" in md
    assert "## Load test" in md and "## Node mix" in md and "## Timeline" in md
    assert "53% saved" in md


def test_checks_keep_their_full_text_outside_the_table(written):
    """The Prefect UI does not wrap table cells: the long texts are list items, whole, below a name/result table."""
    files, doc, verification, _ = written
    md = Path(files.markdown_path).read_text()
    section = md.split("## Checks", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0] == "| check | result |" and all(row.count("|") == 3 for row in rows)
    for c in verification.checks:
        assert f"**{c.name}**: PASS" in section
        for text in (c.expected, c.actual, c.detail):
            if text:
                assert text.replace("|", "\\|") in section


def test_a_failed_check_shows_in_both_files(tmp_path):
    s = spec(p95_ms=1)
    f, lt, tl = facts(), load(tmp_path), timeline()
    verification = run_checks(f, s, lt, tl)
    files, _ = write_report_files(s, verification, load=lt, timeline=tl, facts=f, prices=PRICES,
                                  reports_dir=tmp_path, run_name="r")
    assert not files.passed
    doc = json.loads(Path(files.json_path).read_text())
    assert [c["name"] for c in doc["checks"] if not c["passed"]] == ["slo_p95"]
    md = Path(files.markdown_path).read_text()
    assert md.startswith("# Deploy FAILED") and "| slo_p95 | FAIL |" in md


def test_minimal_report_without_load_or_facts(tmp_path):
    verification = run_checks(facts(), spec(), None, [])
    files, doc = write_report_files(spec(), verification, reports_dir=tmp_path, run_name="bare")
    assert files.png_path is None and files.locust_html_path is None
    assert doc["load_test"] is None and doc["cost"] is None and doc["timeline"] == []
    assert Path(files.markdown_path).read_text().startswith("# Deploy FAILED")  # no scale-out observed


def test_artifacts_outside_a_run_are_skipped_quietly(written):
    _, doc, _, _ = written
    assert publish_artifacts(doc) == []


def test_artifacts_inside_a_flow_run(tmp_path, prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    s = spec()
    f, lt, tl = facts(), load(tmp_path), timeline()
    verification = run_checks(f, s, lt, tl)

    @flow
    def report_flow():
        return write_report(s, verification, ENDPOINT, lt, tl, f, PRICES, tmp_path / "reports", None, POOL)

    state = report_flow(return_state=True)
    files = state.result()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        run = client.read_flow_run(run_id)
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == {"deploy-summary", "deploy-timeline-chart", "load-test-stages", "node-mix", "deploy-timeline"}
    # The picture itself reaches the UI: timeline.png, byte for byte, inline in a markdown artifact.
    chart = by_key["deploy-timeline-chart"]
    assert chart.type == "markdown"
    inline = re.search(r"!\[timeline\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", chart.data)
    assert inline and base64.b64decode(inline.group(1)) == Path(files.png_path).read_bytes()
    assert by_key["deploy-summary"].type == "markdown"
    for c in verification.checks:
        assert c.name in by_key["deploy-summary"].data
    assert "http://127.0.0.1:18080/" in by_key["deploy-summary"].data
    assert by_key["node-mix"].type == "table"
    assert Path(files.directory).name == run.name  # reports/<flow run name>/
    for a in artifacts:
        assert FAKE_SECRET not in str(a.data)
