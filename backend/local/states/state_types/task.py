from __future__ import annotations

import json
import threading
import time
from typing import Any

from .. import errors
from ..jsonpath import PathNotFound, compile_path
from ..runtime import FakeClock, Scope, TaskContext
from ..templates import Template
from ..values import is_integer
from .base import ExecState, serialize


def split_resource(resource: str) -> tuple[str, str]:
    """`arn:aws:states:::lambda:invoke` -> ("lambda", "invoke"), as TaskScheduled reports it."""
    if resource.startswith("arn:") and resource.count(":") >= 5:
        parts = resource.split(":")
        if parts[2] == "states" and parts[5:] and parts[5] != "activity":
            service = ":".join(parts[5:])
            if ":" in service:
                head, _, action = service.rpartition(":")
                return head, action
            return service, ""
        if parts[2] == "states" and parts[5:6] == ["activity"]:
            return "activity", ":".join(parts[6:])
        return parts[2], ":".join(parts[5:])
    return "local", resource


def is_legacy_lambda(resource: str) -> bool:
    """`arn:aws:lambda:region:account:function:name`: history shows LambdaFunction... events."""
    return resource.startswith("arn:") and resource.split(":")[2:3] == ["lambda"]


class TaskState(ExecState):
    """Runs its Resource through the engine's resolver."""

    type_name = "Task"

    def __init__(self, name, spec, compiler):
        super().__init__(name, spec, compiler)
        self.resource: str = spec["Resource"]
        self.resource_type, self.resource_name = split_resource(self.resource)
        self.legacy_lambda = is_legacy_lambda(self.resource)
        self.timeout = spec.get("TimeoutSeconds")
        self.timeout_path = compile_path(spec["TimeoutSecondsPath"]) if "TimeoutSecondsPath" in spec else None
        self.heartbeat = spec.get("HeartbeatSeconds")
        self.heartbeat_path = compile_path(spec["HeartbeatSecondsPath"]) if "HeartbeatSecondsPath" in spec else None
        self.credentials = Template(spec["Credentials"], "Credentials") if "Credentials" in spec else None
        self.token = self.resource.endswith(".waitForTaskToken")

    def context(self, scope, entered, retry_count=0):
        build = super().context(scope, entered, retry_count)
        if not self.token:
            return build

        def with_token():
            ctx = build()
            ctx.setdefault("Task", {"Token": f"{scope.run.info.arn}:{self.name}:{entered}:{retry_count}"})
            return ctx

        return with_token

    def attempt(self, scope: Scope, raw: Any, entered: float, retry_count: int) -> Any:
        ctx = self.context(scope, entered, retry_count)
        data = self.select_input(raw)
        params = self.parameters.apply(data, ctx) if self.parameters is not None else data
        params_text = serialize(params, f"input to task '{self.name}'")
        timeout = self._seconds(self.timeout, self.timeout_path, data, "TimeoutSecondsPath")
        heartbeat = self._seconds(self.heartbeat, self.heartbeat_path, data, "HeartbeatSecondsPath")
        credentials = self.credentials.apply(data, ctx) if self.credentials is not None else None
        self._scheduled(scope, params_text, timeout, heartbeat, credentials)
        task_ctx = TaskContext(
            execution_arn=scope.run.info.arn, execution_name=scope.run.info.name,
            state_machine_name=scope.run.info.state_machine_name, state_name=self.name,
            resource=self.resource, retry_count=retry_count, timeout_seconds=timeout,
            heartbeat_seconds=heartbeat, credentials=credentials, context_object=ctx(),
        )
        result = self._invoke(scope, json.loads(params_text), task_ctx)
        return self.finish_result(raw, result, ctx)

    @staticmethod
    def _seconds(fixed, path, data, field) -> float | None:
        if path is None:
            return fixed
        try:
            value = path.get(data)
        except PathNotFound:
            raise errors.StatesFailure(errors.RUNTIME, f"Invalid path '{path.text}' : No results for path ({field})") from None
        if not is_integer(value) or value <= 0:
            raise errors.StatesFailure(errors.RUNTIME, f"{field} must reference a positive integer, got {value!r}")
        return float(value)

    # --- events --------------------------------------------------------------------------------

    def _scheduled(self, scope: Scope, params_text: str, timeout, heartbeat, credentials) -> None:
        if self.legacy_lambda:
            details = {"resource": self.resource, "input": params_text, "inputDetails": {"truncated": False}}
            if timeout is not None:
                details["timeoutInSeconds"] = int(timeout)
            scope.emit("LambdaFunctionScheduled", "lambdaFunctionScheduledEventDetails", details, len(params_text))
            scope.emit("LambdaFunctionStarted")
            return
        details = {"resourceType": self.resource_type, "resource": self.resource_name,
                   "region": scope.run.info.region, "parameters": params_text}
        if timeout is not None:
            details["timeoutInSeconds"] = int(timeout)
        if heartbeat is not None:
            details["heartbeatInSeconds"] = int(heartbeat)
        if isinstance(credentials, dict) and "RoleArn" in credentials:
            details["taskCredentials"] = {"roleArn": credentials["RoleArn"]}
        scope.emit("TaskScheduled", "taskScheduledEventDetails", details, len(params_text))
        scope.emit("TaskStarted", "taskStartedEventDetails",
                   {"resourceType": self.resource_type, "resource": self.resource_name})

    def _outcome(self, scope: Scope, kind: str, details: dict, size: int = 0) -> None:
        if self.legacy_lambda:
            scope.emit(f"LambdaFunction{kind}", f"lambdaFunction{kind}EventDetails", details, size)
        else:
            full = {"resourceType": self.resource_type, "resource": self.resource_name, **details}
            scope.emit(f"Task{kind}", f"task{kind}EventDetails", full, size)

    def _failed(self, scope: Scope, failure: errors.StatesFailure) -> errors.StatesFailure:
        kind = "TimedOut" if failure.error in (errors.TIMEOUT, errors.HEARTBEAT_TIMEOUT) else "Failed"
        details = {"error": failure.error}
        if failure.cause is not None:
            details["cause"] = failure.cause
        self._outcome(scope, kind, details)
        return failure

    # --- calling the resolver ------------------------------------------------------------------

    def _invoke(self, scope: Scope, params: Any, task_ctx: TaskContext) -> Any:
        try:
            if task_ctx.timeout_seconds is None and task_ctx.heartbeat_seconds is None:
                result = self._call(scope, params, task_ctx)
            else:
                result = self._call_with_deadline(scope, params, task_ctx)
        except errors.StatesFailure as failure:
            scope.check()
            raise self._failed(scope, failure) from None
        scope.check()
        try:
            text = serialize(result, f"result of task '{self.name}'")
        except errors.StatesFailure as failure:
            raise self._failed(scope, failure) from None
        self._outcome(scope, "Succeeded", {"output": text, "outputDetails": {"truncated": False}}, len(text))
        return json.loads(text)

    def _call(self, scope: Scope, params: Any, task_ctx: TaskContext) -> Any:
        resolver = scope.run.resolver
        if resolver is None:
            raise errors.StatesFailure(errors.RUNTIME, _no_resolver(self.resource, ""))
        try:
            return resolver(self.resource, params, task_ctx)
        except errors.StatesFailure as failure:
            if not failure.error:  # a task failure without a name is States.TaskFailed
                raise errors.TaskError(errors.TASK_FAILED, failure.cause) from None
            raise
        except errors.UnknownResource as e:
            raise errors.StatesFailure(errors.RUNTIME, _no_resolver(self.resource, e.hint)) from None
        except Exception as e:  # a resolver's bug is the task's failure, named like Lambda names it
            raise errors.TaskError(type(e).__name__, str(e)) from None

    def _call_with_deadline(self, scope: Scope, params: Any, task_ctx: TaskContext) -> Any:
        done = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = self._call(scope, params, task_ctx)
            except BaseException as e:  # handed to the waiting thread
                box["error"] = e
            finally:
                done.set()

        scope.stopper.on_set(done.set)
        threading.Thread(target=work, name=f"task-{self.name}", daemon=True).start()
        clock = scope.run.clock
        started = time.monotonic()
        while not done.is_set():
            now = time.monotonic()
            limits = []
            if task_ctx.timeout_seconds is not None:
                limits.append((started + task_ctx.timeout_seconds - now, errors.TIMEOUT))
            if task_ctx.heartbeat_seconds is not None:
                limits.append((task_ctx.last_heartbeat + task_ctx.heartbeat_seconds - now, errors.HEARTBEAT_TIMEOUT))
            remaining, reason = min(limits)
            # A fake clock jumps over the whole wait, so an unfinished wait means the limit passed.
            if remaining <= 0 or (not clock.wait(done, remaining) and isinstance(clock, FakeClock)):
                if done.is_set():
                    break
                task_ctx.cancelled.set()
                raise errors.StatesFailure(reason, None)
        scope.check()
        if "error" in box:
            raise box["error"]
        return box.get("result")


def _no_resolver(resource: str, hint: str) -> str:
    """The cause when no resolver runs a (valid) resource: the resolver's hint says what it does run."""
    msg = f"The local engine cannot run the resource '{resource}', which is valid on AWS."
    return f"{msg} {hint or 'This engine was given no resolver for it.'}".strip()
