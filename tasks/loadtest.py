"""Step 7: the stress test through the Ingress, with Locust as a SUBPROCESS, turned into a typed result.

Locust is never imported here: ``import locust`` monkey-patches the process with gevent, which breaks Prefect
(locustio/locust #2250, #2661). :func:`run_load_test` runs::

    python -m locust -f loadtests/locustfile.py --headless -H http://<ingress address>:<port>
        --csv <out>/locust --csv-full-history --html <out>/locust.html --json-file <out>/locust
        --only-summary -s 5 --exit-code-on-error 0

with the step stages written to ``<out>/stages.json`` and the model name, Host header, wait time and payload file
in ``EI_*`` environment variables (see the locustfile). ``--exit-code-on-error 0``: failed requests are data for
the SLO checks (tasks/verify.py), not a reason for Locust to fail the step. ``--only-summary``: the periodic
stats table is noise in the run log; the history CSV keeps every second. The subprocess runs with a timeout of
the total stage time plus the stop timeout plus a margin; its output goes to ``<out>/locust.log`` and to the run
log line by line.

Per-stage statistics. The locustfile names each prediction ``predict [stage N]`` after the stage of the step shape
it was sent in, so Locust's own per-name statistics ARE the per-stage statistics; no splitting of a time series
by guessed boundaries. The JSON stats file (``--json-file``) holds, per name, the request and failure counts and
the response-time histogram Locust keeps (times rounded as Locust rounds them: exact below 100 ms, to 10 ms below
1 s, to 100 ms above); percentiles are computed from it with Locust's own rule (:func:`percentile`). The shape
also appends the wall-clock start of each stage to ``<out>/stage-log.jsonl``, which gives each stage's real
start and end (RPS = requests / real duration). The history CSV's ``Aggregated`` rows (one per second: users,
requests/s, failures/s, p50/p95 over Locust's sliding window) become :attr:`LoadTestResult.history` for the
timeline chart.

The parsing functions are pure (text in, pydantic out) and are tested on the files of a real Locust run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from clients.logs import run_logger
from core.spec import DeploySpec
from loadtests.common import (
    ENV_EXTRA_HEADERS,
    ENV_HOST_HEADER,
    ENV_MODEL,
    ENV_PAYLOAD_FILE,
    ENV_STAGE_LOG,
    ENV_STAGES_FILE,
    ENV_WAIT_TIME,
    METADATA,
    PREDICT,
    StagePlan,
    parse_request_name,
)
from tasks.ingress import IngressEndpoint

LOCUSTFILE = Path(__file__).resolve().parents[1] / "loadtests" / "locustfile.py"
STOP_TIMEOUT_S = 5
# Environment variables never handed to the Locust process (it needs none of them).
_SECRET_ENV_PREFIXES = ("ALIBABA_CLOUD_", "ALICLOUD_", "PREFECT_API_KEY", "AWS_")


# --- result shapes ---------------------------------------------------------------------------------------------
class StageStats(BaseModel):
    index: int
    users: int
    start_s: float = Field(description="Seconds from the start of the load test")
    end_s: float
    requests: int
    failures: int
    error_rate: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class HistoryPoint(BaseModel):
    """One second of Locust's history (the ``Aggregated`` row): current rates and sliding-window percentiles."""

    timestamp: float
    t: float = Field(description="Seconds from the start of the load test")
    users: int
    rps: float
    failures_per_s: float
    p50_ms: float | None
    p95_ms: float | None


class ErrorCount(BaseModel):
    name: str
    error: str
    occurrences: int


class LoadTestResult(BaseModel):
    requests: int = Field(description="Predictions sent (the metadata reads are counted apart)")
    failures: int
    error_rate: float
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    max_ms: float | None
    started_at: float = Field(description="Unix time the first stage began")
    ended_at: float
    duration_s: float
    stages: list[StageStats]
    metadata_requests: int = 0
    metadata_failures: int = 0
    errors: list[ErrorCount] = Field(default_factory=list)
    history: list[HistoryPoint] = Field(default_factory=list)
    html_path: str | None = None
    csv_prefix: str | None = None
    json_path: str | None = None
    log_path: str | None = None

    @property
    def final_stage(self) -> StageStats | None:
        return self.stages[-1] if self.stages else None


class LoadTestError(RuntimeError):
    """Locust did not run to the end (crash, bad locustfile input, timeout); says what its log said last."""


# --- pure parsing ----------------------------------------------------------------------------------------------
def percentile(histogram: dict[int, int], percent: float, total: int | None = None) -> float | None:
    """Locust's rule (``locust.stats.calculate_response_time_percentile``) over a rounded-time histogram."""
    n = sum(histogram.values()) if total is None else total
    if n <= 0:
        return None
    wanted = int(n * percent)
    processed = 0
    for rt in sorted(histogram, reverse=True):
        processed += histogram[rt]
        if n - processed <= wanted:
            return float(rt)
    return 0.0


def _histogram(entry: dict[str, Any]) -> Counter[int]:
    return Counter({int(float(k)): int(v) for k, v in (entry.get("response_times") or {}).items()})


class _Agg:
    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.total_rt = 0.0
        self.max_rt: float | None = None
        self.hist: Counter[int] = Counter()
        self.first: float | None = None
        self.last: float | None = None

    def add(self, e: dict[str, Any]) -> None:
        self.requests += int(e.get("num_requests") or 0)
        self.failures += int(e.get("num_failures") or 0)
        self.total_rt += float(e.get("total_response_time") or 0)
        if e.get("max_response_time") is not None and int(e.get("num_requests") or 0):
            self.max_rt = max(self.max_rt or 0.0, float(e["max_response_time"]))
        self.hist.update(_histogram(e))
        if e.get("start_time"):
            self.first = min(self.first, e["start_time"]) if self.first else float(e["start_time"])
        if e.get("last_request_timestamp"):
            ts = float(e["last_request_timestamp"])
            self.last = max(self.last, ts) if self.last else ts

    def pct(self, p: float) -> float | None:
        return percentile(self.hist, p)

    @property
    def avg(self) -> float | None:
        timed = sum(self.hist.values())
        return round(self.total_rt / timed, 3) if timed else None


def parse_stage_log(text: str) -> tuple[dict[int, float], float | None]:
    """``stage-log.jsonl`` → ({stage index: unix start}, unix end or None)."""
    starts: dict[int, float] = {}
    end: float | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "stage" and "index" in rec:
            starts.setdefault(int(rec["index"]), float(rec["time"]))
        elif rec.get("event") == "end":
            end = float(rec["time"])
    return starts, end


def _num(value: str | None) -> float | None:
    if value is None or value.strip() in ("", "N/A"):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_history_csv(text: str, started_at: float | None = None) -> list[HistoryPoint]:
    """The ``Aggregated`` rows of ``<prefix>_stats_history.csv`` (one per second) as history points."""
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get("Name") == "Aggregated"]
    if not rows:
        return []
    t0 = started_at if started_at is not None else float(rows[0]["Timestamp"])
    out = []
    for r in rows:
        ts = float(r["Timestamp"])
        out.append(
            HistoryPoint(
                timestamp=ts,
                t=round(ts - t0, 3),
                users=int(float(r.get("User Count") or 0)),
                rps=_num(r.get("Requests/s")) or 0.0,
                failures_per_s=_num(r.get("Failures/s")) or 0.0,
                p50_ms=_num(r.get("50%")),
                p95_ms=_num(r.get("95%")),
            )
        )
    return out


def parse_failures_csv(text: str, limit: int = 20) -> list[ErrorCount]:
    """``<prefix>_failures.csv`` (Method, Name, Error, Occurrences), most frequent first."""
    out = [
        ErrorCount(name=r.get("Name", ""), error=(r.get("Error") or "")[:300], occurrences=int(r.get("Occurrences") or 0))
        for r in csv.DictReader(io.StringIO(text))
    ]
    return sorted(out, key=lambda e: -e.occurrences)[:limit]


def summarize_stats(
    entries: list[dict[str, Any]],
    plan: StagePlan,
    stage_starts: dict[int, float] | None = None,
    ended_at: float | None = None,
    history: list[HistoryPoint] | None = None,
    errors: list[ErrorCount] | None = None,
) -> LoadTestResult:
    """Locust's JSON stats (one entry per request name) + the stage log → the typed result.

    Stage start/end: from the stage log when present, else from the plan (cumulative durations) anchored at the
    first request. A stage that never started (the run stopped early) is left out.
    """
    stage_starts = dict(stage_starts or {})
    by_stage: dict[int, _Agg] = {}
    total, meta = _Agg(), _Agg()
    for e in entries:
        kind, index = parse_request_name(str(e.get("name", "")))
        if kind == PREDICT and index is not None:
            by_stage.setdefault(index, _Agg()).add(e)
            total.add(e)
        elif kind == METADATA:
            meta.add(e)
    first_request = min((a.first for a in (*by_stage.values(), meta) if a.first), default=None)
    last_request = max((a.last for a in (*by_stage.values(), meta) if a.last), default=None)
    if stage_starts:
        started_at = min(stage_starts.values())
    else:
        started_at = first_request if first_request is not None else (ended_at or 0.0)
        stage_starts = {i: started_at + s for i, s in enumerate(plan.starts())}
    if ended_at is None:
        ended_at = max(last_request or started_at, started_at)
    stages: list[StageStats] = []
    for i, spec_stage in enumerate(plan.stages):
        agg = by_stage.get(i)
        start = stage_starts.get(i)
        if start is None or start > ended_at:
            if agg is None:
                continue
            start = started_at + plan.starts()[i]
        end = min(stage_starts.get(i + 1, ended_at), ended_at)
        agg = agg or _Agg()
        duration = max(end - start, 1e-9)
        stages.append(
            StageStats(
                index=i,
                users=spec_stage.users,
                start_s=round(start - started_at, 3),
                end_s=round(end - started_at, 3),
                requests=agg.requests,
                failures=agg.failures,
                error_rate=round(agg.failures / agg.requests, 6) if agg.requests else 0.0,
                rps=round(agg.requests / duration, 3),
                p50_ms=agg.pct(0.50),
                p95_ms=agg.pct(0.95),
                p99_ms=agg.pct(0.99),
            )
        )
    duration = max(ended_at - started_at, 1e-9)
    return LoadTestResult(
        requests=total.requests,
        failures=total.failures,
        error_rate=round(total.failures / total.requests, 6) if total.requests else 0.0,
        rps=round(total.requests / duration, 3),
        p50_ms=total.pct(0.50),
        p95_ms=total.pct(0.95),
        p99_ms=total.pct(0.99),
        avg_ms=total.avg,
        max_ms=total.max_rt,
        started_at=started_at,
        ended_at=ended_at,
        duration_s=round(duration, 3),
        stages=stages,
        metadata_requests=meta.requests,
        metadata_failures=meta.failures,
        errors=list(errors or []),
        history=list(history or []),
    )


def parse_locust_output(out_dir: Path, plan: StagePlan, prefix: str = "locust") -> LoadTestResult:
    """Read the files one run left in ``out_dir`` and summarize them (pure apart from reading the files)."""
    out_dir = Path(out_dir)
    json_path = out_dir / f"{prefix}.json"
    if not json_path.exists():
        raise LoadTestError(f"Locust wrote no JSON stats ({json_path})")
    entries = json.loads(json_path.read_text() or "[]")
    log = out_dir / "stage-log.jsonl"
    starts, end = parse_stage_log(log.read_text()) if log.exists() else ({}, None)
    hist_path = out_dir / f"{prefix}_stats_history.csv"
    fail_path = out_dir / f"{prefix}_failures.csv"
    started = min(starts.values()) if starts else None
    history = parse_history_csv(hist_path.read_text(), started) if hist_path.exists() else []
    errors = parse_failures_csv(fail_path.read_text()) if fail_path.exists() else []
    result = summarize_stats(entries, plan, starts, end, history, errors)
    html = out_dir / f"{prefix}.html"
    logfile = out_dir / "locust.log"
    return result.model_copy(
        update={
            "html_path": str(html) if html.exists() else None,
            "csv_prefix": str(out_dir / prefix),
            "json_path": str(json_path),
            "log_path": str(logfile) if logfile.exists() else None,
        }
    )


# --- the subprocess --------------------------------------------------------------------------------------------
def stage_plan(spec: DeploySpec) -> StagePlan:
    return StagePlan.from_json([s.model_dump() for s in spec.load_test.stages])


def locust_command(host_url: str, out_dir: Path, prefix: str = "locust", python: str | None = None) -> list[str]:
    base = str(Path(out_dir) / prefix)
    return [
        python or sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "-H", host_url.rstrip("/"),
        "--csv", base, "--csv-full-history",
        "--html", base + ".html",
        "--json-file", base,
        "--only-summary",
        "-s", str(STOP_TIMEOUT_S),
        "--exit-code-on-error", "0",
        "--loglevel", "INFO",
    ]


def locust_env(
    model: str,
    host_header: str | None,
    stages_file: Path,
    stage_log: Path,
    wait_time_s: float,
    payload_file: Path | None = None,
    base: dict[str, str] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {
        k: v for k, v in (os.environ if base is None else base).items()
        if not k.startswith(_SECRET_ENV_PREFIXES)
    }
    env.update(
        {
            ENV_MODEL: model,
            ENV_HOST_HEADER: host_header or "",
            ENV_EXTRA_HEADERS: json.dumps(extra_headers or {}),
            ENV_STAGES_FILE: str(stages_file),
            ENV_STAGE_LOG: str(stage_log),
            ENV_WAIT_TIME: repr(float(wait_time_s)),
            ENV_PAYLOAD_FILE: str(payload_file) if payload_file else "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_locust(
    host_url: str,
    model: str,
    plan: StagePlan,
    out_dir: Path,
    *,
    host_header: str | None = None,
    wait_time_s: float = 1.0,
    payload_file: Path | None = None,
    timeout_margin_s: float = 60.0,
    on_line: Any = None,
    extra_headers: dict[str, str] | None = None,
) -> LoadTestResult:
    """Run Locust headless over ``plan`` and parse what it wrote; raises :class:`LoadTestError` if it fails."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stages_file = out_dir / "stages.json"
    stages_file.write_text(json.dumps(plan.to_json(), indent=2))
    stage_log = out_dir / "stage-log.jsonl"
    for stale in (stage_log, out_dir / "locust.json"):
        stale.unlink(missing_ok=True)
    logfile = out_dir / "locust.log"
    cmd = locust_command(host_url, out_dir)
    env = locust_env(model, host_header, stages_file, stage_log, wait_time_s, payload_file,
                     extra_headers=extra_headers)
    timeout = plan.total_s + STOP_TIMEOUT_S + timeout_margin_s
    with open(logfile, "w") as log_fh:
        proc = subprocess.Popen(
            cmd, cwd=out_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_fh.write(line)
                log_fh.flush()
                if on_line is not None and line.strip():
                    on_line(line.rstrip())

        reader = threading.Thread(target=pump, name="locust-log", daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()  # Locust stops its users and still writes its reports on SIGTERM
            try:
                proc.wait(timeout=STOP_TIMEOUT_S + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            raise LoadTestError(
                f"Locust did not finish within {timeout:.0f}s (stages {plan.total_s:.0f}s + margin); "
                f"last lines of {logfile}:\n{_tail(logfile)}"
            ) from None
        finally:
            if proc.poll() is None:  # interrupted (KeyboardInterrupt, cancellation): leave no process behind
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
    if code != 0:
        raise LoadTestError(f"Locust exited with code {code}; last lines of {logfile}:\n{_tail(logfile)}")
    return parse_locust_output(out_dir, plan)


@task(name="load_test", cache_policy=NO_CACHE)
def run_load_test(
    endpoint: IngressEndpoint, spec: DeploySpec, out_dir: Path | str, timeout_margin_s: float = 60.0
) -> LoadTestResult:
    """Step 7: the step load of ``spec.load_test`` through the Ingress ``endpoint`` (Host header included)."""
    logger = run_logger()
    lt = spec.load_test
    plan = stage_plan(spec)
    logger.info(
        "load test: %d stages (%s), %.0fs, against %s with Host %s%s",
        len(plan.stages),
        ", ".join(f"{s.users} users/{s.duration_s:.0f}s" for s in plan.stages),
        plan.total_s,
        endpoint.url,
        endpoint.host,
        "".join(f" and {k}: {v}" for k, v in endpoint.headers.items()),
    )
    started = time.monotonic()
    result = run_locust(
        endpoint.url,
        spec.model.name,
        plan,
        Path(out_dir).resolve(),
        host_header=endpoint.host,
        extra_headers=endpoint.headers,
        wait_time_s=lt.wait_time_s,
        payload_file=lt.payload_file,
        timeout_margin_s=timeout_margin_s,
        on_line=lambda line: logger.info("locust: %s", line),
    )
    logger.info(
        "load test done in %.0fs: %d requests, %d failures (%.2f%%), %.1f req/s, p50 %s ms, p95 %s ms, p99 %s ms",
        time.monotonic() - started,
        result.requests,
        result.failures,
        100 * result.error_rate,
        result.rps,
        result.p50_ms,
        result.p95_ms,
        result.p99_ms,
    )
    return result
