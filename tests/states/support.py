"""Shared by the states tests: the case files, a resolver that plays Lambda, and the checks."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from backend.local.states import TaskContext, TaskError, UnknownResource
from backend.local.states.jsonpath import compile_path

CASES_DIR = Path(__file__).parent / "cases"
RUN_CASE_FILES = ("pass", "paths", "choice", "intrinsics", "flow", "tasks")


def load_cases(*files: str) -> list[dict]:
    cases = []
    for stem in files or RUN_CASE_FILES:
        for case in json.loads((CASES_DIR / f"{stem}.json").read_text())["cases"]:
            case["file"] = stem
            cases.append(case)
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def machine_name(case: dict) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", case["name"])[:80]


def has_task(definition: Any) -> bool:
    if isinstance(definition, dict):
        if definition.get("Type") == "Task":
            return True
        return any(has_task(v) for v in definition.values())
    if isinstance(definition, list):
        return any(has_task(v) for v in definition)
    return False


# --- a resolver that plays the Lambda functions the cases call ------------------------------------

INVOKE = "arn:aws:states:::lambda:invoke"


def _flaky(event: dict, ctx: TaskContext) -> Any:
    if ctx.retry_count < event["failures"]:
        raise TaskError(event["error"], f"attempt {ctx.retry_count + 1} failed")
    out = {"attempts": ctx.retry_count + 1}
    if "retry" in event:
        out["seen_retry"] = event["retry"]
    return out


def _alternate(event: dict, ctx: TaskContext) -> Any:
    if ctx.retry_count < event["failures"]:
        raise TaskError("Even" if ctx.retry_count % 2 == 0 else "Odd", "alternating")
    return {"attempts": ctx.retry_count + 1}


def _hang(event: Any, ctx: TaskContext) -> Any:
    ctx.cancelled.wait(10)
    return "late"


def _crash(event: Any, ctx: TaskContext) -> Any:
    raise ValueError("resolver bug")


def _fail(event: dict, ctx: TaskContext) -> Any:
    raise TaskError(event["error"], event.get("cause"))


def _serialize(event: dict, ctx: TaskContext) -> Any:
    return {"statusCode": 200, "body": {"image_data": "aW1n", "s3_bucket": event["s3_bucket"],
                                        "s3_key": event["s3_key"], "inferences": []}}


def _classify(event: dict, ctx: TaskContext) -> Any:
    scores = [0.97, 0.03] if "bike" in event["s3_key"] else [0.6, 0.4]
    return {"statusCode": 200, "body": {**event, "inferences": scores}}


def _filter(event: dict, ctx: TaskContext) -> Any:
    if max(event["inferences"]) >= 0.93:
        return {"statusCode": 200, "body": event}
    raise TaskError("THRESHOLD_CONFIDENCE_NOT_MET", json.dumps({"errorMessage": "below threshold"}))


FUNCTIONS = {
    "echo": lambda event, ctx: event, "fail": _fail, "flaky": _flaky, "alternate": _alternate, "hang": _hang,
    "crash": _crash, "big": lambda event, ctx: "x" * event["bytes"], "serializeImageData": _serialize,
    "classifyImage": _classify, "filterInferences": _filter,
}


def lambda_resolver(resource: str, parameters: Any, ctx: TaskContext) -> Any:
    """lambda:invoke answers Lambda's envelope; a bare function ARN answers the function's result."""
    if resource == INVOKE:
        fn = FUNCTIONS.get(parameters.get("FunctionName"))
        if fn is None:
            raise TaskError("Lambda.ResourceNotFoundException", f"Function not found: {parameters.get('FunctionName')}")
        return {"ExecutedVersion": "$LATEST", "Payload": fn(parameters.get("Payload"), ctx), "StatusCode": 200}
    if resource.startswith("arn:aws:lambda:"):
        return FUNCTIONS[resource.rsplit(":", 1)[1]](parameters, ctx)
    raise UnknownResource(resource, "(the test resolver plays Lambda only)")


# --- checks -----------------------------------------------------------------------------------------


def check_outcome(expect: dict, status: str, output: Any, error: str | None, cause: str | None) -> None:
    assert status == expect["status"], (status, error, cause)
    if "output" in expect:
        assert output == expect["output"]
    if "error" in expect:
        assert error == expect["error"], (error, cause)
    if "cause" in expect:
        assert cause == expect["cause"]
    if "cause_contains" in expect:
        assert cause is not None and expect["cause_contains"] in cause, cause
    for path, pattern in expect.get("match", {}).items():
        value = compile_path(path).get(output)
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        assert re.fullmatch(pattern, text), (path, text, pattern)
