"""Workflow benchmark (JSON on stdout): one execution end to end, and a batch of 500.

serialize -> classify (through the real local HTTP endpoint) -> filter, on the real handler files
in the local Lambda runtime, with history kept in SQLite. Goals (issue 6): p50 <= 5 ms per
execution; >= 200 executions per second for a batch of 500 on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend import get_backend  # noqa: E402
from backend.settings import load_settings  # noqa: E402
from bench.endpoint import cpu_seconds  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def state_times(history: list[dict]) -> dict[str, float]:
    """ms from TaskScheduled to TaskSucceeded per state, and the rest (engine + history) as overhead."""
    out: dict[str, float] = {}
    current, scheduled = None, None
    for e in history:
        if e["type"] == "TaskStateEntered":
            current = e["stateEnteredEventDetails"]["name"]
        elif e["type"] == "TaskScheduled":
            scheduled = e["timestamp"]
        elif e["type"] == "TaskSucceeded" and scheduled is not None:
            out[current] = (e["timestamp"] - scheduled).total_seconds() * 1000
    total = (history[-1]["timestamp"] - history[0]["timestamp"]).total_seconds() * 1000
    out["engine_and_transitions"] = total - sum(out.values())
    return out


def calibrate(b, endpoint: str) -> dict[str, float]:
    """This machine's speed right now, for reading the figures above: the endpoint alone over HTTP,
    and a pure-Python loop (a shared host's speed drifts by a third between quiet hours)."""
    from backend.local.serving.client import EndpointClient

    png = b.get_object(b.test_image_keys()[0])
    port = int(b.describe_endpoint(endpoint).url.rstrip("/").rsplit(":", 1)[-1])
    client, direct = EndpointClient(), []
    for i in range(330):
        t = time.perf_counter()
        client.invoke(port, png, "image/png")
        if i >= 30:
            direct.append((time.perf_counter() - t) * 1000)
    client.close()
    loops = []
    for _ in range(5):
        t = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        loops.append((time.perf_counter() - t) * 1000)
    return {"endpoint_over_http": round(pct(direct, 50), 3), "python_loop_1M": round(statistics.median(loops), 1)}


def processes(b) -> dict[int, str]:
    """The processes one execution crosses: this one (the States engine), the Lambda workers of each
    function, the gateway and the endpoint (the other children of this process)."""
    out = {os.getpid(): "engine (this process)"}
    runtime = b.workflow.runtime
    for function in runtime.functions():
        for pid in runtime.worker_pids(function.name):
            out[pid] = f"{function.name} workers"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in out:
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                out[int(entry.name)] = "gateway" if "gateway_process" in cmd else "endpoint" if "serving.server" in cmd else "other"
    return out


def cpu_per_execution(before: dict[int, float], pids: dict[int, str], executions: int) -> dict[str, float]:
    """ms of CPU per execution, by process kind, from two snapshots."""
    out: dict[str, float] = {}
    for pid, label in pids.items():
        out[label] = out.get(label, 0.0) + (cpu_seconds(pid) - before.get(pid, 0.0)) * 1000 / executions
    out = {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.005}
    out["total"] = round(sum(out.values()), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--single", type=int, default=300)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                    help="a training hyperparameter of the served model (default: the page's defaults)")
    args = ap.parse_args()
    if any("=" not in item for item in args.hp):
        ap.error("--hp takes NAME=VALUE, for example --hp test_time_flip=1")
    overrides = dict(item.split("=", 1) for item in args.hp)
    with tempfile.TemporaryDirectory() as home:
        b = get_backend(replace(load_settings({}), home=Path(home)))
        try:
            b.stage_data("sample")
            job = b.create_training_job({**b.default_training_hyperparameters(), "epochs": "1", **overrides})
            while b.describe_training_job(job).status == "InProgress":
                time.sleep(0.5)
            model = b.create_model(job)
            served = {k: b.describe_training_job(job).hyperparameters.get(k) for k in ("num_layers", "test_time_flip", "int8_serving")}
            b.deploy(model.model_name, "bench-endpoint", capture_percent=100)
            assert b.wait_endpoint("bench-endpoint", timeout=60).status == "InService"
            b.deploy_workflow("bench-endpoint", threshold=0.0)
            # Steady state: every function's environments started (a cold function shares its first one, so a
            # warm-up batch alone leaves one each), then their connections opened by a batch.
            b.wait_workflow_executions(b.start_workflow_batch(1), timeout=120)
            for function in b.workflow.runtime.functions():
                b.workflow.runtime.warm(function.name, function.max_workers)
            b.wait_workflow_executions(b.start_workflow_batch(20), timeout=120)

            single, parts = [], []
            single_pids, single_before = processes(b), {}
            counted_from = min(50, args.single - 1)  # CPU counted from here: the history reads below are done
            for i in range(args.single):
                if i == counted_from:
                    single_before = {pid: cpu_seconds(pid) for pid in single_pids}
                t = time.perf_counter()
                arn = b.start_workflow_batch(1)[0]
                e = b.wait_workflow_executions([arn], timeout=60)[0]
                single.append((time.perf_counter() - t) * 1000)
                assert e.status == "SUCCEEDED", e
                if len(parts) < 50:
                    parts.append(state_times(b.workflow_execution_history(arn)))

            single_cpu = cpu_per_execution(single_before, single_pids, args.single - counted_from)
            calibration = calibrate(b, "bench-endpoint")

            pids = processes(b)
            before = {pid: cpu_seconds(pid) for pid in pids}
            t = time.perf_counter()
            arns = b.start_workflow_batch(args.batch)
            done = b.wait_workflow_executions(arns, timeout=600)
            batch_s = time.perf_counter() - t
            pids.update(processes(b))  # workers started during the batch count from zero
            batch_cpu = cpu_per_execution(before, pids, args.batch)
            statuses = {s: sum(e.status == s for e in done) for s in {e.status for e in done}}
            captured = sum(1 for o in b.list_objects("data_capture/") for _ in [0])
        finally:
            if "workflow" in vars(b):
                b.workflow.close()
            for e in b.list_endpoints():
                b.delete_endpoint(e.endpoint_name)
    where = {k: round(statistics.median(p[k] for p in parts), 3) for k in parts[0]}
    print(json.dumps({
        "benchmark": "workflow",
        "served_model": served,
        "single_execution_ms": {"n": len(single), "p50": round(pct(single, 50), 3), "p95": round(pct(single, 95), 3),
                                "p99": round(pct(single, 99), 3), "goal_p50": 5.0,
                                "meets_goal": pct(single, 50) <= 5.0, "cpu_ms_per_execution": single_cpu},
        "where_the_time_goes_ms_p50": where,
        "batch": {"executions": args.batch, "seconds": round(batch_s, 3),
                  "executions_per_second": round(args.batch / batch_s, 1), "goal_per_second": 200,
                  "meets_goal": args.batch / batch_s >= 200, "statuses": statuses,
                  "cpu_ms_per_execution": batch_cpu},
        "capture_files": captured,
        "calibration_ms_p50": calibration,
    }, indent=2))


if __name__ == "__main__":
    main()
