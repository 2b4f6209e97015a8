"""The local Lambda runtime: registry, warm workers, Lambda's error, timeout and log semantics.

The handlers here (tests/lambdas/functions/probes.py) use the standard library only, so workers
start in tens of milliseconds.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from backend.api import ResourceNotFound
from backend.local.lambda_runtime import (
    FunctionConfig, FunctionNotFound, InvalidFunctionConfig, InvalidRequestContent, LambdaRuntime, RequestTooLarge,
    RuntimeClosed, function_name,
)

from .conftest import FUNCTIONS_DIR, pid_gone

ACCOUNT_ARN = "arn:aws:lambda:us-east-1:123456789012:function"


def probe(name: str, handler: str, **kw) -> FunctionConfig:
    return FunctionConfig(name, f"probes.{handler}", FUNCTIONS_DIR, **kw)


@pytest.fixture(scope="module")
def runtime():
    rt = LambdaRuntime([
        probe("echo", "echo"),
        probe("talk", "talk"),
        probe("fail", "fail"),
        probe("notJson", "not_json"),
        probe("leave", "leave"),
        probe("fillStdout", "fill_stdout"),
        probe("sleepy", "sleep", timeout=0.5, max_workers=2),
        probe("single", "sleep", max_workers=1),
        probe("orphaner", "sleep_with_child", timeout=0.5),
        probe("describe", "describe", timeout=2.5, memory_mb=256, environment={"ENDPOINT_NAME": "scones-ep"}),
        FunctionConfig("brokenImport", "broken_import.handler", FUNCTIONS_DIR),
        FunctionConfig("noHandler", "probes.does_not_exist", FUNCTIONS_DIR),
    ], gateway_url="http://127.0.0.1:9")
    yield rt
    pids = rt.worker_pids()
    rt.close()
    assert all(pid_gone(p) for p in pids)


# --- registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", [
    "echo", "echo:$LATEST", "echo:prod", f"{ACCOUNT_ARN}:echo", f"{ACCOUNT_ARN}:echo:$LATEST",
    "arn:aws:lambda:eu-west-1:123456789012:function:echo:7", "123456789012:function:echo",
])
def test_functions_are_found_by_name_or_arn(runtime, ref):
    assert function_name(ref) == "echo"
    assert runtime.function(ref).handler == "probes.echo"
    assert runtime.invoke(ref, {"ref": ref}).payload == {"ref": ref}


@pytest.mark.parametrize("ref, words", [
    ("serializeImageData", f"Function not found: {ACCOUNT_ARN}:serializeImageData. Registered functions: brokenImport"),
    (f"{ACCOUNT_ARN}:nope:$LATEST", f"Function not found: {ACCOUNT_ARN}:nope."),
    ("arn:aws:states:::lambda:invoke", "is not a Lambda function ARN"),
    ("bad name!", "not a valid function name"),
    ("", "not a function name or ARN"),
])
def test_unknown_functions_raise_resource_not_found(runtime, ref, words):
    with pytest.raises(FunctionNotFound) as caught:
        runtime.invoke(ref, {})
    assert words in str(caught.value)
    assert isinstance(caught.value, ResourceNotFound) and caught.value.code == "ResourceNotFoundException"


@pytest.mark.parametrize("kw, words", [
    ({"name": "has space"}, "Function name"),
    ({"handler": "no_dot"}, "module.function"),
    ({"timeout": 0}, "Timeout"),
    ({"memory_mb": 64}, "Memory size"),
    ({"environment": {"N": 1}}, "strings"),
])
def test_invalid_configurations_are_refused(kw, words):
    args = {"name": "ok", "handler": "probes.echo", "code_dir": FUNCTIONS_DIR, **kw}
    with pytest.raises(InvalidFunctionConfig, match=words):
        FunctionConfig(**args)


def test_defaults_are_lambdas(runtime):
    config = FunctionConfig("defaults", "m.f")
    assert (config.timeout, config.memory_mb, config.code_dir.name) == (3.0, 128, "lambdas")
    assert runtime.arn("echo") == f"{ACCOUNT_ARN}:echo"


# --- invoking -------------------------------------------------------------------------------


def test_invoke_answers_like_lambda(runtime):
    result = runtime.invoke("echo", {"s3_key": "k", "n": [1, 2.5, None]})
    assert result.status_code == 200 and result.function_error is None
    assert result.payload == {"s3_key": "k", "n": [1, 2.5, None]}
    assert result.executed_version == "$LATEST"
    assert uuid.UUID(result.request_id) and result.duration_ms >= 0
    assert result.payload_bytes == len(json.dumps(result.payload))


def test_payload_as_json_bytes_and_its_limits(runtime):
    assert runtime.invoke("echo", b'{"raw": true}').payload == {"raw": True}
    assert runtime.invoke("echo", b"").payload == {}
    assert runtime.invoke("echo", "just a string").payload == "just a string"
    with pytest.raises(InvalidRequestContent, match="Could not parse request body into json"):
        runtime.invoke("echo", b"{nope")
    with pytest.raises(RequestTooLarge, match="Request must be smaller than 6291456 bytes"):
        runtime.invoke("echo", {"x": "a" * 6_300_000})


def test_workers_stay_warm(runtime):
    first = runtime.invoke("describe", {}).payload["pid"]
    assert all(runtime.invoke("describe", {}).payload["pid"] == first for _ in range(5))
    assert first in runtime.worker_pids("describe")


def test_the_handler_gets_a_lambda_context(runtime):
    result = runtime.invoke(f"{ACCOUNT_ARN}:describe:$LATEST", {})
    context = result.payload["context"]
    assert context["aws_request_id"] == result.request_id
    assert context["function_name"] == "describe" and context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == f"{ACCOUNT_ARN}:describe:$LATEST"
    assert context["memory_limit_in_mb"] == "256"
    assert context["log_group_name"] == "/aws/lambda/describe"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", context["log_stream_name"])
    assert 1500 < context["remaining_ms"] <= 2500


def test_workers_get_their_own_environment_and_never_real_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALLOOKINGKEY00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "real-looking-secret")
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("SOME_DEVELOPER_VARIABLE", "leaks?")
    names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
             "SOME_DEVELOPER_VARIABLE", "ENDPOINT_NAME", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
             "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
             "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME", "AWS_CONFIG_FILE", "LAMBDA_TASK_ROOT"]
    config = probe("describeEnv", "describe", environment={"ENDPOINT_NAME": "ep", "AWS_ACCESS_KEY_ID": "sneaky"})
    with LambdaRuntime([config], gateway_url="http://127.0.0.1:4566", region="eu-west-1") as rt:
        found = rt.invoke("describeEnv", {"env": names}).payload
    env = found["env"]
    assert env["AWS_ACCESS_KEY_ID"] == "ASIALOCALSCONESFAKE0"
    assert "fake" in env["AWS_SECRET_ACCESS_KEY"] and "fake" in env["AWS_SESSION_TOKEN"]
    assert env["AWS_PROFILE"] is None and env["SOME_DEVELOPER_VARIABLE"] is None
    assert env["ENDPOINT_NAME"] == "ep"
    assert env["AWS_ENDPOINT_URL_S3"] == env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == "http://127.0.0.1:4566"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert (env["AWS_DEFAULT_REGION"], env["AWS_LAMBDA_FUNCTION_NAME"]) == ("eu-west-1", "describeEnv")
    assert env["LAMBDA_TASK_ROOT"] == str(FUNCTIONS_DIR)
    assert found["sys_path_0"] == str(FUNCTIONS_DIR)
    assert found["project_importable"] is False


# --- errors ---------------------------------------------------------------------------------


def test_an_exception_becomes_lambdas_error_object(runtime):
    result = runtime.invoke("fail", {"what": "a Tuesday"})
    assert result.status_code == 200 and result.function_error == "Unhandled"
    error = result.payload
    assert set(error) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert (error["errorType"], error["errorMessage"]) == ("CustomFailure", "it broke on a Tuesday")
    assert error["requestId"] == result.request_id
    assert result.error_type == "CustomFailure"
    assert len(error["stackTrace"]) == 1 and 'probes.py", line' in error["stackTrace"][0]
    assert "in fail\n    raise CustomFailure" in error["stackTrace"][0]
    assert "[ERROR] CustomFailure: it broke on a Tuesday\nTraceback (most recent call last):" in result.log_result
    assert runtime.invoke("fail", {}).payload["errorMessage"] == "it broke on purpose"  # the worker lives on


@pytest.mark.parametrize("function, error_type, words", [
    ("notJson", "Runtime.MarshalError", "Unable to marshal response: Object of type object is not JSON serializable"),
    ("brokenImport", "Runtime.ImportModuleError",
     "Unable to import module 'broken_import': No module named 'a_module_that_does_not_exist'"),
    ("noHandler", "Runtime.HandlerNotFound", "Handler 'does_not_exist' missing on module 'probes'"),
])
def test_runtime_errors_have_lambdas_names(runtime, function, error_type, words):
    result = runtime.invoke(function, {})
    assert result.function_error == "Unhandled"
    assert result.error_type == error_type
    assert words in result.payload["errorMessage"]
    assert result.payload["requestId"] == result.request_id


def test_a_worker_that_exits_reports_runtime_exit_error_and_is_replaced(runtime):
    result = runtime.invoke("leave", {})
    assert result.error_type == "Runtime.ExitError"
    assert result.payload["errorMessage"] == f"RequestId: {result.request_id} Error: Runtime exited with error: exit status 3"
    assert runtime.worker_pids("leave") == []
    assert runtime.invoke("leave", {}).error_type == "Runtime.ExitError"  # a fresh worker ran it again


def test_writes_to_file_descriptor_1_do_not_break_the_protocol(runtime):
    assert runtime.invoke("fillStdout", {}).payload == "still fine"
    assert runtime.invoke("fillStdout", {}).payload == "still fine"


# --- timeouts -------------------------------------------------------------------------------


def test_a_timeout_kills_the_worker_and_reports_like_lambda(runtime):
    runtime.warm("sleepy")
    before = runtime.worker_pids("sleepy")
    started = time.monotonic()
    result = runtime.invoke("sleepy", {"seconds": 30})
    assert time.monotonic() - started < 15  # not the 30 s it asked for (its timeout is 0.5 s)
    assert result.function_error == "Unhandled" and result.timed_out
    assert "errorType" not in result.payload
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT[\d:.]+Z {result.request_id} Task timed out after 0\.50 seconds",
                        result.payload["errorMessage"])
    assert result.duration_ms == 500.0
    assert "sleeping 30 s\n" in result.log_result  # lines printed before the timeout are kept
    assert "Status: timeout" in result.log_result
    assert before and all(pid_gone(p) and p not in runtime.worker_pids("sleepy") for p in before)
    again = runtime.invoke("sleepy", {"seconds": 0})
    assert again.function_error is None and again.payload["pid"] not in before


def test_a_timeout_also_ends_what_the_handler_started(runtime):
    result = runtime.invoke("orphaner", {})
    assert result.timed_out
    child = int(re.search(r"child pid (\d+)", result.log_result).group(1))
    deadline = time.monotonic() + 3
    while not pid_gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_gone(child)


# --- logs -----------------------------------------------------------------------------------


def test_logs_are_captured_per_invocation(runtime):
    first = runtime.invoke("talk", {"n": 1})
    second = runtime.invoke("talk", {"n": 2})
    rid = second.request_id
    lines = second.log_result.splitlines()
    assert lines[0] == f"START RequestId: {rid} Version: $LATEST"
    assert "hello from print 2" in lines and "to stderr" in lines
    assert re.fullmatch(rf"\[WARNING\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{rid}\ta warning 2", lines[3])
    assert "an info line" not in second.log_result  # the root logger's level is WARNING, as on Lambda
    assert lines[-2] == f"END RequestId: {rid}"
    assert re.fullmatch(rf"REPORT RequestId: {rid}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\t"
                        r"Memory Size: 128 MB\tMax Memory Used: \d+ MB", lines[-1])
    assert "hello from print 1" in first.log_result and "hello from print 1" not in second.log_result
    assert "probes imported" in first.log_result and "Init Duration" in first.log_result
    assert "probes imported" not in second.log_result and "Init Duration" not in second.log_result
    assert base64.b64decode(second.log_tail_base64()).decode() == second.log_result


# --- concurrency and lifetime ---------------------------------------------------------------


def run_together(runtime, function, payloads):
    results = [None] * len(payloads)

    def one(i):
        results[i] = runtime.invoke(function, payloads[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(payloads))]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results, time.monotonic() - started


def test_concurrent_invocations_run_in_separate_warm_workers(runtime):
    runtime.warm("sleepy", 2)
    results, elapsed = run_together(runtime, "sleepy", [{"seconds": 0.3}, {"seconds": 0.3}])
    assert [r.payload["slept"] for r in results] == [0.3, 0.3]
    assert len({r.payload["pid"] for r in results}) == 2
    # at the same time: each began before the other ended (a bound on the wall time flaked on a loaded CI)
    assert max(r.payload["began"] for r in results) < min(r.payload["ended"] for r in results)


def test_a_cold_function_shares_its_first_environment_then_scales_as_lambda_does():
    """Five invocations of a cold function started five environments (each a few hundred ms of imports on two
    cores, for a millisecond of work): they share the first one now. Once it has served, concurrency starts
    more at once, as Lambda does."""
    with LambdaRuntime([probe("f", "sleep", max_workers=4)]) as rt:
        results, _ = run_together(rt, "f", [{"seconds": 0.01}] * 5)
        assert [r.function_error for r in results] == [None] * 5
        assert len({r.payload["pid"] for r in results}) == 1 and len(rt.worker_pids("f")) == 1
        # warm now: slow invocations side by side each get an environment of their own, without waiting
        results, _ = run_together(rt, "f", [{"seconds": 0.4}] * 3)
        assert len({r.payload["pid"] for r in results}) == 3
        assert max(r.payload["began"] for r in results) < min(r.payload["ended"] for r in results)


def test_a_cold_function_whose_first_start_fails_does_not_hold_up_the_others():
    with LambdaRuntime([FunctionConfig("b", "broken_import.handler", FUNCTIONS_DIR, max_workers=3)]) as rt:
        results, _ = run_together(rt, "b", [None] * 3)
        assert all(r.function_error == "Unhandled" for r in results)
        assert all(r.payload["errorType"].startswith("Runtime.") for r in results), [r.payload for r in results]


def test_prewarm_starts_cold_functions_side_by_side_and_an_invocation_takes_that_start():
    with LambdaRuntime([probe("a", "echo"), probe("b", "echo")]) as rt:
        rt.prewarm(["a", "b", "not-registered"])  # an unknown name is no error: nothing to start
        rt.prewarm(["a"])  # already starting: not a second one
        first = rt.invoke("a", {"x": 1})
        assert first.payload == {"x": 1}
        assert len(rt.worker_pids("a")) == 1
        deadline = time.monotonic() + 10
        while len(rt.worker_pids("b")) != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(rt.worker_pids("b")) == 1  # started without being invoked
        assert rt.invoke("b", {"y": 2}).payload == {"y": 2} and len(rt.worker_pids("b")) == 1
        assert "Init Duration" in first.log_result  # the environment's init is still reported on its first invocation


def worker_children() -> list[int]:
    """This process's children that are Lambda workers."""
    import os

    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid() \
                    and b"_worker_main" in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return out


def test_close_right_after_a_prewarm_leaves_no_worker_starting():
    """A background start is not a worker yet: close() returned while its process still imported (review)."""
    before = set(worker_children())
    with LambdaRuntime([probe("a", "echo"), probe("b", "echo")]) as rt:
        rt.prewarm(["a", "b"])
    assert set(worker_children()) - before == set()


def test_no_thread_for_a_prewarm_leaves_the_function_usable(monkeypatch):
    """A start counted before its thread failed to start left every invocation waiting for it (review)."""
    with LambdaRuntime([probe("a", "echo")]) as rt:
        real_start = threading.Thread.start

        def refuse(self):
            if self.name.startswith("prewarm-"):
                raise RuntimeError("can't start new thread")
            return real_start(self)

        monkeypatch.setattr(threading.Thread, "start", refuse)
        rt.prewarm(["a"])
        monkeypatch.setattr(threading.Thread, "start", real_start)
        results, _ = run_together(rt, "a", [{"n": 1}, {"n": 2}])
        assert [r.payload for r in results] == [{"n": 1}, {"n": 2}]


def test_invocations_queue_at_the_worker_cap(runtime):
    results, elapsed = run_together(runtime, "single", [{"seconds": 0.25}, {"seconds": 0.25}])
    assert [r.function_error for r in results] == [None, None]
    assert len({r.payload["pid"] for r in results}) == 1 and elapsed >= 0.5


def test_register_replaces_a_function_and_retires_its_workers():
    with LambdaRuntime([probe("f", "describe", environment={"ENDPOINT_NAME": "old"})]) as rt:
        old = rt.invoke("f", {"env": ["ENDPOINT_NAME"]}).payload
        rt.register(probe("f", "describe", environment={"ENDPOINT_NAME": "new"}))
        new = rt.invoke("f", {"env": ["ENDPOINT_NAME"]}).payload
        assert (old["env"]["ENDPOINT_NAME"], new["env"]["ENDPOINT_NAME"]) == ("old", "new")
        assert pid_gone(old["pid"]) and new["pid"] != old["pid"]


def test_close_stops_every_worker_even_busy_ones():
    rt = LambdaRuntime([probe("idle", "echo"), probe("busy", "sleep", timeout=20)])
    rt.warm("idle", 2)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", rt.invoke("busy", {"seconds": 15})))
    thread.start()
    deadline = time.monotonic() + 5
    while not rt.worker_pids("busy") and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    pids = rt.worker_pids()
    assert len(pids) == 3
    started = time.monotonic()
    rt.close()
    assert time.monotonic() - started < 10  # not the 15 s the busy one sleeps
    thread.join(5)
    assert all(pid_gone(p) for p in pids)
    assert box["result"].error_type == "Runtime.ExitError"
    with pytest.raises(RuntimeClosed):
        rt.invoke("idle", {})


def test_replacing_a_function_lets_invocations_in_flight_finish():
    with LambdaRuntime([probe("f", "sleep")]) as rt:
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("result", rt.invoke("f", {"seconds": 0.4})))
        thread.start()
        deadline = time.monotonic() + 5
        while not rt.worker_pids("f") and time.monotonic() < deadline:
            time.sleep(0.02)
        old_pid = rt.worker_pids("f")[0]
        time.sleep(0.1)
        rt.register(probe("f", "echo"))
        assert rt.invoke("f", {"new": True}).payload == {"new": True}
        thread.join(5)
        assert box["result"].function_error is None and box["result"].payload["pid"] == old_pid
        assert pid_gone(old_pid)


def test_a_missing_code_folder_is_refused(tmp_path):
    with pytest.raises(InvalidFunctionConfig, match="does not exist"):
        FunctionConfig("f", "m.f", tmp_path / "nowhere")
