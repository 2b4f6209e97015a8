"""Deployment on SageMaker: endpoint configs with DataCaptureConfig, endpoints, InvokeEndpoint.

Same method names and records as the local DeploymentService. Differences that AWS imposes are
said in one sentence: an AWS endpoint cannot be paused (delete it to stop billing), and a Failed
endpoint is started again by recreating it from its config.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from backend.api import (
    VARIANT_NAME, AccessDenied, CaptureConfig, Endpoint, EndpointConfig, Prediction, ResourceInUse,
    ResourceLimitExceeded, ResourceNotFound, SconesError, StepStatus, ValidationError, failed_endpoints_note,
)
from backend.aws.errors import aws_errors
from backend.aws.s3 import PROJECT_TAG

DEFAULT_CAPTURE_PREFIX = "data_capture"
RETENTION_RULE_ID = "scones-capture-retention"  # the lifecycle rule this project sets on its capture prefix
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def _iso(value: Any) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else ""


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValidationError(f"{what} {name!r} is not valid: use 1 to 63 letters, digits and hyphens.")
    return name


def data_capture_config(capture: CaptureConfig) -> dict[str, Any]:
    options = ([{"CaptureMode": "Input"}] if capture.capture_input else []) + \
              ([{"CaptureMode": "Output"}] if capture.capture_output else [])
    return {"EnableCapture": bool(capture.enabled), "InitialSamplingPercentage": int(capture.sampling_percent),
            "DestinationS3Uri": capture.destination, "CaptureOptions": options,
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}


def capture_from(config: dict[str, Any] | None) -> CaptureConfig:
    if not config:
        return CaptureConfig(enabled=False, sampling_percent=0)
    modes = {o["CaptureMode"] for o in config.get("CaptureOptions", [])}
    return CaptureConfig(bool(config.get("EnableCapture")), int(config.get("InitialSamplingPercentage", 0)),
                         config.get("DestinationS3Uri", ""), "Input" in modes, "Output" in modes)


class AwsDeploymentMixin:
    """Deployment methods of the AWS backend (the names the pages and the CLI call)."""

    recreate_wait_seconds = 20.0  # how long start/deploy waits for a Failed endpoint's deletion
    restartable_statuses = ("Failed",)  # what start_endpoint starts again: SageMaker cannot update a Failed one

    def default_capture_destination(self) -> str:
        return f"s3://{self.objects.bucket}/{DEFAULT_CAPTURE_PREFIX}"

    def endpoint_cost_notice(self) -> str:
        return (f"An endpoint runs on {self.settings.endpoint_instance_type} and is billed every hour it exists, "
                "busy or idle: delete it when you are done.")

    # -- endpoint configs --------------------------------------------------------------------

    def create_endpoint_config(self, config_name: str, model_name: str, instance_type: str | None = None,
                               capture: CaptureConfig | None = None) -> EndpointConfig:
        check_name(config_name, "Endpoint config name")
        capture = capture or CaptureConfig(enabled=False, sampling_percent=0)
        if not 0 <= int(capture.sampling_percent) <= 100:
            raise ValidationError(f"Sampling percentage {capture.sampling_percent!r} is not valid: use 0 to 100.")
        if capture.enabled and not (capture.capture_input or capture.capture_output):
            raise ValidationError("Capture options are empty: capture Input, Output or both, or turn capture off.")
        capture = CaptureConfig(capture.enabled, int(capture.sampling_percent),
                                capture.destination or self.default_capture_destination(),
                                capture.capture_input, capture.capture_output)
        itype = instance_type or self.settings.endpoint_instance_type
        request: dict[str, Any] = {
            "EndpointConfigName": config_name,
            "ProductionVariants": [{"VariantName": VARIANT_NAME, "ModelName": model_name,
                                    "InitialInstanceCount": 1, "InstanceType": itype, "InitialVariantWeight": 1.0}],
            "Tags": [PROJECT_TAG],
        }
        if capture.enabled:
            request["DataCaptureConfig"] = data_capture_config(capture)
        with aws_errors(f"creating endpoint config {config_name}"):
            self.client("sagemaker").create_endpoint_config(**request)
        if capture.enabled:
            self.capture_retention_notes[config_name] = self._expire_capture(capture.destination)
        self._record_resource("endpoint-config", config_name)
        return self.describe_endpoint_config(config_name)

    @cached_property
    def capture_retention_notes(self) -> dict[str, str]:
        """Endpoint config, and endpoint deployed with it -> why its capture destination got no lifecycle rule
        ("" when it did)."""
        return {}

    def capture_retention_note(self, endpoint: Endpoint) -> str:
        """Why the capture of the config an endpoint was last deployed with here got no S3 lifecycle rule ('' when
        it did, or when this process did not deploy it). By name: during an update the endpoint still names its
        old config."""
        notes = self.capture_retention_notes
        return notes.get(endpoint.endpoint_name, notes.get(endpoint.config_name, ""))

    def _expire_capture(self, destination: str) -> str:
        """Captured files expire on S3 itself after the retention (SCONES_CAPTURE_RETENTION_DAYS, whole days):
        one lifecycle rule on the capture prefix of the workspace bucket, so old capture goes even when no
        Monitor page runs; the bucket's other rules stay as they are. '' when set, else why not (a bucket that
        is not this workspace's, or a prefix outside data_capture/ that may hold other data, is left alone; a role
        that may not set lifecycle rules leaves the trimming to Monitor)."""
        import math

        from botocore.exceptions import ClientError

        from backend.monitoring import capture_limits

        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        if bucket != self.objects.bucket:
            return f"{destination} is not in this workspace's bucket: its capture gets no lifecycle rule from here."
        if prefix != DEFAULT_CAPTURE_PREFIX and not prefix.startswith(DEFAULT_CAPTURE_PREFIX + "/"):
            # another prefix may hold what is not capture (output/, train/...): an expiry there could delete it
            return (f"{destination} is not under {DEFAULT_CAPTURE_PREFIX}/, so no lifecycle rule is set on it (one "
                    "could expire other data there); the Monitor page trims the capture when it runs.")
        s3 = self.client("s3")
        try:
            days = max(1, math.ceil(capture_limits()[0]))  # a bad SCONES_CAPTURE_RETENTION_DAYS is said, not fatal here
            with aws_errors(f"setting the capture retention on bucket {bucket}"):
                try:
                    current = s3.get_bucket_lifecycle_configuration(Bucket=bucket)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
                        raise
                    current = {}
                rules = current.get("Rules", [])
                rule: dict[str, Any] = {"ID": f"{RETENTION_RULE_ID}:{prefix}"[:255], "Status": "Enabled",
                                        "Expiration": {"Days": days}}
                if any("Prefix" in r for r in rules):  # the bucket's rules use the older form: S3 refuses a mix
                    rule["Prefix"] = prefix + "/"
                else:
                    rule["Filter"] = {"Prefix": prefix + "/"}
                if rule in rules:
                    return ""
                request: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {
                    "Rules": [r for r in rules if r.get("ID") != rule["ID"]] + [rule]}}
                if current.get("TransitionDefaultMinimumObjectSize"):  # the bucket's setting, kept as it is
                    request["TransitionDefaultMinimumObjectSize"] = current["TransitionDefaultMinimumObjectSize"]
                s3.put_bucket_lifecycle_configuration(**request)
        except SconesError as exc:
            return f"Capture in {destination} has no lifecycle rule ({exc}); the Monitor page trims it when it runs."
        return ""

    def describe_endpoint_config(self, config_name: str) -> EndpointConfig:
        return self._once("endpoint-config", config_name, self._describe_endpoint_config)

    def _describe_endpoint_config(self, config_name: str) -> EndpointConfig:
        with aws_errors(f"describing endpoint config {config_name}"):
            d = self.client("sagemaker").describe_endpoint_config(EndpointConfigName=config_name)
        variant = d["ProductionVariants"][0]
        return EndpointConfig(config_name=d.get("EndpointConfigName", config_name), model_name=variant["ModelName"],
                              instance_type=variant.get("InstanceType", ""),
                              capture=capture_from(d.get("DataCaptureConfig")), created=_iso(d.get("CreationTime")),
                              variant_name=variant.get("VariantName", VARIANT_NAME))

    def list_endpoint_configs(self) -> list[EndpointConfig]:
        return self._describe_all("endpoint-config", self.describe_endpoint_config)

    def delete_endpoint_config(self, config_name: str) -> None:
        """Refused while an endpoint uses it, as locally: SageMaker would delete it, and the endpoint (still
        running and billing) could then no longer be described, updated or found by a cleanup."""
        user = next((e for e in self.live_endpoints() if e.config_name == config_name), None)
        if user is not None:
            raise ResourceInUse(f"Endpoint {user.endpoint_name} uses endpoint configuration {config_name}: "
                                "delete or update the endpoint first.")
        with aws_errors(f"deleting endpoint config {config_name}"):
            self.client("sagemaker").delete_endpoint_config(EndpointConfigName=config_name)
        self._forget_resource("endpoint-config", config_name)

    # -- endpoints ---------------------------------------------------------------------------

    def create_endpoint(self, endpoint_name: str, config_name: str) -> str:
        check_name(endpoint_name, "Endpoint name")
        try:
            with aws_errors(f"creating endpoint {endpoint_name}"):
                self.client("sagemaker").create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name,
                                                         Tags=[PROJECT_TAG])
        except ResourceLimitExceeded as exc:
            raise self._quota_error(exc, config_name) from None
        self._record_resource("endpoint", endpoint_name)
        self._record_resource("capture", endpoint_name)  # its capture folder is ours, even once it is gone
        return endpoint_name

    def _quota_error(self, exc: ResourceLimitExceeded, config_name: str) -> ResourceLimitExceeded:
        """New accounts often have no quota for an endpoint instance type: say which one to ask for."""
        try:
            itype = self.describe_endpoint_config(config_name).instance_type
        except SconesError:
            itype = self.settings.endpoint_instance_type
        return ResourceLimitExceeded(
            f"The account's quota for {itype} endpoint usage is used up or 0 (new accounts often have none): "
            f"request an increase for '{itype} for endpoint usage' in Service Quotas, or choose another instance "
            f"type. ({exc})")

    def describe_endpoint(self, endpoint_name: str) -> Endpoint:
        return self._once("endpoint", endpoint_name, self._describe_endpoint)

    def _describe_endpoint(self, endpoint_name: str) -> Endpoint:
        with aws_errors(f"describing endpoint {endpoint_name}"):
            d = self.client("sagemaker").describe_endpoint(EndpointName=endpoint_name)
        reason = d.get("FailureReason") or ""
        try:
            config = self.describe_endpoint_config(d["EndpointConfigName"])
        except ResourceNotFound:  # deleted elsewhere: the endpoint still runs (and bills), so it stays listed
            config = EndpointConfig(config_name=d["EndpointConfigName"], model_name="", instance_type="",
                                    capture=capture_from(None), created="")
            reason = reason or (f"Its endpoint configuration {d['EndpointConfigName']} was deleted outside this "
                                "dashboard: the endpoint still runs and bills; delete it, or update it with a new "
                                "configuration.")
        # SageMaker matches names without case but InvokeEndpoint wants the name as created: use its own
        return Endpoint(endpoint_name=d.get("EndpointName", endpoint_name), status=d["EndpointStatus"],
                        config_name=config.config_name,
                        model_name=config.model_name, created=_iso(d.get("CreationTime")),
                        updated=_iso(d.get("LastModifiedTime")), capture=config.capture,
                        failure_reason=reason, url="", backend="aws")

    def list_endpoints(self) -> list[Endpoint]:
        return self._describe_all("endpoint", self.describe_endpoint)

    def wait_endpoint(self, endpoint_name: str, timeout: float = 1800.0, poll: float = 15.0) -> Endpoint:
        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.describe_endpoint(endpoint_name)
            if endpoint.status not in BUSY or time.monotonic() > deadline:
                return endpoint
            time.sleep(poll)

    def update_endpoint(self, endpoint_name: str, config_name: str) -> str:
        try:
            with aws_errors(f"updating endpoint {endpoint_name}"):
                self.client("sagemaker").update_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
        except ResourceLimitExceeded as exc:  # an update starts the new instances before it stops the old
            raise self._quota_error(exc, config_name) from None
        return endpoint_name

    def start_endpoint(self, endpoint_name: str) -> Endpoint:
        """A Failed AWS endpoint cannot be updated: recreate it from its config."""
        endpoint = self.describe_endpoint(endpoint_name)
        if endpoint.status not in self.restartable_statuses:  # running or on its way: nothing to start, as locally
            return endpoint
        self._recreate(endpoint_name, endpoint.config_name)
        return self.describe_endpoint(endpoint_name)

    def _recreate(self, endpoint_name: str, config_name: str) -> None:
        """DeleteEndpoint is all SageMaker allows on a Failed endpoint, and it refuses CreateEndpoint of that
        name while the old one shows Deleting (minutes): wait a little, then say so rather than fail."""
        self.delete_endpoint(endpoint_name)
        deadline = time.monotonic() + self.recreate_wait_seconds
        while True:
            try:
                status = self.describe_endpoint(endpoint_name).status
            except ResourceNotFound:
                break
            if time.monotonic() > deadline:
                raise ResourceInUse(
                    f"Endpoint {endpoint_name} had Failed and SageMaker is deleting it ({status}, which takes a few "
                    "minutes); deploy it again once it is no longer listed.")
            time.sleep(2.0)
        self.create_endpoint(endpoint_name, config_name)

    def stop_endpoint(self, endpoint_name: str) -> Endpoint:
        raise ValidationError(f"An AWS endpoint cannot be paused: delete {endpoint_name} to stop its billing "
                              "(its config stays, so it can be created again).")

    def delete_endpoint(self, endpoint_name: str) -> None:
        with aws_errors(f"deleting endpoint {endpoint_name}"):
            self.client("sagemaker").delete_endpoint(EndpointName=endpoint_name)
        self._forget_resource("endpoint", endpoint_name)

    def deploy(self, model_name: str, endpoint_name: str | None = None, capture_percent: int = 100, *,
               capture_enabled: bool = True, capture_input: bool = True, capture_output: bool = True,
               destination: str | None = None, instance_type: str | None = None) -> Endpoint:
        endpoint_name = check_name(endpoint_name or model_name, "Endpoint name")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        config_name = f"{endpoint_name[:40]}-{stamp}-{secrets.token_hex(2)}"
        capture = CaptureConfig(capture_enabled, capture_percent, destination or "", capture_input, capture_output)
        try:
            existing = self.describe_endpoint(endpoint_name)
        except ResourceNotFound:
            existing = None
        if existing and existing.status in BUSY:
            raise ResourceInUse(f"Endpoint {endpoint_name} is {existing.status}: wait until it is InService.")
        self.create_endpoint_config(config_name, model_name, instance_type, capture)
        self.capture_retention_notes[endpoint_name] = self.capture_retention_notes.get(config_name, "")
        try:
            if existing is None:
                self.create_endpoint(endpoint_name, config_name)
            elif existing.status == "Failed":
                self._recreate(endpoint_name, config_name)
            else:
                self.update_endpoint(endpoint_name, config_name)
                self._record_resource("endpoint", endpoint_name)  # it serves this workspace's model now
                self._record_resource("capture", endpoint_name)
        except (ResourceLimitExceeded, ValidationError, ResourceInUse, AccessDenied):
            # refused for certain (a quota of 0, say): the new config serves nothing, and goes. A timeout is not
            # certain (the endpoint may be Creating on it): the config stays, listed by the inventory.
            try:
                self.delete_endpoint_config(config_name)
            except SconesError:
                pass  # the inventory lists it, and cleanup deletes it
            raise
        return self.describe_endpoint(endpoint_name)

    def invoke_endpoint(self, endpoint_name: str, body: bytes, content_type: str = "image/png") -> Prediction:
        if not body:
            raise ValidationError("The request body is empty: send an image (image/png, image/jpeg or application/x-image).")
        with aws_errors(f"invoking endpoint {endpoint_name}"):
            r = self.client("sagemaker-runtime").invoke_endpoint(EndpointName=endpoint_name, ContentType=content_type,
                                                                 Accept="application/json", Body=body)
        raw = r["Body"].read()
        try:
            probabilities = tuple(float(p) for p in json.loads(raw))
        except (ValueError, TypeError):
            raise SconesError(f"Endpoint {endpoint_name} answered something that is not a list of probabilities.") from None
        try:  # the classes of the model the endpoint serves (a restage since must not relabel it)
            classes = self.describe_model(self.describe_endpoint(endpoint_name).model_name).classes
        except SconesError:  # gone, throttled, or not readable: the prediction stands, labelled as staged
            report = self.latest_stage_report()
            classes = tuple(report.classes) if report else ()
        if len(classes) != len(probabilities):
            classes = tuple(f"class {i}" for i in range(len(probabilities)))
        return Prediction(probabilities, classes)

    def endpoint_log(self, endpoint_name: str) -> str:
        logs = self.client("logs")
        out: list[str] = []
        with aws_errors(f"reading the logs of endpoint {endpoint_name}"):
            try:
                for page in logs.get_paginator("filter_log_events").paginate(
                        logGroupName=f"/aws/sagemaker/Endpoints/{endpoint_name}"):
                    out += [e["message"] for e in page.get("events", [])]
            except logs.exceptions.ResourceNotFoundException:
                pass
        if not out:  # no log yet, or no such endpoint: an unknown name is ResourceNotFound, as locally
            self.describe_endpoint(endpoint_name)
        return "\n".join(out)

    def deployment_step_status(self) -> StepStatus:
        endpoints = self.list_endpoints()
        if not endpoints:
            return StepStatus("deploy", "not_started", "No endpoint yet.")
        serving = [e for e in endpoints if e.status == "InService"]
        if serving:
            return StepStatus("deploy", "done", f"{serving[0].endpoint_name} is InService on SageMaker."
                              + failed_endpoints_note(endpoints, serving[0].endpoint_name))
        busy = [e for e in endpoints if e.status in BUSY]
        if busy:
            return StepStatus("deploy", "in_progress", f"{busy[0].endpoint_name} is {busy[0].status}."
                              + failed_endpoints_note(endpoints, busy[0].endpoint_name))
        e = endpoints[0]
        return StepStatus("deploy", "failed", f"{e.endpoint_name} is {e.status}: {e.failure_reason}")
