"""The workflow on AWS: the `lambdas/` files packaged as one zip and deployed as the three Lambda
functions, the `asl/` definition created as a Step Functions state machine with the functions'
ARNs substituted, and executions started, listed, described, stopped and read back from Step
Functions. The same method names and records as the local WorkflowService.

What is stored where: AWS is the source of truth (the definition, each function's handler and
environment, every execution and its history); the workspace keeps only the names it created.
A function of the same name that this project did not create (no project tag) is never
overwritten.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from backend.api import (
    DEFAULT_STATE_MACHINE, THRESHOLD_ERROR, AccessDenied, BatchPartlyStarted, Execution, Resource, ResourceInUse,
    ResourceNotFound, SconesError, StateMachine, StateRun, StepStatus, ValidationError, input_threshold,
)
from backend.aws.errors import aws_errors
from backend.aws.s3 import PROJECT_TAG
from backend.function_classes import FunctionClasses
from backend.inventory import running_executions
from backend.workflow_defs import (
    LAMBDAS_DIR, SEED_HANDLERS, upload_key, called_functions, check_batch, check_state_machine_name, check_threshold,
    deployed_not_replaced, encode_upload, import_target,
    find_inferences, inferences_from_history, parse_definition, parse_json, resolve_import, rewrite_function_arns,
    state_runs, workflow_definition,
)

RUNTIME = "python3.12"
FUNCTION_TIMEOUT_S = 10  # as the local runtime; Lambda's default of 3 s is tight for a cold start with boto3
FUNCTION_MEMORY_MB = 256
SOURCE_TAG = "scones-source"  # "asl" for the workflow from asl/, "imported" for a console export
ENDPOINT_TAG, THRESHOLD_TAG = "scones-endpoint", "scones-threshold"  # what it was deployed for (also in the
# functions' environment; the tags speak for a definition that calls no function)
FINISHED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
CONFIG_TTL = 5.0
TARGETS_TTL = 30.0  # which endpoint each state machine calls, for the Home page's 2-second poll
NEW_DESCRIBES_PER_LIST = 25  # DescribeExecution is rate-limited (a bucket of 250, 15 more a second)
DESCRIBES_PER_WAIT_ROUND = 15
FUNCTIONS_RETRY_SECONDS = 10.0  # a machine whose functions could not be read (throttled, denied) is asked again after


def lambda_package() -> bytes:
    """lambdas/*.py as a zip, byte-for-byte the same for the same files (so an unchanged package is
    recognised by its CodeSha256 and not uploaded again)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(LAMBDAS_DIR.glob("*.py")):
            info = zipfile.ZipInfo(path.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def code_sha256(package: bytes) -> str:
    return base64.b64encode(hashlib.sha256(package).digest()).decode()


def _iso(value: Any) -> str:
    if not value:
        return ""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _lambda_time(value: str | None) -> datetime | None:
    """Lambda's LastModified ("2026-11-29T03:00:00.000+0000") as a datetime; None when absent or unreadable."""
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z") if value else None
    except ValueError:
        return None


def _threshold_variable(environment: dict[str, str]) -> float | None:
    """The function's THRESHOLD as a number; None when it has none or it is not one."""
    try:
        return float(environment["THRESHOLD"])
    except (KeyError, TypeError, ValueError):
        return None


class AwsWorkflowMixin:
    """Workflow methods of the AWS backend (the names the pages and the CLI call)."""

    @cached_property
    def _wf_cache(self) -> dict[str, Any]:
        return {"finished": {}, "config": {}, "classes": {}, "inputs": {}, "functions": {}, "functions_failed": {}}

    @cached_property
    def _function_classes(self) -> FunctionClasses:
        return FunctionClasses(self.db, "aws")

    # -- names and ARNs ----------------------------------------------------------------------

    def _function_arn(self, function: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{function}"

    def _machine_arn(self, name: str) -> str:
        return f"arn:aws:states:{self.region}:{self.account_id}:stateMachine:{name}"

    def _execution_arn(self, machine: str, name: str) -> str:
        return f"arn:aws:states:{self.region}:{self.account_id}:execution:{machine}:{name}"

    # -- Lambda functions ----------------------------------------------------------------------

    def _function_config(self, name: str, fresh: bool = False) -> dict[str, Any] | None:
        """GetFunction's configuration and tags, or None when there is no such function."""
        hit = self._wf_cache["config"].get(name)
        if hit and not fresh and time.monotonic() - hit[0] < CONFIG_TTL:
            return hit[1]
        try:
            with aws_errors(f"reading Lambda function {name}"):
                d = self.client("lambda").get_function(FunctionName=name)
            value = {**d["Configuration"], "Tags": d.get("Tags") or {}}
        except ResourceNotFound:
            value = None
        self._wf_cache["config"][name] = (time.monotonic(), value)
        return value

    def _wait_function(self, name: str, waiter: str) -> None:
        from botocore.exceptions import WaiterError

        try:
            self.client("lambda").get_waiter(waiter).wait(FunctionName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        except WaiterError as exc:
            config = (exc.last_response or {}).get("Configuration", {})
            reason = config.get("LastUpdateStatusReason") or config.get("StateReason") or str(exc)
            raise SconesError(f"Lambda function {name} did not become ready ({reason}); see it in the Lambda console.") from None

    def _ensure_function(self, name: str, stem: str, environment: dict[str, str], package: bytes) -> str:
        """Create or update one function running lambdas/<stem>.py; returns its ARN."""
        role = self.role_arn("lambda")
        config = {"Runtime": RUNTIME, "Role": role, "Handler": f"{stem}.lambda_handler",
                  "Timeout": FUNCTION_TIMEOUT_S, "MemorySize": FUNCTION_MEMORY_MB,
                  "Environment": {"Variables": environment}}
        current = self._function_config(name, fresh=True)
        lam = self.client("lambda")
        try:
            if current is None:
                with aws_errors(f"creating Lambda function {name}"):
                    lam.create_function(FunctionName=name, Code={"ZipFile": package}, Publish=False,
                                        Description=f"Scones Unlimited workflow: lambdas/{stem}.py",
                                        Tags={PROJECT_TAG["Key"]: PROJECT_TAG["Value"]}, **config)
                self._record_resource("lambda-function", name)
                self._wait_function(name, "function_active_v2")
            else:
                if current["Tags"].get(PROJECT_TAG["Key"]) != PROJECT_TAG["Value"]:
                    raise ResourceInUse(
                        f"A Lambda function named {name} already exists in this account and was not created by this "
                        f"project (no '{PROJECT_TAG['Key']}' tag): delete or rename it, or import the definition "
                        "with other function names.")
                self._record_resource("lambda-function", name)
                if current.get("CodeSha256") != code_sha256(package):
                    with aws_errors(f"updating the code of Lambda function {name}"):
                        lam.update_function_code(FunctionName=name, ZipFile=package)
                    self._wait_function(name, "function_updated_v2")
                now = {"Runtime": current.get("Runtime"), "Role": current.get("Role"), "Handler": current.get("Handler"),
                       "Timeout": current.get("Timeout"), "MemorySize": current.get("MemorySize"),
                       "Environment": {"Variables": (current.get("Environment") or {}).get("Variables", {})}}
                if now != config:
                    variables = now["Environment"]["Variables"]
                    if variables.get("ENDPOINT_NAME"):  # a note from before endpoints were noted gets the one
                        # the function calls until now, so its executions are not credited to the next one
                        self._function_classes.fill_endpoint([name], variables["ENDPOINT_NAME"])
                    with aws_errors(f"updating the configuration of Lambda function {name}"):
                        lam.update_function_configuration(FunctionName=name, **config)
                    self._wait_function(name, "function_updated_v2")
        except ValidationError as exc:
            if "cannot be assumed" in str(exc):
                raise ValidationError(
                    f"Lambda cannot assume the role {role} for function {name}: a role created moments ago takes "
                    "about 10 seconds to be usable (try again), otherwise its trust policy must allow "
                    "lambda.amazonaws.com.") from None
            raise
        self._wf_cache["config"].pop(name, None)
        classes = json.loads(environment.get("CLASS_NAMES") or "[]")
        if classes:  # what the executions starting from now are labelled with, from Lambda's own clock
            config = self._function_config(name, fresh=True) or {}
            self._function_classes.record([name], classes, at=_lambda_time(config.get("LastModified")),
                                          endpoint=environment.get("ENDPOINT_NAME"),
                                          threshold=_threshold_variable(environment))
        return self._function_arn(name)

    def list_lambda_functions(self) -> list[dict[str, Any]]:
        out = []
        for name in self._resource_names("lambda-function"):
            config = self._function_config(name)
            if config is None:
                self._forget_resource("lambda-function", name)
                continue
            out.append(config)
        return out

    def delete_lambda_function(self, name: str) -> None:
        with aws_errors(f"deleting Lambda function {name}"):
            self.client("lambda").delete_function(FunctionName=name)
        self._forget_resource("lambda-function", name)
        self._wf_cache["config"].pop(name, None)

    # -- state machines ------------------------------------------------------------------------

    def _workflow_target(self, endpoint_name: str | None, threshold: float | None) -> tuple[str, float]:
        if endpoint_name:
            self.describe_endpoint(endpoint_name)  # ResourceNotFound names it
            endpoint = endpoint_name
        else:
            serving = [e for e in self.list_endpoints() if e.status == "InService"]
            if not serving:
                raise ResourceNotFound("No endpoint is InService: deploy a model first (Deploy page or 'scones deploy').")
            endpoint = max(serving, key=lambda e: e.created).endpoint_name
        return endpoint, check_threshold(self.settings.threshold if threshold is None else threshold)

    def _check_machine_is_ours(self, name: str, importing: bool = False) -> bool:
        """Whether the state machine exists; ResourceInUse, before anything changes, when it exists and
        is not this project's, or (`importing`) when it is the workflow deployed from asl/."""
        sfn = self.client("stepfunctions")
        arn = self._machine_arn(name)
        try:
            with aws_errors(f"reading state machine {name}"):
                sfn.describe_state_machine(stateMachineArn=arn)
        except ResourceNotFound:
            return False
        with aws_errors(f"reading the tags of state machine {name}"):
            tags = {t["key"]: t["value"] for t in sfn.list_tags_for_resource(resourceArn=arn)["tags"]}
        if tags.get(PROJECT_TAG["Key"]) != PROJECT_TAG["Value"]:
            raise ResourceInUse(f"A state machine named {name} already exists in this account and was not created "
                                "by this project: choose another name.")
        if importing and tags.get(SOURCE_TAG) == "asl":
            raise ResourceInUse(deployed_not_replaced(name))
        return True

    def _ensure_state_machine(self, name: str, definition: str, source: str, endpoint: str, threshold: float,
                              exists: bool) -> None:
        """Create or update; the caller has validated the definition and checked (`exists`, from
        `_check_machine_is_ours`) that the machine is this project's before creating any function."""
        role = self.role_arn("states")
        ours = [{"key": SOURCE_TAG, "value": source}, {"key": ENDPOINT_TAG, "value": endpoint},
                {"key": THRESHOLD_TAG, "value": repr(float(threshold))}]
        sfn = self.client("stepfunctions")
        arn = self._machine_arn(name)
        try:
            if exists:
                with aws_errors(f"updating state machine {name}"):
                    sfn.update_state_machine(stateMachineArn=arn, definition=definition, roleArn=role)
                    sfn.tag_resource(resourceArn=arn, tags=ours)
            else:
                with aws_errors(f"creating state machine {name}"):
                    sfn.create_state_machine(name=name, definition=definition, roleArn=role, type="STANDARD",
                                             tags=[{"key": PROJECT_TAG["Key"], "value": PROJECT_TAG["Value"]}, *ours])
        except AccessDenied as exc:
            if "assume" in str(exc):  # Step Functions could not assume the role (yet)
                raise AccessDenied(
                    f"Step Functions cannot assume the role {role} for state machine {name}: a role created moments "
                    "ago takes about 10 seconds to be usable (try again), otherwise its trust policy must allow "
                    "states.amazonaws.com.") from None
            raise
        self._record_resource("state-machine", name)
        self._wf_cache["classes"].clear()
        self._wf_cache["functions"].pop(name, None)
        self._wf_cache["functions_failed"].pop(name, None)
        self._wf_cache.pop("targets", None)

    def _function_environment(self, endpoint: str, threshold: float) -> dict[str, str]:
        env = {"ENDPOINT_NAME": endpoint, "THRESHOLD": repr(float(threshold)), "S3_BUCKET": self.objects.bucket}
        try:
            classes = self.describe_model(self.describe_endpoint(endpoint).model_name).classes
        except SconesError:  # the endpoint or its model is not there: the staged classes name them
            report = self.latest_stage_report()
            classes = tuple(report.classes) if report else ()
        if classes:  # the threshold failure's cause names the class
            env["CLASS_NAMES"] = json.dumps(list(classes))
        return env

    def deploy_workflow(self, endpoint_name: str | None = None, threshold: float | None = None,
                        name: str = DEFAULT_STATE_MACHINE) -> StateMachine:
        """Create or update the three functions (from lambdas/) and the state machine (from asl/)."""
        check_state_machine_name(name)
        endpoint, threshold = self._workflow_target(endpoint_name, threshold)
        definition = workflow_definition(self._function_arn)
        from backend.local.states import DefinitionInvalid, validate_definition

        diagnostics = validate_definition(definition)
        if diagnostics:  # checked before anything is created
            raise DefinitionInvalid(diagnostics)
        self.role_arn("states")
        exists = self._check_machine_is_ours(name)
        self.allow_for_workflow(endpoint)
        package, env = lambda_package(), self._function_environment(endpoint, threshold)
        for function, stem in SEED_HANDLERS.items():
            self._ensure_function(function, stem, env, package)
        self._ensure_state_machine(name, definition, "asl", endpoint, threshold, exists)
        return self.describe_state_machine(name)

    def import_workflow(self, text: str, mapping: dict[str, str] | None = None, name: str = "imported-workflow",
                        endpoint_name: str | None = None, threshold: float | None = None) -> StateMachine:
        """A console-exported definition: its functions deployed from the mapped handler files in this
        account and region, its function ARNs rewritten to them, then created as a state machine."""
        from backend.local.states import DefinitionInvalid, validate_definition

        check_state_machine_name(name)
        definition = parse_definition(text)
        diagnostics = validate_definition(definition)
        if diagnostics:
            raise DefinitionInvalid(diagnostics)
        resolved = resolve_import(definition, mapping)  # refused before anything is created
        endpoint, threshold = import_target(self.list_state_machines(), self.workflow_mapping, name, resolved,
                                            endpoint_name, threshold, self._workflow_target, self.describe_endpoint)
        self.role_arn("states")
        exists = self._check_machine_is_ours(name, importing=True)
        self.allow_for_workflow(endpoint, tuple(resolved))
        package, env = lambda_package(), self._function_environment(endpoint, threshold)
        for function, stem in resolved.items():
            self._ensure_function(function, stem, env, package)
        self._ensure_state_machine(name, rewrite_function_arns(definition, list(resolved), self._function_arn),
                                   "imported", endpoint, threshold, exists)
        return self.describe_state_machine(name)

    def describe_state_machine(self, name: str = DEFAULT_STATE_MACHINE) -> StateMachine:
        sfn = self.client("stepfunctions")
        arn = self._machine_arn(name)
        try:
            with aws_errors(f"describing state machine {name}"):
                d = sfn.describe_state_machine(stateMachineArn=arn)
                tags = {t["key"]: t["value"] for t in sfn.list_tags_for_resource(resourceArn=arn)["tags"]}
        except ResourceNotFound:
            raise ResourceNotFound(f"No state machine named {name!r} in {self.region}: deploy the workflow first "
                                   "(Workflow page or 'scones workflow deploy').") from None
        definition = json.loads(d["definition"])
        functions = called_functions(definition)
        endpoint = tags.get(ENDPOINT_TAG, "")
        threshold = float(tags.get(THRESHOLD_TAG, self.settings.threshold))
        for fn in functions:
            variables = ((self._function_config(fn) or {}).get("Environment") or {}).get("Variables", {})
            endpoint = variables.get("ENDPOINT_NAME", endpoint)
            if "THRESHOLD" in variables:
                threshold = float(variables["THRESHOLD"])
        created = _iso(d.get("creationDate"))
        return StateMachine(name=name, arn=arn, endpoint_name=endpoint, threshold=threshold,
                            functions={fn: self._function_arn(fn) for fn in functions}, definition=definition,
                            created=created, updated=created, imported=tags.get(SOURCE_TAG) == "imported",
                            backend="aws")

    def workflow_mapping(self, name: str = DEFAULT_STATE_MACHINE) -> dict[str, str]:
        """{function name: handler file stem in lambdas/}, from each function's Handler setting."""
        out = {}
        for fn in self.describe_state_machine(name).functions:
            config = self._function_config(fn)
            out[fn] = (config or {}).get("Handler", "?").split(".", 1)[0]
        return out

    def list_state_machines(self) -> list[StateMachine]:
        return self._describe_all("state-machine", self.describe_state_machine)

    def workflow_targets(self) -> dict[str, str]:
        """For the Home page's poll: kept TARGETS_TTL (a deploy, an import or a delete here clears it)."""
        hit = self._wf_cache.get("targets")
        if hit and time.monotonic() - hit[0] < TARGETS_TTL:
            return hit[1]
        value = {m.name: m.endpoint_name for m in self.list_state_machines() if m.functions}
        self._wf_cache["targets"] = (time.monotonic(), value)
        return value

    def delete_state_machine(self, name: str) -> None:
        with aws_errors(f"deleting state machine {name}"):
            self.client("stepfunctions").delete_state_machine(stateMachineArn=self._machine_arn(name))
        self._forget_resource("state-machine", name)
        self._wf_cache.pop("targets", None)

    # -- inputs --------------------------------------------------------------------------------

    def generate_test_case(self) -> dict[str, Any]:
        return self._test_cases(1)[0]

    def _test_cases(self, count: int) -> list[dict[str, Any]]:
        """Random staged test images as execution inputs; the key list is read once."""
        keys = self.test_image_keys()
        if not keys:
            raise ResourceNotFound("No staged test images: stage the data first.")
        return [{"s3_bucket": self.objects.bucket, "s3_key": random.choice(keys), "image_data": ""}
                for _ in range(count)]

    def upload_workflow_image(self, filename: str, data: bytes) -> str:
        """Any image file -> a PNG at the model's input size under uploads/ in the bucket; returns its key."""
        size = (32, 32)
        serving = [e for e in self.list_endpoints() if e.status == "InService"]
        if serving:
            newest = max(serving, key=lambda e: e.created)
            try:
                size = self.describe_model(newest.model_name).image_shape[1:][::-1]
            except SconesError:
                pass
        key = upload_key(filename)
        self.objects.put_many({key: encode_upload(filename, data, size)})
        return key

    # -- executions ----------------------------------------------------------------------------

    def start_workflow_execution(self, input: dict[str, Any] | None = None, name: str | None = None,
                                 state_machine: str = DEFAULT_STATE_MACHINE) -> str:
        event = input if input is not None else self.generate_test_case()
        with aws_errors(f"starting an execution of {state_machine}"):
            return self.client("stepfunctions").start_execution(
                stateMachineArn=self._machine_arn(state_machine), name=name or str(uuid.uuid4()),
                input=json.dumps(event))["executionArn"]

    def start_workflow_batch(self, count: int = 1, s3_key: str | None = None, threshold: float | None = None,
                             state_machine: str = DEFAULT_STATE_MACHINE) -> list[str]:
        check_batch(count)
        if threshold is not None:
            check_threshold(threshold)
        self.describe_state_machine(state_machine)  # one clear error before any execution starts
        events = ([{"s3_bucket": self.objects.bucket, "s3_key": s3_key, "image_data": ""} for _ in range(int(count))]
                  if s3_key else self._test_cases(int(count)))
        if threshold is not None:
            for event in events:
                event["threshold"] = float(threshold)
        def start(event: dict[str, Any]) -> str | SconesError:
            try:
                return self.start_workflow_execution(event, state_machine=state_machine)
            except SconesError as exc:  # throttled past botocore's retries, say: the others still count
                return exc

        with ThreadPoolExecutor(max_workers=min(8, len(events))) as pool:
            results = list(pool.map(start, events))
        started = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if not isinstance(r, str)]
        if refused:
            if not started:
                raise refused[0]
            were = "was" if len(refused) == 1 else "were"
            raise BatchPartlyStarted(f"{len(started)} of {len(events)} executions started and run; "
                                     f"{len(refused)} {were} refused: {refused[0]}", started, refused[0])
        return started

    def _describe_execution_raw(self, arn: str) -> dict[str, Any]:
        cached = self._wf_cache["finished"].get(arn)
        if cached is not None:
            return cached
        with aws_errors(f"describing execution {arn.rsplit(':', 1)[-1]}"):
            d = self.client("stepfunctions").describe_execution(executionArn=arn)
        d.pop("ResponseMetadata", None)
        if d["status"] in FINISHED:
            if d["status"] == "FAILED" and d.get("error") == THRESHOLD_ERROR:
                d["_inferences"] = inferences_from_history(self._history(arn))
            self._wf_cache["finished"][arn] = d
        return d

    def _classes(self, state_machine: str, started: datetime | None,
                 functions: tuple[str, ...] | None) -> tuple[str, ...]:
        """The class names the machine's `functions` had when the execution started (noted each time they are
        configured); for executions from before such notes, those of the machine's endpoint now."""
        if functions is None:
            return self._current_classes(state_machine)
        noted = self._function_classes.at(functions, started) if started else None
        return noted if noted is not None else self._current_classes(state_machine)

    def _machine_functions(self, state_machine: str) -> tuple[str, ...] | None:
        """The functions the machine calls (read once); None when they could not be read this time."""
        functions = self._wf_cache["functions"]
        if state_machine not in functions:
            failed = self._wf_cache["functions_failed"].get(state_machine)
            if failed is not None and time.monotonic() - failed < FUNCTIONS_RETRY_SECONDS:
                return None  # a long listing does not ask again for each execution
            try:
                functions[state_machine] = tuple(self.describe_state_machine(state_machine).functions)
            except ResourceNotFound:  # the machine is gone (a throttle is not kept: asked again a little later)
                functions[state_machine] = ()
            except SconesError:
                self._wf_cache["functions_failed"][state_machine] = time.monotonic()
                return None
        return functions[state_machine]

    def _current_classes(self, state_machine: str) -> tuple[str, ...]:
        """The classes of the model the machine's endpoint serves now, or the staged ones."""
        cache = self._wf_cache["classes"]
        if state_machine not in cache:
            try:
                endpoint = self.describe_state_machine(state_machine).endpoint_name
                cache[state_machine] = self.describe_model(self.describe_endpoint(endpoint).model_name).classes
            except SconesError:  # the endpoint is gone: the staged classes still name the labels
                report = self.latest_stage_report()
                cache[state_machine] = tuple(report.classes) if report else ()
        return cache[state_machine]

    def _execution(self, d: dict[str, Any]) -> Execution:
        machine = d["stateMachineArn"].rsplit(":", 1)[-1]
        inp = parse_json(d.get("input")) if d.get("input") is not None else None
        out = parse_json(d.get("output")) if d.get("output") is not None else None
        inferences = find_inferences(out) if out is not None else d.get("_inferences")
        label = confidence = None
        if inferences:
            best = max(range(len(inferences)), key=inferences.__getitem__)
            confidence = inferences[best]
        start, stop = d.get("startDate"), d.get("stopDate")
        functions = self._machine_functions(machine)
        if inferences:
            classes = self._classes(machine, start, functions)
            label = classes[best] if best < len(classes) else f"class {best}"
        endpoint = self._function_classes.endpoint_at(functions, start) if functions and start else None
        threshold = input_threshold(inp)
        if threshold is None and d.get("input") is not None and functions and start:  # input unread: unknown
            threshold = self._function_classes.threshold_at(functions, start)
        return Execution(
            name=d["name"], arn=d["executionArn"], state_machine=machine, status=d["status"], start=_iso(start),
            stop=_iso(stop) if stop else None, seconds=(stop - start).total_seconds() if stop and start else None,
            error=d.get("error"), cause=d.get("cause"),
            s3_key=inp.get("s3_key") if isinstance(inp, dict) else None, label=label, confidence=confidence,
            input=inp, output=out, endpoint=endpoint, threshold=threshold,
        )

    def _arn_of_execution(self, name_or_arn: str) -> str:
        if name_or_arn.startswith("arn:"):
            return name_or_arn
        sfn = self.client("stepfunctions")
        for machine in self._resource_names("state-machine"):
            arn = self._execution_arn(machine, name_or_arn)
            try:
                with aws_errors("finding an execution"):
                    sfn.describe_execution(executionArn=arn)
                return arn
            except ResourceNotFound:
                continue
        raise ResourceNotFound(f"No execution named {name_or_arn!r}: list the executions to see their names.")

    def describe_workflow_execution(self, name_or_arn: str) -> Execution:
        return self._execution(self._describe_execution_raw(self._arn_of_execution(name_or_arn)))

    def wait_workflow_executions(self, arns: list[str], timeout: float = 300.0, poll: float = 1.0) -> list[Execution]:
        """Poll until every execution has finished (or `timeout`); their records, in the order given.
        Statuses come from ListExecutions (one call per machine a round); an execution is described
        once, when it has finished, at most DESCRIBES_PER_WAIT_ROUND a round (DescribeExecution refills
        at about 15 calls a second per account)."""
        deadline = time.monotonic() + timeout
        finished = self._wf_cache["finished"]
        while True:
            pending = [a for a in arns if a not in finished]
            done_now = []
            for machine in {a.split(":")[-2] for a in pending}:
                try:
                    status = {i["executionArn"]: i["status"] for i in self._list_execution_items(machine, 1000)}
                except ResourceNotFound:  # the machine is gone: its executions end with it
                    status = {}
                done_now += [a for a in pending if a.split(":")[-2] == machine and status.get(a) != "RUNNING"]
            if done_now:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(self._describe_execution_raw, done_now[:DESCRIBES_PER_WAIT_ROUND]))
            if all(a in finished for a in arns) or time.monotonic() > deadline:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    return [self._execution(d) for d in pool.map(self._describe_execution_raw, arns)]
            time.sleep(poll)

    def _list_execution_items(self, machine: str, limit: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        paginator = self.client("stepfunctions").get_paginator("list_executions")
        with aws_errors(f"listing the executions of {machine}"):
            for page in paginator.paginate(stateMachineArn=self._machine_arn(machine),
                                           PaginationConfig={"MaxItems": limit, "PageSize": min(limit, 1000)}):
                items.extend(page["executions"])
        return items

    def list_workflow_executions(self, state_machine: str | None = None, limit: int = 200) -> list[Execution]:
        """Newest first. A finished execution is described once and kept; a running one is described
        once for its input (at most NEW_DESCRIBES_PER_LIST new ones a call: a batch of 500 must not
        spend the account's DescribeExecution budget at every refresh), then follows ListExecutions."""
        machines = [state_machine] if state_machine else self._resource_names("state-machine")
        items: list[dict[str, Any]] = []
        for machine in machines:
            try:
                items.extend(self._list_execution_items(machine, limit))
            except ResourceNotFound:
                continue
        items.sort(key=lambda i: i["startDate"], reverse=True)
        items = items[:limit]
        finished, inputs = self._wf_cache["finished"], self._wf_cache["inputs"]
        budget = NEW_DESCRIBES_PER_LIST
        to_describe = []
        for item in items:
            arn = item["executionArn"]
            if arn in finished or (item["status"] == "RUNNING" and arn in inputs):
                continue
            if budget > 0:
                to_describe.append(arn)
                budget -= 1
        if to_describe:
            with ThreadPoolExecutor(max_workers=8) as pool:
                for d in pool.map(self._describe_execution_raw, to_describe):
                    inputs[d["executionArn"]] = d.get("input")
        out = []
        for item in items:
            arn = item["executionArn"]
            if arn in finished:
                out.append(self._execution(finished[arn]))
            else:  # running (or finished and not described yet: read at a later refresh)
                pending = item["status"] in FINISHED
                out.append(replace(self._execution({**item, "input": inputs.get(arn)}), details_pending=pending))
        return out

    def _history(self, arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        paginator = self.client("stepfunctions").get_paginator("get_execution_history")
        with aws_errors(f"reading the history of execution {arn.rsplit(':', 1)[-1]}"):
            for page in paginator.paginate(executionArn=arn, includeExecutionData=True):
                events.extend(page["events"])
        return events

    def workflow_execution_history(self, name_or_arn: str) -> list[dict[str, Any]]:
        return self._history(self._arn_of_execution(name_or_arn))

    def workflow_execution_states(self, name_or_arn: str) -> list[StateRun]:
        arn = self._arn_of_execution(name_or_arn)
        return state_runs(self.workflow_execution_definition(arn), self._history(arn))

    def workflow_execution_definition(self, name_or_arn: str) -> dict[str, Any]:
        """The definition the execution ran (DescribeStateMachineForExecution): the machine may have been
        updated since."""
        arn = self._arn_of_execution(name_or_arn)
        with aws_errors(f"reading the definition of execution {arn.rsplit(':', 1)[-1]}"):
            text = self.client("stepfunctions").describe_state_machine_for_execution(executionArn=arn)["definition"]
        return json.loads(text)

    def stop_workflow_execution(self, name_or_arn: str) -> Execution:
        arn = self._arn_of_execution(name_or_arn)
        with aws_errors(f"stopping execution {arn.rsplit(':', 1)[-1]}"):
            self.client("stepfunctions").stop_execution(executionArn=arn, error="Stopped",
                                                        cause="Stopped from the Scones dashboard.")
        return self.describe_workflow_execution(arn)

    def execution_counts(self, state_machine: str) -> tuple[int, int]:
        items = self._list_execution_items(state_machine, 1000)
        return len(items), sum(i["status"] == "RUNNING" for i in items)

    def executions_resource(self, state_machine: str) -> Resource | None:
        """Only running executions are something to clean up on AWS (the history cannot be deleted)."""
        total, running = self.execution_counts(state_machine)
        if not running:
            return None
        return Resource("executions", state_machine, f"{running} running of {total}",
                        detail="cleanup stops the running ones; AWS keeps each execution's history for 90 days",
                        busy=running_executions(running))

    def delete_executions(self, state_machine: str) -> int:
        """AWS keeps an execution's history for 90 days and offers no delete: the running ones are stopped."""
        running = [i["executionArn"] for i in self._list_execution_items(state_machine, 1000) if i["status"] == "RUNNING"]
        for arn in running:
            self.stop_workflow_execution(arn)
        return len(running)

    def workflow_step_status(self) -> StepStatus:
        machines = self._resource_names("state-machine")
        if not machines:
            return StepStatus("workflow", "not_started", "No workflow deployed yet.")
        items: list[dict[str, Any]] = []
        for machine in machines:
            try:
                items.extend(self._list_execution_items(machine, 200))
            except ResourceNotFound:
                continue
        if not items:
            return StepStatus("workflow", "not_started", "Workflow deployed; no execution yet.")
        running = sum(i["status"] == "RUNNING" for i in items)
        if running:
            return StepStatus("workflow", "in_progress", f"{running} execution(s) running.")
        ok = sum(i["status"] == "SUCCEEDED" for i in items)
        errors = self._failure_errors([i["executionArn"] for i in items if i["status"] != "SUCCEEDED"])
        low = sum(e == THRESHOLD_ERROR for e in errors.values())
        unread = len(items) - ok - len(errors)
        detail = (f"{len(items)} executions: {ok} succeeded, {low} below the threshold, "
                  f"{len(errors) - low} failed otherwise")
        if unread:
            detail += f", {unread} ended otherwise and not read yet (the Workflow page reads them)"
        return StepStatus("workflow", "done", detail + ".")

    def _failure_errors(self, arns: list[str]) -> dict[str, str]:
        """{execution ARN: its error} for the ended executions among `arns` read so far, reading at most
        NEW_DESCRIBES_PER_LIST more (DescribeExecution only: no history, so a threshold failure stays cheap).
        The error of an ended execution never changes, so each one is read once per backend."""
        known: dict[str, str] = self._wf_cache.setdefault("errors", {})
        finished = self._wf_cache["finished"]
        for arn in arns:
            if arn not in known and arn in finished:
                known[arn] = finished[arn].get("error") or ""
        missing = [a for a in arns if a not in known][:NEW_DESCRIBES_PER_LIST]
        if missing:
            def error_of(arn: str) -> tuple[str, str | None]:
                with aws_errors(f"describing execution {arn.rsplit(':', 1)[-1]}"):
                    d = self.client("stepfunctions").describe_execution(executionArn=arn)
                return arn, (d.get("error") or "") if d["status"] in FINISHED else None

            with ThreadPoolExecutor(max_workers=8) as pool:
                for arn, error in pool.map(error_of, missing):
                    if error is not None:
                        known[arn] = error
        return {a: known[a] for a in arns if a in known}

    # -- definitions -----------------------------------------------------------------------------

    def validate_definition(self, text: str) -> list[Any]:
        """Validation is the same everywhere: the local validator, as ValidateStateMachineDefinition."""
        from backend.local.states import validate_definition

        return validate_definition(text)

    def run_definition(self, text: str, input: Any = None, params: dict[str, str] | None = None) -> Any:
        raise ValidationError("'asl run' runs a definition on the local engine: use --backend local (to run on AWS, "
                              "deploy or import it as a state machine and use 'workflow run').")
