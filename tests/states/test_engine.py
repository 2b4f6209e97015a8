"""The engine's API: start/describe/list/stop/history/wait, names and inputs, persistence,
lost runners, batching of writes, timeouts and concurrency."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from backend.api import ResourceInUse, ResourceNotFound, ValidationError
from backend.local.db import Database
from backend.local.states import (
    ExecutionAlreadyExists,
    ExecutionDoesNotExist,
    InvalidExecutionInput,
    InvalidName,
    StatesEngine,
    TaskContext,
    TaskError,
)
from backend.local.states import store

from .support import INVOKE, lambda_resolver

PASS = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}
LONG_WAIT = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}
REPO = Path(__file__).resolve().parents[2]


class Gate:
    """A resolver whose tasks block until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.contexts: list[TaskContext] = []

    def __call__(self, resource, parameters, ctx):
        self.contexts.append(ctx)
        self.entered.set()
        self.opened.wait(10)
        return {"got": parameters}


def task_machine(**task_fields):
    return {"StartAt": "T", "States": {"T": dict({"Type": "Task", "Resource": INVOKE, "End": True}, **task_fields)}}


# --- start, describe, wait -------------------------------------------------------------------------


def test_start_returns_at_once_and_the_execution_finishes_on_a_worker(db):
    gate = Gate()
    with StatesEngine(db, gate) as engine:
        arn = engine.start_execution(task_machine(Parameters={"x.$": "$.x"}), {"x": 1}, name="first",
                                     state_machine_name="scones")
        assert arn == "arn:aws:states:us-east-1:123456789012:execution:scones:first"
        assert gate.entered.wait(5)
        running = engine.describe_execution(arn)
        assert (running.status, running.output, running.stop_date) == ("RUNNING", None, None)
        assert engine.wait(arn, timeout=0.05).status == "RUNNING"
        gate.opened.set()
        done = engine.wait(arn, timeout=5)
    assert done.status == "SUCCEEDED"
    assert done.output_value == {"got": {"x": 1}}
    assert done.input_value == {"x": 1}
    assert isinstance(done.start_date, datetime) and done.start_date.tzinfo is not None
    assert done.stop_date >= done.start_date


def test_default_name_is_a_uuid(engine):
    record = engine.run_execution(PASS)
    assert len(record.name) == 36 and record.name.count("-") == 4
    assert record.arn.endswith(f":execution:local:{record.name}")


def test_duplicate_name_is_refused(engine):
    engine.run_execution(PASS, {"a": 1}, name="once")
    with pytest.raises(ExecutionAlreadyExists) as info:
        engine.run_execution(PASS, {"a": 1}, name="once")
    assert isinstance(info.value, ResourceInUse)
    with pytest.raises(ExecutionAlreadyExists):
        engine.start_execution(PASS, {"a": 1}, name="once")
    # the same name under another state machine is another execution
    assert engine.run_execution(PASS, {"a": 1}, name="once", state_machine_name="other").status == "SUCCEEDED"


def test_same_name_and_input_while_running_is_idempotent(db):
    gate = Gate()
    with StatesEngine(db, gate) as engine:
        first = engine.start_execution(task_machine(), {"a": 1}, name="dup")
        assert engine.start_execution(task_machine(), {"a": 1}, name="dup") == first
        with pytest.raises(ExecutionAlreadyExists):
            engine.start_execution(task_machine(), {"a": 2}, name="dup")
        gate.opened.set()
        assert engine.wait(first, 5).status == "SUCCEEDED"
    assert len(gate.contexts) == 1


@pytest.mark.parametrize("name", ["", "a" * 81, "has space", "a/b", "star*", "br[a]ce", "col:on", "tab\tname"])
def test_invalid_names(engine, name):
    with pytest.raises(InvalidName):
        engine.start_execution(PASS, name=name)


def test_input_forms(engine):
    assert engine.run_execution(PASS, None).output_value == {}
    assert engine.run_execution(PASS, '{"text": true}').output_value == {"text": True}
    assert engine.run_execution(PASS, {"dict": [1]}).output_value == {"dict": [1]}
    assert engine.run_execution(PASS, "[1, 2]").input == "[1, 2]"
    for bad in ("{not json", object(), '{"x": NaN}', {"x": float("inf")}):
        with pytest.raises(InvalidExecutionInput):
            engine.start_execution(PASS, bad)
    with pytest.raises(InvalidExecutionInput) as info:
        engine.start_execution(PASS, {"big": "x" * (256 * 1024)})
    assert isinstance(info.value, ValidationError) and "262,144 bytes" in str(info.value)


def test_unknown_execution(engine):
    arn = "arn:aws:states:us-east-1:123456789012:execution:local:nope"
    for call in (engine.describe_execution, engine.get_execution_history, engine.stop_execution):
        with pytest.raises(ExecutionDoesNotExist) as info:
            call(arn)
        assert isinstance(info.value, ResourceNotFound)


# --- list ------------------------------------------------------------------------------------------


def test_list_filters_and_order(engine, clock):
    engine.run_execution(PASS, name="a1", state_machine_name="alpha")
    clock.advance(1)
    engine.run_execution({"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E"}}}, name="a2",
                         state_machine_name="alpha")
    clock.advance(1)
    engine.run_execution(PASS, name="b1", state_machine_name="beta")
    assert [r.name for r in engine.list_executions()] == ["b1", "a2", "a1"]
    assert [r.name for r in engine.list_executions("alpha")] == ["a2", "a1"]
    assert [r.name for r in engine.list_executions(status="FAILED")] == ["a2"]
    assert [r.name for r in engine.list_executions("beta", "FAILED")] == []
    # several machines, and only the newest few read (a page of 10,000 executions reads its 500)
    assert [r.name for r in engine.list_executions(state_machine_names=["alpha", "gamma"])] == ["a2", "a1"]
    assert [r.name for r in engine.list_executions(limit=2)] == ["b1", "a2"]
    assert [r.name for r in engine.list_executions(state_machine_names=["alpha"], limit=1)] == ["a2"]
    assert engine.list_executions(state_machine_names=[]) == [] and engine.list_executions(limit=0) == []
    assert [r.name for r in engine.list_executions("beta", state_machine_names=["alpha", "beta"])] == ["b1"]
    assert engine.list_executions("beta", state_machine_names=["alpha"]) == []  # in both, or nothing
    assert engine.count_executions() == {("SUCCEEDED", None): 2, ("FAILED", "E"): 1}
    assert engine.count_executions(["alpha"]) == {("SUCCEEDED", None): 1, ("FAILED", "E"): 1}
    assert engine.count_executions([]) == {}
    assert engine.arns_named("a2") == [engine.list_executions("alpha", "FAILED")[0].arn]
    assert engine.arns_named("nobody") == []
    with pytest.raises(ValidationError):
        engine.list_executions(status="DONE")


# --- stop, timeouts ----------------------------------------------------------------------------------


def test_stop_wakes_a_wait_and_ends_aborted(db):
    with StatesEngine(db) as engine:  # real clock: the Wait really waits an hour
        arn = engine.start_execution(LONG_WAIT, name="sleeper")
        _until(lambda: any(e["type"] == "WaitStateEntered" for e in engine.get_execution_history(arn)))
        began = time.monotonic()
        stopped = engine.stop_execution(arn, error="Operator.Stop", cause="cleanup")
        assert (stopped.status, stopped.error, stopped.cause) == ("ABORTED", "Operator.Stop", "cleanup")
        engine.wait(arn, 60)
        assert time.monotonic() - began < 30  # not the Wait's hour
        history = engine.get_execution_history(arn)
        assert history[-1]["type"] == "ExecutionAborted"
        assert history[-1]["executionAbortedEventDetails"] == {"error": "Operator.Stop", "cause": "cleanup"}
        assert "WaitStateExited" not in [e["type"] for e in history]
        # stopping a finished execution changes nothing
        assert engine.stop_execution(arn).status == "ABORTED"
        done = engine.run_execution(PASS, name="finished")
        assert engine.stop_execution(done.arn).status == "SUCCEEDED"


class FullDisk:
    """store.close_execution failing as on a full disk for `engine`'s writes until `free()` (after
    `delay` seconds in the write, if given); counts the tries. Other engines write normally."""

    def __init__(self, monkeypatch, engine: StatesEngine, delay: float = 0.0):
        self.real = store.close_execution
        self.engine = engine
        self.delay = delay
        self.tries = 0
        self.full = True
        monkeypatch.setattr(store, "close_execution", self)

    def __call__(self, conn, *args, **kwargs):
        if self.full and conn is self.engine._writer:
            self.tries += 1
            time.sleep(self.delay)
            raise sqlite3.OperationalError("database or disk is full")
        return self.real(conn, *args, **kwargs)

    def free(self) -> None:
        self.full = False


def _written(db: Database, arn: str) -> tuple[str, list[str], list[int]]:
    """What another process reads: the status row, and the history's event types and ids."""
    with StatesEngine(Database(db.path)) as reader:
        history = reader.get_execution_history(arn)
        return reader.describe_execution(arn).status, [e["type"] for e in history], [e["id"] for e in history]


def test_a_stop_whose_write_fails_stops_the_execution_and_is_written_once_the_disk_has_room(db, monkeypatch):
    with StatesEngine(db, flush_interval=0.02) as engine:  # real clock: the Wait really waits an hour
        arn = engine.start_execution(LONG_WAIT, name="stop-on-a-full-disk")
        _until(lambda: any(e["type"] == "WaitStateEntered" for e in engine.get_execution_history(arn)))
        disk = FullDisk(monkeypatch, engine)
        with pytest.raises(sqlite3.OperationalError):
            engine.stop_execution(arn)  # the caller hears that the stop could not be written
        _until(lambda: engine._active[arn].run.done.is_set())  # its Wait woke and its thread ended
        tries = disk.tries
        _until(lambda: disk.tries > tries + 2)  # the flusher keeps trying
        assert engine.describe_execution(arn).status == "RUNNING"  # not written yet: never a guess
        assert engine.get_execution_history(arn)[-1]["type"] == "ExecutionAborted"  # kept, not lost
        disk.free()
        assert engine.wait(arn, 10).status == "ABORTED"
        assert arn not in engine._active
    assert _written(db, arn) == ("ABORTED", ["ExecutionStarted", "WaitStateEntered", "ExecutionAborted"], [1, 2, 3])


def test_an_end_whose_write_fails_is_written_by_the_flusher_with_all_its_events(db, monkeypatch):
    gate = Gate()
    with StatesEngine(db, gate, flush_interval=0.02) as engine:
        arn = engine.start_execution(task_machine(), {"k": 1}, name="end-on-a-full-disk")
        _until(lambda: gate.contexts)
        disk = FullDisk(monkeypatch, engine)
        gate.opened.set()
        _until(lambda: disk.tries >= 3)  # the end failed, and the flusher tried it again
        assert engine.wait(arn, timeout=0.05).status == "RUNNING"
        assert engine.list_executions(status="RUNNING")[0].arn == arn
        assert _written(db, arn)[0] == "RUNNING"  # other processes: RUNNING, its runner is alive
        disk.free()
        done = engine.wait(arn, 10)
        assert (done.status, done.output_value) == ("SUCCEEDED", {"got": {"k": 1}})
        _until(lambda: arn not in engine._active)
    status, types, ids = _written(db, arn)
    assert status == "SUCCEEDED"
    assert types == ["ExecutionStarted", "TaskStateEntered", "TaskScheduled", "TaskStarted", "TaskSucceeded",
                     "TaskStateExited", "ExecutionSucceeded"]
    assert ids == list(range(1, 8))


def test_waiting_on_an_end_that_stays_unwritten_gives_up_with_the_reason(db, monkeypatch):
    """'workflow run' on a full disk waited for ever (each execution its own 300 s, then RUNNING): a waiter
    now hears after a grace why its execution could not be recorded, and the flusher still writes it later."""
    from backend.local.states import engine as engine_module
    from backend.local.states.errors import ExecutionNotRecorded

    monkeypatch.setattr(engine_module, "UNRECORDED_GRACE_SECONDS", 0.3)
    gate = Gate()
    with StatesEngine(db, gate, flush_interval=0.02) as engine:
        arn = engine.start_execution(task_machine(), {"k": 1}, name="never-recorded")
        _until(lambda: gate.contexts)
        disk = FullDisk(monkeypatch, engine)
        gate.opened.set()
        started = time.monotonic()
        with pytest.raises(ExecutionNotRecorded, match=r"never-recorded ended SUCCEEDED but could not be recorded "
                                                       r"for 0 s \(database or disk is full\)"):
            engine.wait(arn)  # no timeout: it would have blocked for ever
        assert time.monotonic() - started < 60
        disk.free()
        _until(lambda: arn not in engine._active)
    assert _written(db, arn)[0] == "SUCCEEDED"


def test_an_unwritten_end_yields_to_a_stop_from_another_process(db, monkeypatch):
    gate = Gate()
    with StatesEngine(db, gate, flush_interval=0.02) as engine:
        arn = engine.start_execution(task_machine(), {"k": 1}, name="end-overruled")
        _until(lambda: gate.contexts)
        engine.flush()
        disk = FullDisk(monkeypatch, engine)
        gate.opened.set()
        _until(lambda: disk.tries >= 2)
        with StatesEngine(Database(db.path)) as other:  # another process's stop writes ABORTED first
            assert other.stop_execution(arn, cause="from elsewhere").status == "ABORTED"
        disk.free()  # the retry now finds the execution ended elsewhere, and drops its own end
        assert engine.wait(arn, 10).status == "ABORTED"
        _until(lambda: arn not in engine._active)
    status, types, _ = _written(db, arn)
    assert status == "ABORTED" and types[-1] == "ExecutionAborted" and "ExecutionSucceeded" not in types


def test_a_stop_written_while_the_runner_ends_is_kept_until_written(db, monkeypatch):
    # The stop's write is under way (and fails) while the runner thread notices the stop and ends:
    # the end must stay with the engine, not leave with the runner.
    from backend.local.states import engine as engine_module

    # Not about wait()'s grace for an unwritten end (the test above is): on a loaded machine the steps
    # between the failed write and the free disk took longer than its 5 s, and the waiter gave up.
    monkeypatch.setattr(engine_module, "UNRECORDED_GRACE_SECONDS", 120.0)
    # A loop whose task takes 2 ms: with a bare Pass loop the events it wrote while the flusher was held up
    # by other threads (a loaded CI) grew without bound, and writing them after the disk was freed took
    # longer than the wait below (the flusher was seen 10 s into one insert of them).
    loop = {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": INVOKE, "Next": "B"},
                                       "B": {"Type": "Pass", "Next": "A"}}}

    def task(resource, parameters, ctx):
        time.sleep(0.002)
        return {}

    with StatesEngine(db, task, flush_interval=0.02, history_limit=10**9) as engine:  # the loop never runs out
        arn = engine.start_execution(loop, name="stop-while-ending")
        _until(lambda: len(engine.get_execution_history(arn)) > 20)
        disk = FullDisk(monkeypatch, engine, delay=0.2)
        with pytest.raises(sqlite3.OperationalError):
            engine.stop_execution(arn)
        _until(lambda: engine._active[arn].run.done.is_set())
        assert arn in engine._active and arn in engine._unwritten
        assert engine.wait(arn, timeout=0.05).status == "RUNNING"
        disk.free()
        assert engine.wait(arn, 10).status == "ABORTED"
    status, types, ids = _written(db, arn)
    assert status == "ABORTED" and types[-1] == "ExecutionAborted" and ids == list(range(1, len(ids) + 1))


def test_a_stop_of_an_execution_whose_end_is_unwritten_writes_that_end(db, monkeypatch):
    gate = Gate()
    with StatesEngine(db, gate, flush_interval=3600) as engine:  # no retry by the flusher here
        arn = engine.start_execution(task_machine(), {"k": 1}, name="ended-then-stopped")
        _until(lambda: gate.contexts)
        disk = FullDisk(monkeypatch, engine)
        gate.opened.set()
        _until(lambda: disk.tries >= 1 and engine._active[arn].run.done.is_set())
        with pytest.raises(sqlite3.OperationalError):
            engine.stop_execution(arn)  # the disk is still full: said, and nothing else written
        disk.free()
        assert engine.stop_execution(arn).status == "SUCCEEDED"  # it had ended: that end stands
        assert engine.wait(arn, 1).status == "SUCCEEDED"
    status, types, _ = _written(db, arn)
    assert status == "SUCCEEDED" and types[-2:] == ["TaskStateExited", "ExecutionSucceeded"]


def test_a_stop_just_after_an_end_that_failed_to_write_still_writes_that_end(db, monkeypatch):
    from backend.local.states.runtime import Clock

    class SlowCancel(Clock):  # widens the moment between the runner's failed end and its last look
        def call_later(self, seconds, fn):
            cancel = super().call_later(seconds, fn)
            return lambda: (time.sleep(0.5), cancel())

    gate = Gate()
    with StatesEngine(db, gate, clock=SlowCancel(), flush_interval=3600) as engine:
        arn = engine.start_execution({**task_machine(), "TimeoutSeconds": 100}, {"k": 1}, name="stop-in-the-gap")
        _until(lambda: gate.contexts)
        disk = FullDisk(monkeypatch, engine)
        gate.opened.set()
        _until(lambda: arn in engine._unwritten)
        with pytest.raises(sqlite3.OperationalError):
            engine.stop_execution(arn)  # the stop finds the unwritten end, and says the disk is full
        disk.free()
        assert engine.stop_execution(arn).status == "SUCCEEDED"
    assert _written(db, arn)[0] == "SUCCEEDED"


def test_a_time_out_whose_write_fails_is_written_once_the_disk_has_room(db, monkeypatch):
    machine = {**LONG_WAIT, "TimeoutSeconds": 1}
    errors_in_threads = []
    monkeypatch.setattr(threading, "excepthook", errors_in_threads.append)
    with StatesEngine(db, flush_interval=0.02) as engine:
        arn = engine.start_execution(machine, name="time-out-on-a-full-disk")
        _until(lambda: any(e["type"] == "WaitStateEntered" for e in engine.get_execution_history(arn)))
        disk = FullDisk(monkeypatch, engine)
        _until(lambda: disk.tries >= 2)  # the timer's write failed, and the flusher tried again
        assert engine.describe_execution(arn).status == "RUNNING"
        disk.free()
        assert engine.wait(arn, 10).status == "TIMED_OUT"
    assert errors_in_threads == []  # the timer thread did not die of the full disk
    assert _written(db, arn)[:2] == ("TIMED_OUT", ["ExecutionStarted", "WaitStateEntered", "ExecutionTimedOut"])


def test_an_end_never_written_reads_failed_once_its_runner_is_gone(tmp_path):
    # The disk stays full until the runner process exits: the next reader ends it FAILED, not RUNNING.
    path = tmp_path / "scones.db"
    script = textwrap.dedent(f"""
        import sqlite3, sys
        sys.path.insert(0, {str(REPO)!r})
        from backend.local.db import Database
        from backend.local.states import StatesEngine, store
        def full(*a, **k):
            raise sqlite3.OperationalError("database or disk is full")
        store.close_execution = full
        engine = StatesEngine(Database({str(path)!r}), flush_interval=0.02)
        arn = engine.start_execution({{"StartAt": "A", "States": {{"A": {{"Type": "Pass", "End": True}}}}}}, name="never-written")
        print(engine.wait(arn, timeout=0.5).status, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RUNNING"  # wait says what is written, not what it hoped to write
    with StatesEngine(Database(path)) as reader:
        record = reader.describe_execution("arn:aws:states:us-east-1:123456789012:execution:local:never-written")
        assert record.status == "FAILED" and record.error == "States.Runtime"


def test_stop_from_another_engine_reaches_the_runner(db):
    with StatesEngine(db, flush_interval=0.05) as runner, StatesEngine(Database(db.path)) as other:
        arn = runner.start_execution(LONG_WAIT, name="remote-stop")
        _until(lambda: any(e["type"] == "WaitStateEntered" for e in runner.get_execution_history(arn)))
        runner.flush()
        assert other.stop_execution(arn, cause="from elsewhere").status == "ABORTED"
        _until(lambda: arn not in runner._active)
        history = other.get_execution_history(arn)
        assert [e["type"] for e in history] == ["ExecutionStarted", "WaitStateEntered", "ExecutionAborted"]
        assert runner.describe_execution(arn).status == "ABORTED"


def test_machine_timeout_ends_timed_out(engine):
    definition = {"TimeoutSeconds": 5, "StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}}}
    record = engine.run_execution(definition, name="too-slow")
    assert (record.status, record.error) == ("TIMED_OUT", "States.Timeout")
    history = engine.get_execution_history(record.arn)
    assert history[-1]["type"] == "ExecutionTimedOut"
    assert history[-1]["executionTimedOutEventDetails"]["error"] == "States.Timeout"


def test_machine_timeout_on_the_real_clock(db):
    definition = {"TimeoutSeconds": 1, "StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}
    with StatesEngine(db) as engine:
        began = time.monotonic()
        record = engine.run_execution(definition)
    assert record.status == "TIMED_OUT"
    assert 0.9 < time.monotonic() - began < 60  # not the Wait's 600 s


def test_heartbeats_keep_a_long_task_alive(db):
    def beating(resource, parameters, ctx):
        for _ in range(8):
            time.sleep(0.2)
            ctx.heartbeat()
        return "done"

    with StatesEngine(db, beating) as engine:
        record = engine.run_execution(task_machine(TimeoutSeconds=5, HeartbeatSeconds=1))
    assert (record.status, record.output_value) == ("SUCCEEDED", "done")


def test_task_timeout_cancels_the_task_context(engine):
    seen = {}

    def slow(resource, parameters, ctx):
        seen["ctx"] = ctx
        ctx.cancelled.wait(5)
        return "late"

    engine.resolver = slow
    record = engine.run_execution(task_machine(TimeoutSeconds=3))
    assert record.error == "States.Timeout"
    assert seen["ctx"].cancelled.is_set()


# --- resolvers ---------------------------------------------------------------------------------------


def test_no_resolver_fails_naming_the_resource(db, clock):
    with StatesEngine(db, clock=clock) as engine:
        record = engine.run_execution(task_machine())
    assert record.error == "States.Runtime"
    assert INVOKE in record.cause and "resolver" in record.cause


def test_resolver_sees_its_task_context(db, clock):
    seen = []

    def resolver(resource, parameters, ctx):
        seen.append(ctx)
        if ctx.retry_count == 0:
            raise TaskError("Transient", "try again")
        return parameters

    definition = task_machine(Parameters={"n": 1}, Credentials={"RoleArn": "arn:aws:iam::1:role/r"}, TimeoutSeconds=9,
                              Retry=[{"ErrorEquals": ["Transient"], "IntervalSeconds": 1}])
    with StatesEngine(db, resolver, clock=clock) as engine:
        record = engine.run_execution(definition, name="ctx", state_machine_name="sm")
        scheduled = [e for e in engine.get_execution_history(record.arn) if e["type"] == "TaskScheduled"]
    assert record.output_value == {"n": 1}
    ctx = seen[-1]
    assert (ctx.execution_name, ctx.state_machine_name, ctx.state_name, ctx.resource) == ("ctx", "sm", "T", INVOKE)
    assert ctx.execution_arn == record.arn and ctx.retry_count == 1 and ctx.timeout_seconds == 9
    assert ctx.credentials == {"RoleArn": "arn:aws:iam::1:role/r"}
    assert ctx.context_object["State"]["RetryCount"] == 1
    assert scheduled[0]["taskScheduledEventDetails"]["taskCredentials"] == {"roleArn": "arn:aws:iam::1:role/r"}
    assert scheduled[0]["taskScheduledEventDetails"]["timeoutInSeconds"] == 9


def test_resolver_cannot_change_the_engine_s_values(db, clock):
    def mutating(resource, parameters, ctx):
        parameters["added"] = True
        return parameters

    definition = {"StartAt": "P", "States": {
        "P": {"Type": "Pass", "Result": {"shared": []}, "ResultPath": "$.fixed", "Next": "T"},
        "T": {"Type": "Task", "Resource": INVOKE, "Parameters": {"f.$": "$.fixed"}, "ResultPath": "$.task", "End": True}}}
    with StatesEngine(db, mutating, clock=clock) as engine:
        first = engine.run_execution(definition)
        second = engine.run_execution(definition)
    assert first.output_value == second.output_value == {"fixed": {"shared": []}, "task": {"f": {"shared": []}, "added": True}}


# --- concurrency -------------------------------------------------------------------------------------


def test_parallel_branches_run_at_the_same_time(db):
    barrier = threading.Barrier(3, timeout=5)

    def meet(resource, parameters, ctx):
        barrier.wait()  # only passes when all three branches are inside a task at once
        return parameters["b"]

    branch = lambda b: {"StartAt": f"T{b}", "States": {f"T{b}": {"Type": "Task", "Resource": INVOKE, "Parameters": {"b": b}, "End": True}}}
    definition = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True, "Branches": [branch(1), branch(2), branch(3)]}}}
    with StatesEngine(db, meet) as engine:
        assert engine.run_execution(definition).output_value == [1, 2, 3]


def test_map_respects_max_concurrency(db):
    lock = threading.Lock()
    live = {"now": 0, "max": 0}

    def count(resource, parameters, ctx):
        with lock:
            live["now"] += 1
            live["max"] = max(live["max"], live["now"])
        time.sleep(0.03)
        with lock:
            live["now"] -= 1
        return parameters

    definition = {"StartAt": "M", "States": {"M": {"Type": "Map", "MaxConcurrency": 3, "End": True, "ItemProcessor": {
        "StartAt": "T", "States": {"T": {"Type": "Task", "Resource": INVOKE, "End": True}}}}}}
    with StatesEngine(db, count) as engine:
        record = engine.run_execution(definition, list(range(10)))
    assert record.output_value == list(range(10))
    assert live["max"] == 3


def test_a_failing_branch_stops_its_siblings(db):
    definition = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True, "Branches": [
        {"StartAt": "Long", "States": {"Long": {"Type": "Wait", "Seconds": 3600, "End": True}}},
        {"StartAt": "Boom", "States": {"Boom": {"Type": "Fail", "Error": "Boom"}}}]}}}
    with StatesEngine(db) as engine:
        began = time.monotonic()
        record = engine.run_execution(definition)
    assert record.error == "Boom"
    assert time.monotonic() - began < 60  # not the Wait's hour


# --- history -----------------------------------------------------------------------------------------


def test_history_while_running_and_after(db):
    gate = Gate()
    with StatesEngine(db, gate, flush_interval=60) as engine:  # nothing flushed while it runs
        arn = engine.start_execution(task_machine(), {"a": 1}, name="watch")
        assert gate.entered.wait(5)
        types = [e["type"] for e in engine.get_execution_history(arn)]
        assert types == ["ExecutionStarted", "TaskStateEntered", "TaskScheduled", "TaskStarted"]
        gate.opened.set()
        engine.wait(arn, 5)
        history = engine.get_execution_history(arn)
        newest_first = engine.get_execution_history(arn, reverse_order=True)
    assert [e["id"] for e in newest_first] == [e["id"] for e in reversed(history)]
    started = history[0]
    assert started["previousEventId"] == 0 and isinstance(started["timestamp"], datetime)
    assert started["executionStartedEventDetails"] == {
        "input": '{"a":1}', "inputDetails": {"truncated": False},
        "roleArn": "arn:aws:iam::123456789012:role/scones-local-states"}
    assert set(history[-1]) == {"id", "previousEventId", "type", "timestamp", "executionSucceededEventDetails"}


def _counting_transactions(monkeypatch) -> list[int]:
    from backend.local.states import connections

    commits: list[int] = []
    real = connections.transaction_on

    def counting(conn):
        commits.append(1)
        return real(conn)

    monkeypatch.setattr(connections, "transaction_on", counting)
    return commits


def test_events_are_written_in_batches_not_one_commit_per_event(engine, monkeypatch):
    commits = _counting_transactions(monkeypatch)
    chain = {"StartAt": "S0", "States": {f"S{i}": {"Type": "Pass", "Next": f"S{i + 1}"} for i in range(1000)}}
    chain["States"]["S1000"] = {"Type": "Succeed"}
    record = engine.run_execution(chain)
    assert len(engine.get_execution_history(record.arn)) == 2004
    assert 1 <= len(commits) <= 3


# --- persistence and lost runners --------------------------------------------------------------------


def test_executions_and_history_survive_a_restart(tmp_path, clock):
    path = tmp_path / "scones.db"
    with StatesEngine(Database(path), lambda_resolver, clock=clock) as first:
        record = first.run_execution({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": INVOKE,
                                      "Parameters": {"FunctionName": "echo", "Payload.$": "$"}, "End": True}}}, {"k": "v"}, name="kept")
        history = first.get_execution_history(record.arn)
    with StatesEngine(Database(path), clock=clock) as second:
        assert second.describe_execution(record.arn) == record
        assert second.get_execution_history(record.arn) == history
        assert [r.arn for r in second.list_executions()] == [record.arn]


def test_a_running_execution_whose_runner_was_killed_ends_failed(tmp_path):
    path = tmp_path / "scones.db"
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from backend.local.db import Database
        from backend.local.states import StatesEngine
        engine = StatesEngine(Database({str(path)!r}))
        arn = engine.start_execution(json.loads({json.dumps(json.dumps(LONG_WAIT))}), name="orphan")
        time.sleep(0.3)
        engine.flush()
        print(arn, flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        arn = child.stdout.readline().strip()
        assert arn.endswith(":orphan")
        with StatesEngine(Database(path)) as observer:
            assert observer.describe_execution(arn).status == "RUNNING"  # its runner is alive
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        with StatesEngine(Database(path)) as restarted:
            record = restarted.describe_execution(arn)
            history = restarted.get_execution_history(arn)
    finally:
        if child.poll() is None:
            child.kill()
    assert (record.status, record.error) == ("FAILED", "States.Runtime")
    assert "runner" in record.cause and "lost" in record.cause
    assert [e["type"] for e in history] == ["ExecutionStarted", "WaitStateEntered", "ExecutionFailed"]


def test_a_reused_pid_is_not_mistaken_for_the_runner(db):
    with StatesEngine(db) as engine:
        conn_db = Database(db.path)
        with conn_db.transaction() as conn:
            store.insert_execution(conn, {
                "arn": "arn:aws:states:us-east-1:123456789012:execution:local:ghost", "name": "ghost",
                "state_machine_name": "local", "definition": "{}", "input": "{}", "start_date": time.time(),
                "runner_pid": os.getpid(), "runner_start": "another-boot:42",
            })
        assert engine.recover_lost_executions() == ["arn:aws:states:us-east-1:123456789012:execution:local:ghost"]
        assert engine.describe_execution("arn:aws:states:us-east-1:123456789012:execution:local:ghost").status == "FAILED"
        history = engine.get_execution_history("arn:aws:states:us-east-1:123456789012:execution:local:ghost")
        # No event of its was written: the history still begins with ExecutionStarted.
        assert [(e["id"], e["previousEventId"], e["type"]) for e in history] == [
            (1, 0, "ExecutionStarted"), (2, 1, "ExecutionFailed")]


def test_a_batch_whose_runner_died_before_its_first_flush_has_whole_histories(tmp_path):
    # The dashboard restarted within a second of starting a batch: the rows are written, no event is.
    path = tmp_path / "scones.db"
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from backend.local.db import Database
        from backend.local.states import StatesEngine
        engine = StatesEngine(Database({str(path)!r}), flush_interval=3600)
        arns = engine.start_executions(json.loads({json.dumps(json.dumps(LONG_WAIT))}), [{{"i": i}} for i in range(20)])
        print(json.dumps(arns), flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        arns = json.loads(child.stdout.readline())
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM sf_events").fetchone()[0] == 0  # nothing flushed yet
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        with StatesEngine(Database(path)) as restarted:
            records = [restarted.describe_execution(arn) for arn in arns]
            histories = [restarted.get_execution_history(arn) for arn in arns]
            role = restarted.role_arn
    finally:
        if child.poll() is None:
            child.kill()
    assert {(r.status, r.error) for r in records} == {("FAILED", "States.Runtime")}
    for i, (record, history) in enumerate(zip(records, histories)):
        assert [(e["id"], e["previousEventId"], e["type"]) for e in history] == [
            (1, 0, "ExecutionStarted"), (2, 1, "ExecutionFailed")]
        started = history[0]["executionStartedEventDetails"]
        assert json.loads(started["input"]) == {"i": i} and started["roleArn"] == role
        assert history[0]["timestamp"] == record.start_date
        assert history[1]["executionFailedEventDetails"]["error"] == "States.Runtime"


def test_a_stop_from_elsewhere_before_the_first_flush_keeps_execution_started(db):
    with StatesEngine(db, flush_interval=3600) as runner, StatesEngine(Database(db.path)) as other:
        arn = runner.start_execution(LONG_WAIT, {"k": "v"}, name="early-stop")
        assert other.get_execution_history(arn) == []  # the runner has written no event yet
        assert other.stop_execution(arn, cause="from elsewhere").status == "ABORTED"
        runner.flush()  # the runner sees the stop: its own events are dropped, not added after it
        _until(lambda: arn not in runner._active)
        history = other.get_execution_history(arn)
        assert [(e["id"], e["previousEventId"], e["type"]) for e in history] == [
            (1, 0, "ExecutionStarted"), (2, 1, "ExecutionAborted")]
        assert json.loads(history[0]["executionStartedEventDetails"]["input"]) == {"k": "v"}


def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_busy_flusher_never_mistakes_a_new_run_for_a_duplicate(db):
    # Regression: the flusher once wrote the row of a run that was still checking its name,
    # and the run then took its own row for a duplicate and waited on it forever.
    definition = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "End": True}}}
    outcome = {}

    def many() -> None:
        with StatesEngine(db, flush_interval=0.0001) as engine:
            outcome["statuses"] = {engine.run_execution(definition, {"i": i}).status for i in range(300)}
            arns = [engine.start_execution(definition, {"i": i}) for i in range(100)]
            outcome["started"] = {engine.wait(arn, 10).status for arn in arns}

    worker = threading.Thread(target=many, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "an execution never finished"
    assert outcome == {"statuses": {"SUCCEEDED"}, "started": {"SUCCEEDED"}}


# --- many executions at once: one flush for all, writers queued in the engine ------------------


def test_one_flush_writes_every_running_execution_in_one_transaction(db, monkeypatch):
    gate = Gate()
    machine = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Next": "T"},
                                          "T": {"Type": "Task", "Resource": INVOKE, "End": True}}}
    with StatesEngine(db, gate, flush_interval=3600) as engine:
        arns = engine.start_executions(machine, [{"i": i} for i in range(40)])
        _until(lambda: len(gate.contexts) == 40)
        commits = _counting_transactions(monkeypatch)
        engine.flush()
        assert len(commits) == 1
        with db.connect() as conn:
            written = {arn: [r[0] for r in conn.execute(
                "SELECT type FROM sf_events WHERE execution_arn=? ORDER BY id", (arn,))] for arn in arns}
        assert all(types[-2:] == ["TaskScheduled", "TaskStarted"] for types in written.values()), written
        gate.opened.set()
        assert {engine.wait(arn, 10).status for arn in arns} == {"SUCCEEDED"}


def test_a_flush_that_fails_loses_no_event(db, monkeypatch):
    import sqlite3

    gate = Gate()
    with StatesEngine(db, gate, flush_interval=3600) as engine:
        arn = engine.start_execution(task_machine(), {"k": 1}, name="kept-events")
        _until(lambda: gate.contexts)
        real = store.write_events_of
        calls = []

        def full_disk(conn, batches):
            calls.append(1)
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store, "write_events_of", full_disk)
        engine.flush()  # rolled back: the events are pending again
        monkeypatch.setattr(store, "write_events_of", real)
        with db.connect() as conn:
            assert conn.execute("SELECT COUNT(*) FROM sf_events WHERE execution_arn=?", (arn,)).fetchone()[0] == 0
        assert calls
        gate.opened.set()
        assert engine.wait(arn, 10).status == "SUCCEEDED"
    history = StatesEngine(Database(db.path)).get_execution_history(arn)
    assert [e["type"] for e in history] == ["ExecutionStarted", "TaskStateEntered", "TaskScheduled", "TaskStarted",
                                            "TaskSucceeded", "TaskStateExited", "ExecutionSucceeded"]
    assert [e["id"] for e in history] == list(range(1, 8))


def test_executions_ending_together_never_wait_on_sqlites_lock(db, monkeypatch):
    # Writers of one engine queue on its own lock: with SQLite's busy timeout at zero, any two of
    # them meeting on the database lock would fail with "database is locked".
    real_open = Database._open

    def impatient(self):
        conn = real_open(self)
        conn.execute("PRAGMA busy_timeout=0")
        return conn

    monkeypatch.setattr(Database, "_open", impatient)
    gate = Gate()
    with StatesEngine(Database(db.path), gate, flush_interval=0.001) as engine:
        arns = engine.start_executions(task_machine(), [{"i": i} for i in range(60)])
        _until(lambda: len(gate.contexts) == 60)
        gate.opened.set()
        deadline = time.monotonic() + 20
        records = [engine.wait(arn, max(0.1, deadline - time.monotonic())) for arn in arns]
    assert {r.status for r in records} == {"SUCCEEDED"}
    with StatesEngine(Database(db.path)) as reader:
        assert {reader.describe_execution(arn).status for arn in arns} == {"SUCCEEDED"}
        history = reader.get_execution_history(arns[0])
        assert [e["type"] for e in history][-2:] == ["TaskStateExited", "ExecutionSucceeded"]
        assert [e["id"] for e in history] == list(range(1, len(history) + 1))


def test_a_busy_engine_keeps_a_stop_made_elsewhere(db):
    gate = Gate()
    with StatesEngine(db, gate, flush_interval=0.05) as runner, StatesEngine(Database(db.path)) as other:
        arns = runner.start_executions(task_machine(), [{"i": i} for i in range(10)])
        _until(lambda: len(gate.contexts) == 10)
        runner.flush()
        assert other.stop_execution(arns[3], cause="from elsewhere").status == "ABORTED"
        gate.opened.set()
        statuses = [runner.wait(arn, 10).status for arn in arns]
        assert statuses[3] == "ABORTED" and statuses.count("SUCCEEDED") == 9
        history = other.get_execution_history(arns[3])
        assert history[-1]["type"] == "ExecutionAborted"
        assert "TaskSucceeded" not in [e["type"] for e in history]


def test_runner_threads_write_through_one_connection(db, monkeypatch):
    # A batch makes a runner thread per execution; none opens a connection of its own to write its end.
    opened = []
    real_open = Database._open

    def counting(self):
        opened.append(threading.current_thread().name)
        return real_open(self)

    gate = Gate()
    with StatesEngine(Database(db.path), gate) as engine:
        arns = engine.start_executions(task_machine(), [{"i": i} for i in range(40)])
        _until(lambda: len(gate.contexts) == 40)
        monkeypatch.setattr(Database, "_open", counting)
        gate.opened.set()
        assert {engine.wait(arn, 10).status for arn in arns} == {"SUCCEEDED"}
    assert len(opened) <= 2, opened


def test_a_failed_commit_is_rolled_back_so_the_connection_stays_usable():
    import sqlite3

    from backend.local.states import connections

    class FullDisk:
        def __init__(self):
            self.statements, self.in_transaction = [], False

        def execute(self, sql):
            self.statements.append(sql)
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            self.in_transaction = sql == "BEGIN IMMEDIATE"

    conn = FullDisk()
    with pytest.raises(sqlite3.OperationalError):
        with connections.transaction_on(conn):
            pass
    assert conn.statements == ["BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"] and not conn.in_transaction


def test_a_row_whose_write_was_rolled_back_is_written_with_the_end(db, monkeypatch):
    import sqlite3

    gate = Gate()
    outcome = {}
    with StatesEngine(db, gate, flush_interval=3600) as engine:
        runner = threading.Thread(target=lambda: outcome.update(
            record=engine.run_execution(task_machine(), {"k": 1}, name="row-rolled-back")), daemon=True)
        runner.start()  # run_execution writes its row with its first events, here at the flush below
        _until(lambda: gate.contexts)
        real = store.write_events

        def full_disk(conn, arn, events):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store, "write_events", full_disk)
        engine.flush()  # the row and the events roll back together
        monkeypatch.setattr(store, "write_events", real)
        gate.opened.set()
        runner.join(10)
        assert outcome["record"].status == "SUCCEEDED"
    with StatesEngine(Database(db.path)) as reader:
        assert reader.describe_execution(outcome["record"].arn).status == "SUCCEEDED"
        assert reader.get_execution_history(outcome["record"].arn)[-1]["type"] == "ExecutionSucceeded"


def _big_pass_runs(engine: StatesEngine, count: int, size: int = 40_000) -> None:
    machine = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    for i in range(count):  # each writes its input four times: started, entered, exited, succeeded
        assert engine.run_execution(machine, {"i": i, "blob": "x" * size}).status == "SUCCEEDED"


def test_executions_never_checkpoint_the_wal_on_their_own_path(db):
    # SQLite's automatic checkpoint would run inside the COMMIT that crosses 1,000 pages (4 MB here):
    # an execution ending then waited for the copy. 40 executions write about 6.4 MB; with the
    # flusher asleep, all of it must still be in the WAL, none copied into the database file.
    with StatesEngine(Database(db.path), flush_interval=3600) as engine:
        _big_pass_runs(engine, 40)
        assert os.path.getsize(f"{db.path}-wal") > 6_000_000
        assert os.path.getsize(db.path) < 1_000_000
        history = engine.get_execution_history(engine.list_executions()[0].arn)
        assert [e["type"] for e in history][-1] == "ExecutionSucceeded"


def test_the_flusher_checkpoints_what_executions_wrote(db):
    with StatesEngine(Database(db.path), flush_interval=0.02) as engine:
        _big_pass_runs(engine, 40)
        _until(lambda: os.path.getsize(db.path) > 6_000_000)  # copied from the WAL by the flusher
        assert len(engine.list_executions()) == 40


def test_a_failed_checkpoint_is_tried_again(db, monkeypatch):
    from backend.local.states import connections

    class FullDisk:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if "wal_checkpoint" in sql:
                raise sqlite3.OperationalError("database or disk is full")
            return self.conn.execute(sql, *args)

    real = connections.connection
    with StatesEngine(Database(db.path), flush_interval=3600) as engine:
        _big_pass_runs(engine, 40)
        monkeypatch.setattr(connections, "connection", lambda d: FullDisk(real(d)))
        engine._checkpoint()
        assert os.path.getsize(db.path) < 1_000_000
        monkeypatch.setattr(connections, "connection", real)
        engine._checkpoint()  # the next round copies what the failed one could not
        assert os.path.getsize(db.path) > 6_000_000


def test_the_wal_stays_bounded_while_executions_keep_writing(db):
    # Writers commit during every checkpoint; unless a pass reaches the WAL's end with them held,
    # SQLite never starts the WAL over and it grows with everything written: about 180 MB here
    # without that pass, 27-49 MB with it (bounded: the same with three times as many batches; this
    # test writes at about 100 MB/s, ten times a workflow batch), 6 MB with SQLite's own checkpoint.
    machine = {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "End": True}}}
    wal, peak, done = f"{db.path}-wal", [0], threading.Event()

    def watch():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], os.path.getsize(wal))
            except FileNotFoundError:  # not created yet, or removed as the last connection closes
                pass
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with StatesEngine(Database(db.path), flush_interval=0.02) as engine:
        for _ in range(8):
            arns = engine.start_executions(machine, [{"i": i, "blob": "x" * 20_000} for i in range(100)])
            assert {engine.wait(arn, 30).status for arn in arns} == {"SUCCEEDED"}
    done.set()
    watcher.join()
    assert os.path.getsize(db.path) > 50_000_000  # about 100 MB of history was written and copied
    assert peak[0] < 90_000_000, peak[0]


@pytest.mark.parametrize("epoch, text", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (1553631253.192, "2019-03-26T20:14:13.192Z"),  # the form of AWS's documentation example
    (1553631253.9994, "2019-03-26T20:14:13.999Z"),  # milliseconds are cut, never rounded into the next second
    (1553631253.0004, "2019-03-26T20:14:13.000Z"),
])
def test_context_times_are_utc_with_milliseconds_and_z(epoch, text):
    from backend.local.states.values import iso_millis

    assert iso_millis(epoch) == text
