"""Lets the States engine run Lambda Task states on the local Lambda runtime.

Two kinds of Resource map to `LambdaRuntime.invoke`, as on Step Functions:

- `arn:aws:states:::lambda:invoke` (the optimized integration), Parameters `FunctionName`
  (name, `name:qualifier` or ARN), `Payload` (any JSON; `{}` when absent), `InvocationType`
  (`RequestResponse`, or `Event`: started in the background, answered 202). Result:
  `{"ExecutedVersion", "Payload", "SdkHttpMetadata", "SdkResponseMetadata", "StatusCode"}`.
- a plain function ARN (`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`), the
  older integration: the state's input is the event and the result is the function's answer.

A function error fails the task with Step Functions' names: the handler's `errorType` as the
error and Lambda's error object, as a JSON string, as the cause; a timeout (no errorType) is
`Lambda.Unknown`, as Step Functions reports it. An unknown function is
`Lambda.ResourceNotFoundException`. Any other Resource raises `UnknownResource`, so the engine
can try another resolver.
"""
from __future__ import annotations

import json
import threading
import uuid
from email.utils import formatdate
from typing import Any, Callable

from backend.api import SconesError
from backend.local.lambda_runtime import InvokeResult, LambdaRuntime
from backend.local.states.errors import RUNTIME, StatesFailure, TaskError, UnknownResource
from backend.local.states.validation import FUNCTION_ARN

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_UNKNOWN = "Lambda.Unknown"
_INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")

Resolver = Callable[[str, Any, Any], Any]


def lambda_invoke_resolver(runtime: LambdaRuntime) -> Resolver:
    """A resolver `(resource, parameters, context) -> result` for the States engine."""

    def resolve(resource: str, parameters: Any, context: Any) -> Any:
        if resource == LAMBDA_INVOKE:
            return _invoke_integration(runtime, parameters)
        if isinstance(resource, str) and FUNCTION_ARN.match(resource):
            return _invoke(runtime, resource, parameters).payload
        raise UnknownResource(resource, "Locally only Lambda tasks run (arn:aws:states:::lambda:invoke or a "
                                        "function ARN): run this definition on AWS, or make the task a Lambda task.")

    return resolve


def _invoke_integration(runtime: LambdaRuntime, parameters: Any) -> dict[str, Any]:
    if not isinstance(parameters, dict) or not isinstance(parameters.get("FunctionName"), str):
        raise StatesFailure(RUNTIME, "The lambda:invoke task needs Parameters with a 'FunctionName' string "
                                     '(for example {"FunctionName": "serializeImageData", "Payload.$": "$"}).')
    function = parameters["FunctionName"]
    if parameters.get("Qualifier"):
        function = f"{function}:{parameters['Qualifier']}"
    invocation_type = parameters.get("InvocationType", "RequestResponse")
    if invocation_type not in _INVOCATION_TYPES:
        raise TaskError("Lambda.InvalidParameterValueException",
                        f"InvocationType {invocation_type!r} is not valid: use one of {', '.join(_INVOCATION_TYPES)}.")
    payload = parameters.get("Payload", {})
    if invocation_type == "RequestResponse":
        result = _invoke(runtime, function, payload)
        return _integration_result(200, result.payload, result.request_id, result.payload_bytes)
    _check_function(runtime, function)
    request_id = str(uuid.uuid4())
    if invocation_type == "Event":  # queued on AWS: the task goes on without the answer
        threading.Thread(target=_invoke_quietly, args=(runtime, function, payload),
                         name=f"lambda-event-{request_id[:8]}", daemon=True).start()
        return _integration_result(202, "", request_id, 0)
    return _integration_result(204, "", request_id, 0)


def _invoke(runtime: LambdaRuntime, function: str, payload: Any) -> InvokeResult:
    try:
        result = runtime.invoke(function, payload)
    except SconesError as exc:
        raise _service_error(exc) from None
    if result.function_error:
        raise _function_error(result)
    return result


def _invoke_quietly(runtime: LambdaRuntime, function: str, payload: Any) -> None:
    """An Event invocation: its result and errors go to the function's log only, as on AWS."""
    try:
        runtime.invoke(function, payload)
    except SconesError:
        pass


def _check_function(runtime: LambdaRuntime, function: str) -> None:
    try:
        runtime.function(function)
    except SconesError as exc:
        raise _service_error(exc) from None


def _function_error(result: InvokeResult) -> TaskError:
    payload = result.payload
    error_type = payload.get("errorType") if isinstance(payload, dict) else None
    text = json.dumps(payload)
    if not error_type:
        return TaskError(LAMBDA_UNKNOWN, "The cause could not be determined because Lambda did not return "
                                         f"an error type. Returned payload: {text}")
    return TaskError(str(error_type), text)


def _service_error(exc: SconesError) -> TaskError:
    """A Lambda API error (the call itself failed), named and described as Step Functions does."""
    status = 404 if exc.code == "ResourceNotFoundException" else 400
    return TaskError(
        f"Lambda.{exc.code}",
        f"{exc.message} (Service: AWSLambda; Status Code: {status}; Error Code: {exc.code}; "
        f"Request ID: {uuid.uuid4()}; Proxy: null)",
    )


def _integration_result(status: int, payload: Any, request_id: str, size: int) -> dict[str, Any]:
    headers = {
        "Connection": "keep-alive",
        "Content-Length": str(size),
        "Content-Type": "application/json",
        "Date": formatdate(usegmt=True),
        "X-Amz-Executed-Version": "$LATEST",
        "x-amzn-Remapped-Content-Length": "0",
        "x-amzn-RequestId": request_id,
        "X-Amzn-Trace-Id": f"root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};sampled=0",
    }
    return {
        "ExecutedVersion": "$LATEST",
        "Payload": payload,
        "SdkHttpMetadata": {
            "AllHttpHeaders": {k: [v] for k, v in headers.items()},
            "HttpHeaders": headers,
            "HttpStatusCode": status,
        },
        "SdkResponseMetadata": {"RequestId": request_id},
        "StatusCode": status,
    }
