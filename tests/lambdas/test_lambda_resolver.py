"""The resolver that runs Lambda Task states: AWS's result shape and Step Functions' error names."""
from __future__ import annotations

import json

import pytest

from backend.local.lambda_resolver import LAMBDA_INVOKE, lambda_invoke_resolver
from backend.local.lambda_runtime import FunctionConfig, LambdaRuntime
from backend.local.states.errors import RUNTIME, StatesFailure, TaskError, UnknownResource

from .conftest import FUNCTIONS_DIR

ARN = "arn:aws:lambda:us-east-1:123456789012:function"


@pytest.fixture(scope="module")
def runtime():
    with LambdaRuntime([
        FunctionConfig("echo", "probes.echo", FUNCTIONS_DIR),
        FunctionConfig("fail", "probes.fail", FUNCTIONS_DIR),
        FunctionConfig("sleepy", "probes.sleep", FUNCTIONS_DIR, timeout=0.3),
        FunctionConfig("brokenImport", "broken_import.handler", FUNCTIONS_DIR),
    ]) as rt:
        yield rt


@pytest.fixture(scope="module")
def resolve(runtime):
    return lambda_invoke_resolver(runtime)


def test_lambda_invoke_returns_aws_result_shape(resolve):
    result = resolve(LAMBDA_INVOKE, {"FunctionName": "echo", "Payload": {"s3_key": "k"}}, None)
    assert set(result) == {"ExecutedVersion", "Payload", "SdkHttpMetadata", "SdkResponseMetadata", "StatusCode"}
    assert (result["StatusCode"], result["ExecutedVersion"], result["Payload"]) == (200, "$LATEST", {"s3_key": "k"})
    meta = result["SdkHttpMetadata"]
    assert meta["HttpStatusCode"] == 200
    request_id = result["SdkResponseMetadata"]["RequestId"]
    assert meta["HttpHeaders"]["x-amzn-RequestId"] == request_id
    assert meta["HttpHeaders"]["X-Amz-Executed-Version"] == "$LATEST"
    assert meta["HttpHeaders"]["Content-Length"] == str(len(json.dumps({"s3_key": "k"})))
    assert meta["AllHttpHeaders"] == {k: [v] for k, v in meta["HttpHeaders"].items()}
    json.dumps(result)  # the engine stores it as JSON


@pytest.mark.parametrize("parameters", [
    {"FunctionName": f"{ARN}:echo:$LATEST", "Payload": [1]},
    {"FunctionName": f"{ARN}:echo", "Payload": [1]},
    {"FunctionName": "echo", "Qualifier": "$LATEST", "Payload": [1]},
])
def test_function_name_may_be_an_arn_with_or_without_qualifier(resolve, parameters):
    assert resolve(LAMBDA_INVOKE, parameters, None)["Payload"] == [1]


def test_payload_defaults_to_an_empty_object(resolve):
    assert resolve(LAMBDA_INVOKE, {"FunctionName": "echo"}, None)["Payload"] == {}


def test_a_plain_function_arn_returns_the_answer_itself(resolve):
    assert resolve(f"{ARN}:echo", {"s3_key": "k"}, None) == {"s3_key": "k"}
    assert resolve(f"{ARN}:echo:$LATEST", [1, 2], None) == [1, 2]


@pytest.mark.parametrize("resource", [LAMBDA_INVOKE, f"{ARN}:fail"])
def test_a_handler_exception_fails_the_task_with_its_error_type(resolve, resource):
    params = {"FunctionName": "fail", "Payload": {"what": "purpose"}} if resource == LAMBDA_INVOKE else {"what": "purpose"}
    with pytest.raises(TaskError) as caught:
        resolve(resource, params, None)
    assert caught.value.error == "CustomFailure"
    cause = json.loads(caught.value.cause)
    assert set(cause) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert (cause["errorType"], cause["errorMessage"]) == ("CustomFailure", "it broke on purpose")


def test_a_runtime_error_keeps_its_lambda_name(resolve):
    with pytest.raises(TaskError) as caught:
        resolve(LAMBDA_INVOKE, {"FunctionName": "brokenImport"}, None)
    assert caught.value.error == "Runtime.ImportModuleError"
    assert "Unable to import module 'broken_import'" in json.loads(caught.value.cause)["errorMessage"]


def test_a_timeout_is_lambda_unknown(resolve):
    with pytest.raises(TaskError) as caught:
        resolve(LAMBDA_INVOKE, {"FunctionName": "sleepy", "Payload": {"seconds": 10}}, None)
    assert caught.value.error == "Lambda.Unknown"
    assert caught.value.cause.startswith(
        "The cause could not be determined because Lambda did not return an error type. Returned payload: {")
    assert "Task timed out after 0.30 seconds" in caught.value.cause


@pytest.mark.parametrize("resource, params", [
    (LAMBDA_INVOKE, {"FunctionName": "serializeImageData", "Payload": {}}),
    (f"{ARN}:serializeImageData", {}),
])
def test_an_unknown_function_is_lambda_resource_not_found(resolve, resource, params):
    with pytest.raises(TaskError) as caught:
        resolve(resource, params, None)
    assert caught.value.error == "Lambda.ResourceNotFoundException"
    assert caught.value.cause.startswith("Function not found: arn:aws:lambda:us-east-1:123456789012:function:serializeImageData")
    assert "Status Code: 404; Error Code: ResourceNotFoundException" in caught.value.cause


def test_other_resources_are_left_to_other_resolvers(resolve):
    for resource in ("arn:aws:states:::sagemaker:createTransformJob.sync", "arn:aws:states:::lambda:invoke.waitForTaskToken",
                     "arn:aws:states:us-east-1:123456789012:activity:review"):
        with pytest.raises(UnknownResource) as caught:
            resolve(resource, {}, None)
        assert caught.value.resource == resource


@pytest.mark.parametrize("parameters", [None, {}, {"FunctionName": 5}, ["echo"]])
def test_lambda_invoke_without_function_name_is_a_runtime_error(resolve, parameters):
    with pytest.raises(StatesFailure) as caught:
        resolve(LAMBDA_INVOKE, parameters, None)
    assert caught.value.error == RUNTIME and "FunctionName" in caught.value.cause


def test_event_and_dry_run_invocation_types(resolve):
    event = resolve(LAMBDA_INVOKE, {"FunctionName": "echo", "InvocationType": "Event", "Payload": {}}, None)
    assert (event["StatusCode"], event["Payload"], event["SdkHttpMetadata"]["HttpStatusCode"]) == (202, "", 202)
    assert resolve(LAMBDA_INVOKE, {"FunctionName": "echo", "InvocationType": "DryRun"}, None)["StatusCode"] == 204
    with pytest.raises(TaskError) as caught:
        resolve(LAMBDA_INVOKE, {"FunctionName": "nope", "InvocationType": "Event"}, None)
    assert caught.value.error == "Lambda.ResourceNotFoundException"
    with pytest.raises(TaskError) as caught:
        resolve(LAMBDA_INVOKE, {"FunctionName": "echo", "InvocationType": "Later"}, None)
    assert caught.value.error == "Lambda.InvalidParameterValueException"
