"""Validation before running, like ValidateStateMachineDefinition: every problem becomes a
Diagnostic naming the state and the field, and a definition with any diagnostic is refused."""
from __future__ import annotations

import json
import re
from typing import Any

from .choice_rules import RuleError, compile_rule
from .errors import ALL, Diagnostic
from .jsonpath import PathSyntaxError, compile_path, compile_reference_path
from .templates import Template, TemplateError, compile_dynamic_value
from .values import parse_timestamp

MAX_DEFINITION_BYTES = 1024 * 1024  # "Maximum size of a state machine definition: 1 MB"
MAX_NAME_LENGTH = 80
MAX_NESTING = 40  # Parallel/Map inside Parallel/Map; deeper is refused rather than run
MAX_SECONDS = 99999999

_COMMON = {"Type", "Comment"}
_IO = {"InputPath", "OutputPath"}
_FLOW = {"Next", "End"}
_EXEC = {"Parameters", "ResultSelector", "ResultPath", "Retry", "Catch"}
FIELDS: dict[str, set[str]] = {
    "Pass": _COMMON | _IO | _FLOW | {"Parameters", "Result", "ResultPath"},
    "Task": _COMMON | _IO | _FLOW | _EXEC | {"Resource", "TimeoutSeconds", "TimeoutSecondsPath",
                                              "HeartbeatSeconds", "HeartbeatSecondsPath", "Credentials"},
    "Choice": _COMMON | _IO | {"Choices", "Default"},
    "Wait": _COMMON | _IO | _FLOW | {"Seconds", "Timestamp", "SecondsPath", "TimestampPath"},
    "Succeed": _COMMON | _IO,
    "Fail": _COMMON | {"Error", "Cause", "ErrorPath", "CausePath"},
    "Parallel": _COMMON | _IO | _FLOW | _EXEC | {"Branches"},
    "Map": _COMMON | _IO | _FLOW | _EXEC | {
        "ItemsPath", "ItemSelector", "Iterator", "ItemProcessor", "MaxConcurrency", "MaxConcurrencyPath",
        "ToleratedFailurePercentage", "ToleratedFailurePercentagePath", "ToleratedFailureCount",
        "ToleratedFailureCountPath", "Label", "ItemReader", "ItemBatcher", "ResultWriter",
    },
}
# Valid on AWS, but this engine does not run them: refused with a message that says so.
UNSUPPORTED = {
    "QueryLanguage": "JSONata states are not supported by the local engine (use JSONPath)",
    "Assign": "workflow variables (Assign) are not supported by the local engine",
    "Arguments": "Arguments belongs to JSONata states, which the local engine does not run",
    "Output": "Output belongs to JSONata states, which the local engine does not run",
    "Items": "Items belongs to JSONata states, which the local engine does not run",
    "ItemReader": "ItemReader (reading items from S3) is not supported by the local engine",
    "ItemBatcher": "ItemBatcher is not supported by the local engine",
    "ResultWriter": "ResultWriter (writing results to S3) is not supported by the local engine",
}
_TRANSITIONS = {"Pass", "Task", "Wait", "Parallel", "Map"}
# What CreateStateMachine recognises as a Task's Resource: a service integration
# (arn:aws:states:::<service>:<action>[.sync|.sync:2|.waitForTaskToken]; the AWS SDK ones as
# aws-sdk:<service>:<action>), a Lambda function ARN, or an activity ARN. Anything else AWS refuses
# as "The resource provided ... is not recognized", so it is refused here rather than at run time.
INTEGRATION_SERVICES = frozenset({
    "lambda", "sns", "sqs", "dynamodb", "ecs", "batch", "glue", "databrew", "sagemaker", "states",
    "events", "codebuild", "athena", "elasticmapreduce", "emr-containers", "emr-serverless", "eks",
    "apigateway", "bedrock", "mediaconvert", "http", "aws-sdk",
})
_INTEGRATION = re.compile(r"^arn:aws[a-z-]*:states:::(?P<service>[a-z0-9-]+):(?P<action>[A-Za-z0-9-]+(:[A-Za-z0-9]+)?)"
                          r"(\.sync(:2)?|\.waitForTaskToken)?$")
FUNCTION_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]+)?$")
_ACTIVITY = re.compile(r"^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:activity:[^:]+$")


def resource_problem(resource: str) -> str | None:
    """Why a Task's Resource would be refused by Step Functions, or None when it is recognised."""
    if FUNCTION_ARN.match(resource) or _ACTIVITY.match(resource):
        return None
    match = _INTEGRATION.match(resource)
    if match:
        service, action = match["service"], match["action"]
        if service not in INTEGRATION_SERVICES:
            return (f"{resource!r} names no Step Functions service integration ('{service}' is not one): use "
                    f"arn:aws:states:::lambda:invoke, another service integration, or a Lambda function ARN")
        if (service == "aws-sdk") != (":" in action):
            shape = "aws-sdk:<service>:<action>" if service == "aws-sdk" else f"{service}:<action>"
            return f"{resource!r} is not a recognised resource: the integration is written arn:aws:states:::{shape}"
        return None
    return (f"{resource!r} is not a resource Step Functions recognises: use a service integration such as "
            f"arn:aws:states:::lambda:invoke, a Lambda function ARN "
            f"(arn:aws:lambda:<region>:<account>:function:<name>) or an activity ARN")


def json_error_text(exc: ValueError) -> str:
    """What is wrong with a JSON text and where, as a clause: "unterminated string starting at line 1,
    column 5 (char 4)" (json's own message repeats "at" after messages that end with it)."""
    if not isinstance(exc, json.JSONDecodeError):
        return str(exc)
    msg = exc.msg[:1].lower() + exc.msg[1:]
    if msg.endswith(" at"):
        msg = msg[:-3]
    return f"{msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})"


def parse_definition(definition: dict | str) -> tuple[Any, list[Diagnostic]]:
    if isinstance(definition, (bytes, bytearray)):
        definition = definition.decode("utf-8", errors="replace")
    if isinstance(definition, str):
        if len(definition.encode("utf-8")) > MAX_DEFINITION_BYTES:
            return None, [Diagnostic("", "", f"the definition is larger than {MAX_DEFINITION_BYTES:,} bytes")]
        try:
            return json.loads(definition), []
        except RecursionError:
            return None, [Diagnostic("", "", "the definition's JSON is nested too deeply")]
        except ValueError as e:
            return None, [Diagnostic("", "", f"the definition is not valid JSON: {json_error_text(e)}")]
    if not isinstance(definition, dict):
        return None, [Diagnostic("", "", f"the definition must be a JSON object, got {type(definition).__name__}")]
    return definition, []


def validate_definition(definition: dict | str) -> list[Diagnostic]:
    """Every reason the definition would be refused; an empty list means it is valid."""
    parsed, diags = parse_definition(definition)
    if parsed is None:
        return diags
    checker = _Checker()
    try:
        checker.machine(parsed)
    except RecursionError:
        checker.add("", "", "the definition is nested too deeply")
    return checker.diags


class _Checker:
    def __init__(self) -> None:
        self.diags: list[Diagnostic] = []
        self.names: set[str] = set()

    def add(self, state: str, field: str, message: str) -> None:
        self.diags.append(Diagnostic(state, field, message))

    # --- machine and blocks ----------------------------------------------------------------------

    def machine(self, spec: Any) -> None:
        if not isinstance(spec, dict):
            self.add("", "", "the definition must be a JSON object")
            return
        for key in spec:
            if key == "QueryLanguage" and spec[key] == "JSONPath":
                continue
            if key in UNSUPPORTED:
                self.add("", key, UNSUPPORTED[key])
            elif key not in {"StartAt", "States", "Comment", "Version", "TimeoutSeconds"}:
                self.add("", key, f"'{key}' is not a field of a state machine")
        if "TimeoutSeconds" in spec:
            self.positive_int("", "TimeoutSeconds", spec["TimeoutSeconds"])
        if "Comment" in spec and not isinstance(spec["Comment"], str):
            self.add("", "Comment", "must be a string")
        self.block(spec, "", 0)

    def block(self, spec: dict, owner: str, depth: int) -> None:
        prefix = f"{owner}." if owner else ""
        if depth > MAX_NESTING:
            self.add(owner, "", f"Parallel and Map states nest more than {MAX_NESTING} levels deep")
            return
        start = spec.get("StartAt")
        states = spec.get("States")
        if not isinstance(start, str):
            self.add(owner, f"{prefix}StartAt", "StartAt is required and must name a state")
        if not isinstance(states, dict) or not states:
            self.add(owner, f"{prefix}States", "States is required and must be an object with at least one state")
            return
        if isinstance(start, str) and start not in states:
            self.add(owner, f"{prefix}StartAt", f"StartAt names no state '{start}' in this scope")
        for name, state in states.items():
            if name in self.names:
                self.add(name, "", "the state name is used more than once in the definition")
            self.names.add(name)
            if not name or len(name) > MAX_NAME_LENGTH:
                self.add(name, "", f"a state name must have 1 to {MAX_NAME_LENGTH} characters")
            self.state(name, state, states, depth)
        self.reachability(start, states)

    def reachability(self, start: Any, states: dict) -> None:
        if not isinstance(start, str) or start not in states:
            return
        seen = {start}
        todo = [start]
        while todo:
            spec = states.get(todo.pop())
            for target in _targets(spec):
                if target in states and target not in seen:
                    seen.add(target)
                    todo.append(target)
        for name in states:
            if name not in seen:
                self.add(name, "", f"the state is not reachable from StartAt '{start}'")

    # --- states ------------------------------------------------------------------------------------

    def state(self, name: str, spec: Any, scope: dict, depth: int) -> None:
        if not isinstance(spec, dict):
            self.add(name, "", "a state must be a JSON object")
            return
        kind = spec.get("Type")
        if kind not in FIELDS:
            self.add(name, "Type", f"Type must be one of {', '.join(FIELDS)}, got {kind!r}")
            return
        for key in spec:
            if key in FIELDS[kind]:
                if key in UNSUPPORTED:
                    self.add(name, key, UNSUPPORTED[key])
                continue
            if key in UNSUPPORTED:
                self.add(name, key, UNSUPPORTED[key])
            else:
                self.add(name, key, f"'{key}' is not a field of a {kind} state")
        if "Comment" in spec and not isinstance(spec["Comment"], str):
            self.add(name, "Comment", "must be a string")
        self.transition(name, kind, spec, scope)
        for field in ("InputPath", "OutputPath"):
            if field in spec and spec[field] is not None:
                self.path(name, field, spec[field])
        if "ResultPath" in spec:
            self.result_path(name, "ResultPath", spec["ResultPath"])
        for field in ("Parameters", "ResultSelector", "ItemSelector", "Credentials"):
            if field in spec and field in FIELDS[kind]:
                if field in ("ResultSelector", "Credentials", "ItemSelector") and not isinstance(spec[field], dict):
                    self.add(name, field, "must be a JSON object")
                    continue
                self.template(name, field, spec[field])
        if "Retry" in spec:
            self.retry(name, spec["Retry"])
        if "Catch" in spec:
            self.catch(name, spec["Catch"], scope)
        getattr(self, f"check_{kind.lower()}")(name, spec, scope, depth)

    def transition(self, name: str, kind: str, spec: dict, scope: dict) -> None:
        has_next, end = "Next" in spec, spec.get("End")
        if kind in _TRANSITIONS:
            if "End" in spec and not isinstance(end, bool):
                self.add(name, "End", "End must be true or false")
            if has_next and end is True:
                self.add(name, "Next", "a state cannot have both Next and End")
            elif not has_next and end is not True:
                self.add(name, "Next", "the state has neither Next nor \"End\": true")
        # Next/End on Choice, Succeed and Fail are reported as fields that do not belong.
        if has_next and kind in _TRANSITIONS:
            self.target(name, "Next", spec["Next"], scope)

    def target(self, name: str, field: str, value: Any, scope: dict) -> None:
        if not isinstance(value, str):
            self.add(name, field, "must be the name of a state")
        elif value not in scope:
            self.add(name, field, f"names no state '{value}' in this scope")

    def check_pass(self, name, spec, scope, depth) -> None:
        pass

    def check_succeed(self, name, spec, scope, depth) -> None:
        pass

    def check_task(self, name, spec, scope, depth) -> None:
        resource = spec.get("Resource")
        if not isinstance(resource, str) or not resource:
            self.add(name, "Resource", "a Task needs a Resource (an ARN such as arn:aws:states:::lambda:invoke)")
        elif (problem := resource_problem(resource)) is not None:
            self.add(name, "Resource", problem)
        for fixed, path in (("TimeoutSeconds", "TimeoutSecondsPath"), ("HeartbeatSeconds", "HeartbeatSecondsPath")):
            if fixed in spec and path in spec:
                self.add(name, path, f"use either {fixed} or {path}, not both")
            if fixed in spec:
                self.positive_int(name, fixed, spec[fixed])
            if path in spec:
                self.path(name, path, spec[path], reference=True)
        hb, to = spec.get("HeartbeatSeconds"), spec.get("TimeoutSeconds", MAX_SECONDS)
        if _is_int(hb) and _is_int(to) and hb >= to:
            self.add(name, "HeartbeatSeconds", "HeartbeatSeconds must be smaller than TimeoutSeconds")

    def check_choice(self, name, spec, scope, depth) -> None:
        choices = spec.get("Choices")
        if not isinstance(choices, list) or not choices:
            self.add(name, "Choices", "a Choice state needs a non-empty Choices array")
            choices = []
        for i, rule in enumerate(choices):
            try:
                compile_rule(rule, f"Choices[{i}]", True)
            except RuleError as e:
                self.add(name, e.where, e.message)
                continue
            self.target(name, f"Choices[{i}].Next", rule["Next"], scope)
        if "Default" in spec:
            self.target(name, "Default", spec["Default"], scope)

    def check_wait(self, name, spec, scope, depth) -> None:
        given = [f for f in ("Seconds", "Timestamp", "SecondsPath", "TimestampPath") if f in spec]
        if len(given) != 1:
            self.add(name, "Seconds", "a Wait state needs exactly one of Seconds, Timestamp, SecondsPath, TimestampPath")
        if "Seconds" in spec and (not _is_int(spec["Seconds"]) or spec["Seconds"] < 0 or spec["Seconds"] > MAX_SECONDS):
            self.add(name, "Seconds", "Seconds must be a non-negative integer")
        if "Timestamp" in spec and parse_timestamp(spec["Timestamp"]) is None:
            self.add(name, "Timestamp", "Timestamp must be an RFC 3339 time such as 2024-01-31T12:00:00Z")
        for field in ("SecondsPath", "TimestampPath"):
            if field in spec:
                self.path(name, field, spec[field], reference=True)

    def check_fail(self, name, spec, scope, depth) -> None:
        for fixed, path in (("Error", "ErrorPath"), ("Cause", "CausePath")):
            if fixed in spec and path in spec:
                self.add(name, path, f"use either {fixed} or {path}, not both")
            if fixed in spec and not isinstance(spec[fixed], str):
                self.add(name, fixed, "must be a string")
            if path in spec:
                try:
                    compile_dynamic_value(spec[path], path)
                except TemplateError as e:
                    self.add(name, path, e.message)

    def check_parallel(self, name, spec, scope, depth) -> None:
        branches = spec.get("Branches")
        if not isinstance(branches, list) or not branches:
            self.add(name, "Branches", "a Parallel state needs a non-empty Branches array")
            return
        for i, branch in enumerate(branches):
            field = f"Branches[{i}]"
            if not isinstance(branch, dict):
                self.add(name, field, "a branch must be an object with StartAt and States")
                continue
            for key in branch:
                if key not in ("StartAt", "States", "Comment"):
                    self.add(name, f"{field}.{key}", f"'{key}' is not a field of a branch")
            self.block(branch, name, depth + 1)

    def check_map(self, name, spec, scope, depth) -> None:
        has_proc, has_iter = "ItemProcessor" in spec, "Iterator" in spec
        if has_proc == has_iter:
            self.add(name, "ItemProcessor", "a Map state needs exactly one of ItemProcessor or Iterator")
        if "ItemSelector" in spec and "Parameters" in spec:
            self.add(name, "Parameters", "use either ItemSelector or Parameters, not both")
        if "ItemsPath" in spec:
            self.path(name, "ItemsPath", spec["ItemsPath"], reference=True)
        if "MaxConcurrency" in spec and "MaxConcurrencyPath" in spec:
            self.add(name, "MaxConcurrencyPath", "use either MaxConcurrency or MaxConcurrencyPath, not both")
        if "MaxConcurrency" in spec and (not _is_int(spec["MaxConcurrency"]) or spec["MaxConcurrency"] < 0):
            self.add(name, "MaxConcurrency", "MaxConcurrency must be a non-negative integer (0 means no limit)")
        for field in ("MaxConcurrencyPath", "ToleratedFailureCountPath", "ToleratedFailurePercentagePath"):
            if field in spec:
                self.path(name, field, spec[field], reference=True)
        if "Label" in spec and not isinstance(spec["Label"], str):
            self.add(name, "Label", "must be a string")
        processor = spec.get("ItemProcessor") if has_proc else spec.get("Iterator")
        field = "ItemProcessor" if has_proc else "Iterator"
        mode = "INLINE"
        if not isinstance(processor, dict):
            if has_proc or has_iter:
                self.add(name, field, "must be an object with StartAt and States")
        else:
            allowed = {"StartAt", "States", "Comment"} | ({"ProcessorConfig"} if has_proc else set())
            for key in processor:
                if key not in allowed:
                    self.add(name, f"{field}.{key}", f"'{key}' is not a field of {field}")
            config = processor.get("ProcessorConfig", {})
            if has_proc and not isinstance(config, dict):
                self.add(name, f"{field}.ProcessorConfig", "must be an object")
            elif has_proc:
                mode = config.get("Mode", "INLINE")
                if mode not in ("INLINE", "DISTRIBUTED"):
                    self.add(name, f"{field}.ProcessorConfig.Mode", "Mode must be INLINE or DISTRIBUTED")
                if config.get("ExecutionType", "STANDARD") not in ("STANDARD", "EXPRESS"):
                    self.add(name, f"{field}.ProcessorConfig.ExecutionType", "ExecutionType must be STANDARD or EXPRESS")
                for key in config:
                    if key not in ("Mode", "ExecutionType"):
                        self.add(name, f"{field}.ProcessorConfig.{key}", f"'{key}' is not a field of ProcessorConfig")
            self.block(processor, name, depth + 1)
        tolerance = [f for f in ("ToleratedFailurePercentage", "ToleratedFailurePercentagePath",
                                 "ToleratedFailureCount", "ToleratedFailureCountPath") if f in spec]
        if tolerance and mode != "DISTRIBUTED":
            self.add(name, tolerance[0], f"{tolerance[0]} applies only to a Map whose ItemProcessor runs in DISTRIBUTED mode")
        pct = spec.get("ToleratedFailurePercentage")
        if pct is not None and (not _is_num(pct) or not 0 <= pct <= 100):
            self.add(name, "ToleratedFailurePercentage", "must be a number from 0 to 100")
        count = spec.get("ToleratedFailureCount")
        if count is not None and (not _is_int(count) or count < 0):
            self.add(name, "ToleratedFailureCount", "must be a non-negative integer")

    # --- shared field checks -----------------------------------------------------------------------

    def retry(self, name: str, retriers: Any) -> None:
        if not isinstance(retriers, list):
            self.add(name, "Retry", "Retry must be an array of retriers")
            return
        for i, r in enumerate(retriers):
            field = f"Retry[{i}]"
            if not isinstance(r, dict):
                self.add(name, field, "a retrier must be an object")
                continue
            for key in r:
                if key not in ("ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate",
                               "MaxDelaySeconds", "JitterStrategy", "Comment"):
                    self.add(name, f"{field}.{key}", f"'{key}' is not a field of a retrier")
            self.error_equals(name, field, r.get("ErrorEquals"), i == len(retriers) - 1)
            if "IntervalSeconds" in r:
                self.positive_int(name, f"{field}.IntervalSeconds", r["IntervalSeconds"])
            if "MaxDelaySeconds" in r:
                self.positive_int(name, f"{field}.MaxDelaySeconds", r["MaxDelaySeconds"])
            if "MaxAttempts" in r and (not _is_int(r["MaxAttempts"]) or not 0 <= r["MaxAttempts"] <= MAX_SECONDS):
                self.add(name, f"{field}.MaxAttempts", "MaxAttempts must be a non-negative integer")
            if "BackoffRate" in r and (not _is_num(r["BackoffRate"]) or r["BackoffRate"] < 1.0):
                self.add(name, f"{field}.BackoffRate", "BackoffRate must be a number not less than 1.0")
            if "JitterStrategy" in r and r["JitterStrategy"] not in ("FULL", "NONE"):
                self.add(name, f"{field}.JitterStrategy", "JitterStrategy must be FULL or NONE")

    def catch(self, name: str, catchers: Any, scope: dict) -> None:
        if not isinstance(catchers, list):
            self.add(name, "Catch", "Catch must be an array of catchers")
            return
        for i, c in enumerate(catchers):
            field = f"Catch[{i}]"
            if not isinstance(c, dict):
                self.add(name, field, "a catcher must be an object")
                continue
            for key in c:
                if key not in ("ErrorEquals", "Next", "ResultPath", "Comment"):
                    self.add(name, f"{field}.{key}", f"'{key}' is not a field of a catcher")
            self.error_equals(name, field, c.get("ErrorEquals"), i == len(catchers) - 1)
            if "Next" not in c:
                self.add(name, f"{field}.Next", "a catcher needs a Next")
            else:
                self.target(name, f"{field}.Next", c["Next"], scope)
            if "ResultPath" in c:
                self.result_path(name, f"{field}.ResultPath", c["ResultPath"])

    def error_equals(self, name: str, field: str, value: Any, last: bool) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(e, str) and e for e in value):
            self.add(name, f"{field}.ErrorEquals", "ErrorEquals must be a non-empty array of error names")
            return
        if ALL in value and (len(value) != 1 or not last):
            self.add(name, f"{field}.ErrorEquals", "States.ALL must appear alone, in the last retrier or catcher")

    def path(self, name: str, field: str, value: Any, reference: bool = False) -> None:
        if not isinstance(value, str):
            self.add(name, field, "must be a path string starting with '$'")
            return
        try:
            compile_reference_path(value) if reference else compile_path(value)
        except PathSyntaxError as e:
            self.add(name, field, str(e))

    def result_path(self, name: str, field: str, value: Any) -> None:
        if value is not None:
            self.path(name, field, value, reference=True)

    def template(self, name: str, field: str, value: Any) -> None:
        try:
            Template(value, field)
        except TemplateError as e:
            self.add(name, e.where, e.message)

    def positive_int(self, name: str, field: str, value: Any) -> None:
        if not _is_int(value) or not 0 < value <= MAX_SECONDS:
            self.add(name, field, f"must be a positive integer no larger than {MAX_SECONDS}")


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_num(v: Any) -> bool:
    return type(v) in (int, float)


def _targets(spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return []
    out = []
    for key in ("Next", "Default"):
        if isinstance(spec.get(key), str):
            out.append(spec[key])
    for rule in spec.get("Choices") or []:
        if isinstance(rule, dict) and isinstance(rule.get("Next"), str):
            out.append(rule["Next"])
    for c in spec.get("Catch") or []:
        if isinstance(c, dict) and isinstance(c.get("Next"), str):
            out.append(c["Next"])
    return out


__all__ = ["validate_definition", "parse_definition", "json_error_text", "Diagnostic"]
