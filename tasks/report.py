"""The deploy report: files under ``reports/<flow run>/`` and Prefect artifacts, from typed results only.

Files:

``report.json``   ``checks[]`` ({name, passed, expected, actual, detail}), ``load_test`` (requests, failures, rps,
                  p50/p95/p99 ms, per-stage rows, top errors), ``timeline[]`` (the samples), ``endpoint``,
                  ``node_mix`` (each instance as ACK reports it, the configured mix, the pool's conditions),
                  ``pods`` (where each serving pod runs), ``cost`` and ``files``.
``report.md``     the same for people: every check, the stages, the mix, the cost, the timeline.
``timeline.png``  top: the external metric (QPS the HPA sees) and Locust's requests/s, p95 latency on a second
                  axis; bottom: HPA current/desired replicas, ready pods, and the pool's nodes stacked by billing
                  (pay-as-you-go, spot). Stage boundaries are dashed lines. Drawn with matplotlib's Agg canvas
                  (no pyplot state, safe in a worker thread).
``locust.html``   Locust's own HTML report, copied.

Artifacts (only inside a flow or task run; a failure to create one is logged, never raised): markdown
``deploy-summary`` (endpoint and every check), markdown ``deploy-timeline-chart`` (timeline.png itself, inline as a
``data:image/png`` URI: the Prefect UI's markdown renderer allows data-URI images, and an artifact cannot point at
a file on the worker's disk), tables ``load-test-stages``, ``node-mix`` and ``deploy-timeline`` (the chart's
numbers).

Secrets. The report is built field by field from whitelisted attributes of the typed results (never a dump of a
Kubernetes object, a block or the spec), so nothing that is not listed here can reach it; the tests check the
emitted key set and that a secret planted in the inputs does not come out.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from clients.logs import run_logger
from core.spec import DeploySpec
from tasks.cost import CostEstimate, PriceTable, billing_of, estimate_cost, load_price_table
from tasks.ingress import IngressEndpoint
from tasks.loadtest import LoadTestResult
from tasks.timeline import TimelineSample
from tasks.verify import Facts, VerificationReport, active_instances

SCHEMA = "elastic-inference/report/v1"
DEFAULT_REPORTS_DIR = Path("reports")


class ReportFiles(BaseModel):
    directory: str
    json_path: str
    markdown_path: str
    png_path: str | None
    locust_html_path: str | None
    passed: bool


# --- naming -------------------------------------------------------------------------------------------------------
def run_label() -> str:
    """The flow run's name (else its id) inside a run; a timestamp outside one."""
    try:
        from prefect.runtime import flow_run

        name, rid = flow_run.name, flow_run.id
    except Exception:  # pragma: no cover - runtime module unavailable
        name, rid = None, None
    return str(name or rid or "local-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))


def safe_dir_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return cleaned[:100] or "run"


# --- the document (whitelisted fields only) -----------------------------------------------------------------------
def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def build_report(
    spec: DeploySpec,
    verification: VerificationReport,
    *,
    endpoint: IngressEndpoint | None = None,
    load: LoadTestResult | None = None,
    timeline: list[TimelineSample] | None = None,
    facts: Facts | None = None,
    cost: CostEstimate | None = None,
    nodepool_id: str | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    names = spec.names
    pool = spec.node_pool
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run": run_name,
        "passed": verification.passed,
        "deployment": {
            "cluster_id": spec.cluster_id,
            "namespace": names.namespace,
            "deployment": names.deployment,
            "hpa": names.hpa,
            "ingress": names.ingress,
            "model": spec.model.name,
            "node_pool": pool.name,
            "nodepool_id": nodepool_id or (facts.nodepool_id if facts else None),
        },
        "endpoint": None if endpoint is None else {
            "url": endpoint.url, "host": endpoint.host, "address": endpoint.address, "port": endpoint.port,
        },
        "checks": [
            {"name": c.name, "passed": c.passed, "expected": c.expected, "actual": c.actual, "detail": c.detail}
            for c in verification.checks
        ],
        "load_test": None,
        "node_mix": None,
        "pods": [],
        "cost": None,
        "timeline": [],
    }
    if load is not None:
        doc["load_test"] = {
            "requests": load.requests,
            "failures": load.failures,
            "error_rate": _r(load.error_rate, 6),
            "rps": _r(load.rps),
            "p50_ms": load.p50_ms,
            "p95_ms": load.p95_ms,
            "p99_ms": load.p99_ms,
            "avg_ms": load.avg_ms,
            "max_ms": load.max_ms,
            "duration_s": load.duration_s,
            "started_at": datetime.fromtimestamp(load.started_at, UTC).isoformat(timespec="seconds"),
            "metadata_requests": load.metadata_requests,
            "metadata_failures": load.metadata_failures,
            "stages": [
                {k: getattr(s, k) for k in ("index", "users", "start_s", "end_s", "requests", "failures",
                                             "error_rate", "rps", "p50_ms", "p95_ms", "p99_ms")}
                for s in load.stages
            ],
            "errors": [{"name": e.name, "error": e.error, "occurrences": e.occurrences} for e in load.errors[:10]],
        }
    if facts is not None:
        nodes_by_id = {n.instance_id: n for n in facts.nodes if n.instance_id}
        instances = active_instances(facts.ack_nodes)
        doc["node_mix"] = {
            "configured": {
                "billing": pool.billing,
                "on_demand_base_capacity": pool.on_demand_base_capacity,
                "on_demand_percentage_above_base": pool.on_demand_percentage_above_base,
                "compensate_with_on_demand": pool.compensate_with_on_demand,
                "min_instances": pool.min_instances,
                "max_instances": pool.max_instances,
            },
            "pay_as_you_go": sum(1 for i in instances if billing_of(i.instance_charge_type, i.spot_strategy) != "spot"),
            "spot": sum(1 for i in instances if billing_of(i.instance_charge_type, i.spot_strategy) == "spot"),
            "instances": [
                {
                    "instance_id": i.instance_id,
                    "instance_type": i.instance_type,
                    "billing": billing_of(i.instance_charge_type, i.spot_strategy),
                    "instance_charge_type": i.instance_charge_type,
                    "spot_strategy": i.spot_strategy,
                    "node_name": i.node_name,
                    "node_status": i.node_status,
                    "zone": nodes_by_id[i.instance_id].zone if i.instance_id in nodes_by_id else None,
                }
                for i in instances
            ],
            "pool_state": facts.pool_state,
            "pool_conditions": [
                {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                for c in facts.pool_conditions
            ],
        }
        doc["pods"] = [{"name": p.name, "node": p.node_name, "phase": p.phase, "ready": p.ready} for p in facts.pods]
    if cost is not None:
        doc["cost"] = {
            "currency": cost.currency,
            "source": cost.source,
            "hourly": cost.hourly,
            "hourly_all_on_demand": cost.hourly_all_on_demand,
            "saving": cost.saving,
            "saving_pct": cost.saving_pct,
            "unpriced": list(cost.unpriced),
        }
    doc["timeline"] = [
        {k: getattr(s, k) for k in TIMELINE_FIELDS} for s in (timeline or [])
    ]
    return doc


TIMELINE_FIELDS = (
    "t", "timestamp", "metric_value", "hpa_current", "hpa_desired", "replicas", "pods_ready", "nodes_total",
    "nodes_ready", "nodes_pay_as_you_go", "nodes_spot", "nodes_subscription", "nodes_pay_as_you_go_ready",
    "nodes_spot_ready", "errors",
)


# --- markdown -----------------------------------------------------------------------------------------------------
def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "_none_\n"
    cols = columns or list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def summary_markdown(doc: dict[str, Any]) -> str:
    """The short summary (the ``deploy-summary`` artifact): endpoint and every check."""
    ep = doc.get("endpoint")
    lines = [
        f"# Deploy {'PASSED' if doc['passed'] else 'FAILED'}: {doc['deployment']['deployment']}",
        "",
        f"- Endpoint: `{ep['url']}` with `Host: {ep['host']}`" if ep else "- Endpoint: none",
        f"- Model: `{doc['deployment']['model']}`, node pool `{doc['deployment']['node_pool']}` "
        f"(`{doc['deployment']['nodepool_id']}`)",
    ]
    if doc.get("cost"):
        c = doc["cost"]
        lines.append(
            f"- Cost: {c['hourly']:.2f} {c['currency']}/h vs {c['hourly_all_on_demand']:.2f} {c['currency']}/h all "
            f"pay-as-you-go ({c['saving_pct']:.0f}% saved; {c['source']})"
        )
    lines += ["", "## Checks", ""]
    # Name and verdict in a table; what each check expected and saw in a list below it, where long text wraps (a
    # five-column table cut the "expected" text off in the Prefect UI, whose tables do not wrap their cells).
    lines.append(_table([{"check": c["name"], "result": "PASS" if c["passed"] else "FAIL"} for c in doc["checks"]]))
    for c in doc["checks"]:
        lines += [f"**{c['name']}**: {'PASS' if c['passed'] else 'FAIL'}", ""]
        lines += [f"- {k}: {_cell(c[k])}" for k in ("expected", "actual", "detail") if c.get(k)]
        lines.append("")
    return "\n".join(lines)


def timeline_chart_markdown(png: Path, title: str) -> str:
    """``timeline.png`` as markdown with the image inline (a ``data:image/png;base64`` URI)."""
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f"# {title}\n\n![timeline](data:image/png;base64,{data})\n\n"
            "Top: the external metric the HPA sees and Locust's requests/s, p95 latency on the right axis. Bottom: "
            "HPA replicas, ready pods and the pool's nodes by billing. Dashed lines: load stages. The numbers are "
            "the `deploy-timeline` table.\n")


def report_markdown(doc: dict[str, Any], png_name: str | None, html_name: str | None) -> str:
    parts = [summary_markdown(doc)]
    lt = doc.get("load_test")
    if lt:
        parts += [
            "## Load test", "",
            f"{lt['requests']} predictions, {lt['failures']} failed ({100 * lt['error_rate']:.2f}%), "
            f"{lt['rps']} req/s over {lt['duration_s']} s; p50 {_cell(lt['p50_ms'])} ms, p95 {_cell(lt['p95_ms'])} ms, "
            f"p99 {_cell(lt['p99_ms'])} ms.", "",
            _table(lt["stages"]),
        ]
        if lt["errors"]:
            parts += ["Top errors:", "", _table(lt["errors"])]
    mix = doc.get("node_mix")
    if mix:
        cfg = mix["configured"]
        parts += [
            "## Node mix", "",
            f"{mix['pay_as_you_go']} pay-as-you-go, {mix['spot']} spot (configured: {cfg['billing']}, base "
            f"{cfg['on_demand_base_capacity']}, {cfg['on_demand_percentage_above_base']}% pay-as-you-go above base, "
            f"compensate_with_on_demand {cfg['compensate_with_on_demand']}); pool state {mix['pool_state']}.", "",
            _table(mix["instances"]),
        ]
        if mix["pool_conditions"]:
            parts += ["Pool conditions:", "", _table(mix["pool_conditions"])]
    if doc.get("pods"):
        parts += ["## Serving pods", "", _table(doc["pods"])]
    if doc.get("timeline"):
        cols = ["t", "metric_value", "hpa_current", "hpa_desired", "pods_ready", "nodes_pay_as_you_go", "nodes_spot",
                "nodes_ready"]
        parts += ["## Timeline", ""]
        if png_name:
            parts += [f"![timeline]({png_name})", ""]
        parts += [_table(doc["timeline"], cols)]
    if html_name:
        parts += [f"Locust's report: [{html_name}]({html_name})", ""]
    return "\n".join(parts)


# --- the chart ----------------------------------------------------------------------------------------------------
def plot_timeline(
    path: Path, timeline: list[TimelineSample], load: LoadTestResult | None, title: str = "Timeline"
) -> Path:
    """Draw ``timeline.png`` (see the module docstring). x: seconds from the start of the load test."""
    t0 = load.started_at if load is not None else (timeline[0].unix if timeline else 0.0)
    xs = [s.unix - t0 for s in timeline]
    fig = Figure(figsize=(11, 7.5), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)

    def series(attr: str) -> list[float]:
        return [float("nan") if getattr(s, attr) is None else float(getattr(s, attr)) for s in timeline]

    if timeline:
        top.plot(xs, series("metric_value"), "-o", ms=3, color="tab:blue", label="external metric (QPS, HPA input)")
    if load is not None and load.history:
        hx = [h.timestamp - t0 for h in load.history]
        top.plot(hx, [h.rps for h in load.history], color="tab:cyan", alpha=0.8, label="Locust requests/s")
        p95 = top.twinx()
        p95.plot(hx, [float("nan") if h.p95_ms is None else h.p95_ms for h in load.history], color="tab:red",
                 alpha=0.8, label="p95 latency (ms)")
        p95.set_ylabel("p95 latency (ms)", color="tab:red")
        p95.set_ylim(bottom=0)
        p95.legend(loc="upper right", fontsize=8)
    top.set_ylabel("requests per second")
    top.set_ylim(bottom=0)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title)

    if timeline:
        payg = [0.0 if v != v else v for v in series("nodes_pay_as_you_go")]
        spot = [0.0 if v != v else v for v in series("nodes_spot")]
        bottom.stackplot(xs, payg, spot, labels=["nodes pay-as-you-go", "nodes spot"],
                         colors=["tab:orange", "tab:green"], alpha=0.35, step="post")
        bottom.step(xs, series("hpa_desired"), where="post", color="tab:purple", label="HPA desired replicas")
        bottom.step(xs, series("hpa_current"), where="post", color="tab:purple", ls="--", label="HPA current replicas")
        bottom.step(xs, series("pods_ready"), where="post", color="black", lw=1, label="ready pods")
    bottom.set_ylabel("replicas / nodes")
    bottom.set_xlabel("seconds since the load test started")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left", fontsize=8)
    if load is not None:
        for s in load.stages:
            for ax in (top, bottom):
                ax.axvline(s.start_s, color="grey", ls=":", lw=0.8)
            top.annotate(f" stage {s.index}: {s.users} users", (s.start_s, 0.02), xycoords=("data", "axes fraction"),
                         fontsize=7, va="bottom", ha="left", color="grey")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# --- artifacts ----------------------------------------------------------------------------------------------------
def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_artifacts(doc: dict[str, Any], png: str | Path | None = None) -> list[str]:
    """Create the Prefect artifacts (inside a run only); returns the keys created. Never raises.

    ``png`` is the run's ``timeline.png``, shown inline in the ``deploy-timeline-chart`` artifact."""
    if not _in_run():
        return []
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    logger = run_logger()
    made: list[str] = []
    wanted: list[tuple[str, Any]] = [
        ("deploy-summary", lambda: create_markdown_artifact(
            markdown=summary_markdown(doc), key="deploy-summary", description="Endpoint and every check")),
    ]
    if doc.get("load_test"):
        wanted.append(("load-test-stages", lambda: create_table_artifact(
            table=doc["load_test"]["stages"], key="load-test-stages", description="Load test, per stage")))
    if doc.get("node_mix"):
        wanted.append(("node-mix", lambda: create_table_artifact(
            table=doc["node_mix"]["instances"] or [{"instance_id": None}], key="node-mix",
            description="Pool instances (DescribeClusterNodes) by billing")))
    if png is not None:
        wanted.append(("deploy-timeline-chart", lambda: create_markdown_artifact(
            markdown=timeline_chart_markdown(Path(png), f"{doc['deployment']['deployment']}: timeline"),
            key="deploy-timeline-chart", description="timeline.png: load, replicas and nodes during the load test")))
    if doc.get("timeline"):
        rows = [{k: v for k, v in s.items() if k != "errors"} for s in doc["timeline"]]
        wanted.append(("deploy-timeline", lambda: create_table_artifact(
            table=rows, key="deploy-timeline", description="Metric, replicas and nodes during the load test")))
    for key, make in wanted:
        try:
            make()
            made.append(key)
        except Exception as exc:  # artifacts are a view: never fail the run for one
            logger.warning("artifact %s not created: %s", key, exc)
    return made


# --- the task -----------------------------------------------------------------------------------------------------
def write_report_files(
    spec: DeploySpec,
    verification: VerificationReport,
    *,
    endpoint: IngressEndpoint | None = None,
    load: LoadTestResult | None = None,
    timeline: list[TimelineSample] | None = None,
    facts: Facts | None = None,
    prices: PriceTable | str | Path | None = None,
    reports_dir: str | Path = DEFAULT_REPORTS_DIR,
    run_name: str | None = None,
    nodepool_id: str | None = None,
) -> tuple[ReportFiles, dict[str, Any]]:
    """Write ``reports/<run>/``: report.json, report.md, timeline.png, locust.html. Returns the paths and the doc."""
    run_name = run_name or run_label()
    out = Path(reports_dir) / safe_dir_name(run_name)
    out.mkdir(parents=True, exist_ok=True)
    cost = None
    if facts is not None:
        table = prices if isinstance(prices, PriceTable) else load_price_table(prices)
        zones = {n.instance_id: n.zone for n in facts.nodes if n.instance_id and n.zone}
        cost = estimate_cost(active_instances(facts.ack_nodes), table, zones)
    doc = build_report(spec, verification, endpoint=endpoint, load=load, timeline=timeline, facts=facts, cost=cost,
                       nodepool_id=nodepool_id, run_name=run_name)
    png: Path | None = None
    if timeline or (load is not None and load.history):
        png = plot_timeline(out / "timeline.png", timeline or [], load,
                            title=f"{spec.names.deployment}: load, replicas and nodes")
    html: Path | None = None
    if load is not None and load.html_path and Path(load.html_path).is_file():
        html = out / "locust.html"
        if Path(load.html_path).resolve() != html.resolve():
            shutil.copyfile(load.html_path, html)
    doc["files"] = {"report_md": "report.md", "timeline_png": png.name if png else None,
                    "locust_html": html.name if html else None}
    (out / "report.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    md = out / "report.md"
    md.write_text(report_markdown(doc, png.name if png else None, html.name if html else None))
    files = ReportFiles(
        directory=str(out), json_path=str(out / "report.json"), markdown_path=str(md),
        png_path=str(png) if png else None, locust_html_path=str(html) if html else None,
        passed=verification.passed,
    )
    return files, doc


@task(name="report", cache_policy=NO_CACHE)
def write_report(
    spec: DeploySpec,
    verification: VerificationReport,
    endpoint: IngressEndpoint | None = None,
    load: LoadTestResult | None = None,
    timeline: list[TimelineSample] | None = None,
    facts: Facts | None = None,
    prices: PriceTable | str | Path | None = None,
    reports_dir: str | Path = DEFAULT_REPORTS_DIR,
    run_name: str | None = None,
    nodepool_id: str | None = None,
) -> ReportFiles:
    """Step 9: the report files and the Prefect artifacts. Does not raise on failed checks (see verify)."""
    files, doc = write_report_files(
        spec, verification, endpoint=endpoint, load=load, timeline=timeline, facts=facts, prices=prices,
        reports_dir=reports_dir, run_name=run_name, nodepool_id=nodepool_id,
    )
    publish_artifacts(doc, files.png_path)
    logger = run_logger()
    logger.info("report written to %s (%s)", files.directory, "all checks passed" if files.passed else
                "FAILED: " + ", ".join(c.name for c in verification.failed))
    if doc.get("cost"):
        c = doc["cost"]
        logger.info("cost: %.2f %s/h vs %.2f %s/h all pay-as-you-go (%.0f%% saved), %s", c["hourly"], c["currency"],
                    c["hourly_all_on_demand"], c["currency"], c["saving_pct"], c["source"])
    return files
