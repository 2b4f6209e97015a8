"""Benchmark of the local states engine, beside moto's Step Functions interpreter.

Prints one JSON document. Two figures, each measured on this engine and on moto's parser (the
LocalStack interpreter inside moto 5) with the same definitions in the same run:
  * overhead per state transition: one execution of a chain of 1,000 Pass states;
  * 1,000 executions of a 3-task workflow with no-op tasks (moto cannot call our resolver, so its
    side runs the same shape with Pass states; the engine runs both, for a like-for-like ratio).
Targets: <= 0.2 ms per transition, 1,000 three-task executions in <= 2 s.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.local.db import Database  # noqa: E402
from backend.local.states import StatesEngine  # noqa: E402

TARGET_MS_PER_TRANSITION = 0.2
TARGET_THREE_TASK_SECONDS = 2.0
CHAIN = 1000
EXECUTIONS = 1000
MOTO_EXECUTIONS = int(os.environ.get("BENCH_MOTO_EXECUTIONS", "200"))
INVOKE = "arn:aws:states:::lambda:invoke"


def chain(n: int) -> dict:
    states = {f"S{i}": {"Type": "Pass", "Next": f"S{i + 1}"} for i in range(n - 1)}
    states[f"S{n - 1}"] = {"Type": "Pass", "End": True}
    return {"StartAt": "S0", "States": states}


def three(kind: str) -> dict:
    def state(name: str, nxt: str | None) -> dict:
        s = {"Type": "Task", "Resource": INVOKE, "Parameters": {"FunctionName": name, "Payload.$": "$"},
             "OutputPath": "$.Payload"} if kind == "Task" else {"Type": "Pass"}
        return dict(s, **({"Next": nxt} if nxt else {"End": True}))

    return {"StartAt": "Serialize", "States": {"Serialize": state("serialize", "Classify"),
                                               "Classify": state("classify", "Filter"), "Filter": state("filter", None)}}


def no_op(resource, parameters, context):
    return {"ExecutedVersion": "$LATEST", "Payload": parameters.get("Payload"), "StatusCode": 200}


def bench_engine(workdir: Path) -> dict:
    engine = StatesEngine(Database(workdir / "bench.db"), no_op)
    try:
        engine.run_execution(chain(CHAIN), {"warm": True})  # compile and warm up once
        runs = []
        for i in range(5):
            began = time.perf_counter()
            record = engine.run_execution(chain(CHAIN), {"run": i})
            runs.append(time.perf_counter() - began)
            assert record.status == "SUCCEEDED"
        per_transition = statistics.median(runs) * 1000 / CHAIN
        out = {"chain_1000_pass": {"ms_per_transition": round(per_transition, 4),
                                   "best_ms_per_transition": round(min(runs) * 1000 / CHAIN, 4), "runs": len(runs)}}
        for kind in ("Task", "Pass"):
            definition = three(kind)
            engine.run_execution(definition, {"warm": kind})
            began = time.perf_counter()
            for i in range(EXECUTIONS):
                record = engine.run_execution(definition, {"s3_key": f"test/{i}.png"})
            seconds = time.perf_counter() - began
            assert record.status == "SUCCEEDED", record
            out[f"three_{kind.lower()}_x{EXECUTIONS}"] = {
                "seconds": round(seconds, 3), "executions_per_s": round(EXECUTIONS / seconds, 1),
                "ms_per_execution": round(seconds * 1000 / EXECUTIONS, 3)}
        return out
    finally:
        engine.close()


def bench_moto() -> dict:
    try:
        import boto3
        from moto import mock_aws
    except ImportError as e:  # moto is a dev dependency
        return {"skipped": f"moto is not installed ({e})"}
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        role = "arn:aws:iam::123456789012:role/bench"

        def run(sm_arn: str, name: str, payload: dict) -> str:
            arn = client.start_execution(stateMachineArn=sm_arn, name=name, input=json.dumps(payload))["executionArn"]
            while True:
                status = client.describe_execution(executionArn=arn)["status"]
                if status != "RUNNING":
                    return status
                time.sleep(0.0002)

        long_sm = client.create_state_machine(name="chain", definition=json.dumps(chain(CHAIN)), roleArn=role)["stateMachineArn"]
        runs = []
        for i in range(3):
            began = time.perf_counter()
            assert run(long_sm, f"chain-{i}", {"run": i}) == "SUCCEEDED"
            runs.append(time.perf_counter() - began)
        short_sm = client.create_state_machine(name="three", definition=json.dumps(three("Pass")), roleArn=role)["stateMachineArn"]
        run(short_sm, "warm", {})
        began = time.perf_counter()
        for i in range(MOTO_EXECUTIONS):
            assert run(short_sm, f"e{i}", {"s3_key": f"test/{i}.png"}) == "SUCCEEDED"
        seconds = time.perf_counter() - began
    return {
        "chain_1000_pass": {"ms_per_transition": round(statistics.median(runs) * 1000 / CHAIN, 4), "runs": len(runs)},
        "three_pass": {"executions": MOTO_EXECUTIONS, "seconds": round(seconds, 3),
                       "ms_per_execution": round(seconds * 1000 / MOTO_EXECUTIONS, 3),
                       "executions_per_s": round(MOTO_EXECUTIONS / seconds, 1)},
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="states-bench-") as tmp:
        engine = bench_engine(Path(tmp))
    moto = bench_moto()
    per_transition = engine["chain_1000_pass"]["ms_per_transition"]
    task_seconds = engine[f"three_task_x{EXECUTIONS}"]["seconds"]
    report = {
        "benchmark": "states",
        "engine": engine,
        "moto": moto,
        "targets": {"ms_per_transition": TARGET_MS_PER_TRANSITION, "three_task_x1000_seconds": TARGET_THREE_TASK_SECONDS},
        "meets_targets": per_transition <= TARGET_MS_PER_TRANSITION and task_seconds <= TARGET_THREE_TASK_SECONDS,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)},
    }
    if "chain_1000_pass" in moto:
        report["ratio_moto_over_engine"] = {
            "per_transition": round(moto["chain_1000_pass"]["ms_per_transition"] / per_transition, 1),
            "per_three_state_execution_same_definition": round(
                moto["three_pass"]["ms_per_execution"] / engine[f"three_pass_x{EXECUTIONS}"]["ms_per_execution"], 1),
            "per_three_state_execution_vs_engine_tasks": round(
                moto["three_pass"]["ms_per_execution"] / engine[f"three_task_x{EXECUTIONS}"]["ms_per_execution"], 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
