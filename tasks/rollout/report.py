"""The rollout's record: ``rollout.md``, ``rollout.json`` and ``rollout.png`` next to the run's report, and the
``rollout`` Prefect artifact (the table, the picture inline and the decision with its reason).

One row per analysed step: the canary weight, what the new version did with the analysis requests (requests,
failures, p95), the users' requests each version served in the step's window as SLS's access log counts them
(requests, error %, p95), which data the decision used, its available replicas and the live version's, and the
main route's ``sls_ingress_qps`` (both versions together: SLS counts a canary's requests on the main route,
tasks/rollout/canary.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Protocol

from matplotlib.figure import Figure

from clients.logs import in_prefect_run, run_logger
from tasks.rollout.analysis import StepAnalysis


class RolloutRecord(Protocol):
    """What a rollout reports (flows.rollout.RolloutReport)."""

    strategy: str
    previous: str
    steps: list[StepAnalysis]
    decision: str
    reason: str
    promotion: Any  # tasks.rollout.versions.Promotion | None: what retiring the previous version did


def retired_line(record: RolloutRecord) -> str | None:
    """What retiring the previous version did, and what said its route was quiet; None before a promotion."""
    p = record.promotion
    if p is None or not p.scaled_to_zero:
        return None
    return (f"retired {p.scaled_to_zero} (scaled to zero)" + (f" once {p.quiet}" if p.quiet else " after the drain")
            + (f"; pruned {', '.join(p.pruned)}" if p.pruned else ""))


def step_rows(steps: list[StepAnalysis]) -> list[dict[str, Any]]:
    return [{
        "step": a.stats.step, "weight %": a.stats.weight, "seconds": a.stats.seconds,
        "requests": a.stats.requests, "failures": a.stats.failures,
        "error %": round(100 * a.stats.error_rate, 2),
        "p95 ms": None if a.stats.p95_ms is None else round(a.stats.p95_ms, 1),
        "new replicas": a.stats.available, "live replicas": a.stats.stable_available,
        "main route QPS": a.stats.users_qps,
        **_users("users new", a.stats.users), **_users("users stable", a.stats.stable_users),
        "SLS read failures": len(a.stats.sls_failures), "decided on": a.stats.data, "passed": a.passed,
    } for a in steps]


def _users(prefix: str, v: Any) -> dict[str, Any]:
    if v is None:
        return {f"{prefix} requests": None, f"{prefix} error %": None, f"{prefix} p95 ms": None}
    return {f"{prefix} requests": v.requests, f"{prefix} error %": round(100 * v.error_rate, 2),
            f"{prefix} p95 ms": None if v.p95_ms is None else round(v.p95_ms, 1)}


def rollout_markdown(record: RolloutRecord, png: Path | None) -> str:
    rows = step_rows(record.steps)
    lines = [f"# Rollout: {record.decision}", "", f"- strategy: {record.strategy}", f"- replacing: {record.previous}",
             f"- decision: **{record.decision}**: {record.reason}"]
    if retired := retired_line(record):
        lines.append(f"- {retired}")
    lines.append("")
    if rows:
        cols = list(rows[0])
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
        lines.append("")
    else:
        lines += ["No traffic step ran: the new version failed before any user request reached it.", ""]
    if png is not None and png.exists():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        lines += [f"![rollout](data:image/png;base64,{data})", ""]
    return "\n".join(lines)


def plot_rollout(path: Path, steps: list[StepAnalysis], title: str) -> Path:
    """Per step: the weight (bars), the new version's p95 and error rate (lines), both versions' replicas."""
    fig = Figure(figsize=(9, 6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = list(range(len(steps)))
    labels = [s.stats.step for s in steps]
    top.bar(xs, [s.stats.weight for s in steps], color=["tab:green" if s.passed else "tab:red" for s in steps],
            alpha=0.35, label="canary weight (%)")
    top.set_ylabel("weight % / error %")
    top.plot(xs, [100 * s.stats.error_rate for s in steps], "-o", color="tab:red", label="new version error %")
    p95 = top.twinx()
    p95.plot(xs, [float("nan") if s.stats.p95_ms is None else s.stats.p95_ms for s in steps], "-s",
             color="tab:blue", label="new version p95 (ms)")
    p95.set_ylabel("p95 (ms)", color="tab:blue")
    p95.set_ylim(bottom=0)
    top.set_ylim(0, 105)
    top.legend(loc="upper left", fontsize=8)
    p95.legend(loc="upper right", fontsize=8)
    top.set_title(title)
    bottom.plot(xs, [s.stats.available for s in steps], "-o", color="tab:green", label="new version replicas")
    bottom.plot(xs, [float("nan") if s.stats.stable_available is None else s.stats.stable_available for s in steps],
                "-o", color="tab:orange", label="live version replicas")
    qps = bottom.twinx()
    qps.plot(xs, [float("nan") if s.stats.users_qps is None else s.stats.users_qps for s in steps], ":",
             color="black", label="main route QPS (SLS)")
    qps.set_ylabel("requests/s")
    qps.set_ylim(bottom=0)
    qps.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel("available replicas")
    bottom.set_ylim(bottom=0)
    bottom.set_xticks(xs, labels)
    bottom.legend(loc="upper left", fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_rollout_report(record: RolloutRecord, directory: Path, title: str) -> Path:
    """Write the files into ``directory`` (the run's report directory) and, inside a run, the artifact."""
    directory.mkdir(parents=True, exist_ok=True)
    png = plot_rollout(directory / "rollout.png", record.steps, title) if record.steps else None
    (directory / "rollout.json").write_text(json.dumps({
        "strategy": record.strategy, "previous": record.previous, "decision": record.decision,
        "reason": record.reason, "retired": retired_line(record), "steps": step_rows(record.steps)}, indent=2))
    md = rollout_markdown(record, png)
    (directory / "rollout.md").write_text(md)
    if in_prefect_run():
        try:
            from prefect.artifacts import create_markdown_artifact

            create_markdown_artifact(markdown=md, key="rollout",
                                     description=f"Rollout steps and decision: {record.decision}")
        except Exception as exc:  # artifacts are a view: never fail the run for one
            run_logger().warning("artifact rollout not created: %s", exc)
    return directory / "rollout.md"
