"""The AWS backend: the shared workspace records, with the bucket on S3.

Staging runs in a local worker process (reading and filtering the archive is quick) and uploads
to S3; training and endpoints run on SageMaker; the workflow on Lambda and Step Functions. The
inventory starts from the names this workspace kept and adds whatever else carries the project tag.
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Callable, Iterator

import boto3
from botocore.config import Config

from backend.api import AccessDenied, CredentialsError, Resource, ResourceNotFound, StepStatus
from backend.aws.errors import REGION_HINT, aws_errors
from backend.aws.s3 import PROJECT_TAG, S3Bucket
from backend.aws.costs import AwsCostMixin
from backend.aws.deployment import AwsDeploymentMixin
from backend.aws.iam import AwsProvisioningMixin
from backend.aws.training import AwsTrainingMixin
from backend.aws.workflow import AwsWorkflowMixin
from backend.aws import pricing
from backend.inventory import InventoryMixin
from backend.monitoring import MonitoringBackendMixin
from backend.settings import Settings
from backend.workspace import WorkspaceBackend

TAG_CACHE_S = 5.0
# Resource Groups Tagging API type filter -> (ARN resource type, inventory kind)
TAGGED_TYPES = ("sagemaker:endpoint", "sagemaker:endpoint-config", "sagemaker:model", "sagemaker:training-job",
                "lambda:function", "states:stateMachine")
TAGGED_KINDS = {"endpoint/": "endpoint", "endpoint-config/": "endpoint-config", "model/": "model",
                "training-job/": "training-job", "function:": "lambda-function", "stateMachine:": "state-machine"}
TAGGED_ARN_RE = re.compile(r"arn:aws[a-z-]*:(?:sagemaker|lambda|states):(?P<region>[a-z0-9-]+):\d{12}:"
                           r"(?P<type>endpoint-config/|endpoint/|model/|training-job/|function:|stateMachine:)"
                           r"(?P<name>[A-Za-z0-9_.-]+)")
# A network that accepts connections but never answers is waited for this long per attempt (botocore's
# default is 60 s for each, so five attempts hung a command for five minutes without a word).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 20
RUNTIME_READ_TIMEOUT = 70  # InvokeEndpoint: SageMaker gives a model 60 s to answer


def client_config(service: str) -> Config:
    return Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16,
                  user_agent_extra="scones-dashboard", connect_timeout=CONNECT_TIMEOUT,
                  read_timeout=RUNTIME_READ_TIMEOUT if service == "sagemaker-runtime" else READ_TIMEOUT)


class AwsBackend(MonitoringBackendMixin, AwsTrainingMixin, AwsDeploymentMixin, AwsWorkflowMixin, AwsCostMixin,
                 AwsProvisioningMixin, InventoryMixin, WorkspaceBackend):
    name = "aws"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        with aws_errors("reading the AWS configuration"):
            self.session = boto3.session.Session(region_name=settings.aws_region or None)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._reads = threading.local()

    @cached_property
    def region(self) -> str:
        if not self.session.region_name:
            raise CredentialsError(f"No AWS region is set: {REGION_HINT}.")
        return self.session.region_name

    def client(self, service: str) -> Any:
        """One client per service for the backend's life (its connections are reused; clients are
        thread-safe, creating them from one session is not: hence the lock)."""
        clients = self._clients
        found = clients.get(service)
        if found is not None:
            return found
        with self._clients_lock, aws_errors(f"creating the {service} client"):
            if service not in clients:
                clients[service] = self.session.client(service, region_name=self.region,
                                                          config=client_config(service))
            return clients[service]

    def check_ready_to_stage(self) -> None:
        self.objects  # the region, the credentials (sts:GetCallerIdentity) and so the bucket's name

    @cached_property
    def account_id(self) -> str:
        with aws_errors("the identity check (sts:GetCallerIdentity)"):
            return self.client("sts").get_caller_identity()["Account"]

    @cached_property
    def objects(self) -> S3Bucket:  # type: ignore[override]
        bucket = self.settings.bucket or f"sagemaker-{self.region}-{self.account_id}"
        return S3Bucket(self.client("s3"), bucket, self.region)

    def capture_bucket(self, bucket: str) -> S3Bucket:
        """Capture may go to another bucket than the workspace's: read it with the same client."""
        return self.objects if bucket == self.objects.bucket else S3Bucket(self.client("s3"), bucket, self.region)

    ROLE_SETTINGS = {"sagemaker": ("sagemaker_role_arn", "SCONES_SAGEMAKER_ROLE_ARN", "SageMaker execution"),
                     "lambda": ("lambda_role_arn", "SCONES_LAMBDA_ROLE_ARN", "Lambda execution"),
                     "states": ("states_role_arn", "SCONES_STATES_ROLE_ARN", "Step Functions")}

    def role_arn(self, kind: str) -> str:
        """The IAM role ARN for `kind` (sagemaker, lambda, states): the setting, else the role this workspace
        provisioned; one clear sentence when there is neither."""
        attr, env, what = self.ROLE_SETTINGS[kind]
        arn = getattr(self.settings, attr) or self.provisioned_role_arn(kind)
        if not arn:
            raise CredentialsError(f"No {what} role is set: set {env} to the ARN of a role {what.split()[0]} can "
                                   "assume, or provision them (Home page 'Provision roles' / 'scones roles --yes'); "
                                   "see README, Running on AWS.")
        return arn

    def describe_workspace(self) -> dict[str, str]:
        return {**super().describe_workspace(), "region": self.region, "account": self.account_id}

    def resource_step_statuses(self) -> dict[str, StepStatus]:
        return {"train": self.training_step_status(), "deploy": self.deployment_step_status(),
                "workflow": self.workflow_step_status(), "monitor": self.monitoring.monitor_step_status()}

    def step_statuses(self) -> dict[str, StepStatus]:
        with self._describing_once():  # one Home poll describes each endpoint once (deploy and workflow steps)
            return super().step_statuses()

    # -- names of what this workspace created (the inventory starts from these and the tag) ---

    def _record_resource(self, kind: str, name: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO aws_resources(kind, name, created) VALUES(?,?,?)",
                        (kind, name, datetime.now(timezone.utc).isoformat()))
        self.__dict__.pop("_tagged_cache", None)

    def _forget_resource(self, kind: str, name: str) -> None:
        self.db.execute("DELETE FROM aws_resources WHERE kind=? AND name=?", (kind, name))
        self.__dict__.pop("_tagged_cache", None)

    # -- inventory: what bills by the hour, and what it has cost so far ----------------------------

    def hourly_usd(self, kind: str, status: str, obj: Any) -> float | None:
        if kind == "endpoint" and status in ("Creating", "InService", "Updating", "SystemUpdating", "RollingBack"):
            try:
                return pricing.hosting_price(self.describe_endpoint_config(obj.config_name).instance_type)
            except ResourceNotFound:  # its config was deleted elsewhere: the instance type is unknown
                return None
        if kind == "training-job" and status in ("InProgress", "Stopping"):
            return pricing.training_price(self.settings.training_instance_type)
        return None

    @contextmanager
    def _describing_once(self) -> Iterator[None]:
        """Within it, this thread describes each endpoint, endpoint config, model and training job once:
        an inventory reads each several times (listing, pricing, cost so far), a cleanup plan again."""
        outer = getattr(self._reads, "memo", None)
        if outer is None:
            self._reads.memo = {}
        try:
            yield
        finally:
            if outer is None:
                self._reads.memo = None

    def _once(self, kind: str, name: str, describe: Callable[[str], Any]) -> Any:
        """`describe(name)`, or what it gave before inside _describing_once()."""
        memo = getattr(self._reads, "memo", None)
        if memo is None:
            return describe(name)
        if (kind, name) not in memo:
            memo[(kind, name)] = describe(name)
        return memo[(kind, name)]

    def inventory(self) -> list[Resource]:
        with self._describing_once():
            return self._priced_inventory()

    def _priced_inventory(self) -> list[Resource]:
        out = []
        for r in super().inventory():
            if r.hourly_usd is not None and r.kind == "endpoint":
                since = self.describe_endpoint(r.name).created
                hours = (datetime.now(timezone.utc) - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds() / 3600
                r = replace(r, detail=f"{r.detail}; about ${r.hourly_usd * hours:.2f} since {since} "
                                      f"(prices of {pricing.PRICES_AS_OF}, {pricing.PRICE_REGION})")
            elif r.hourly_usd is not None and r.kind == "training-job":
                job = self.describe_training_job(r.name)
                r = replace(r, detail=f"{r.detail}; about ${r.hourly_usd * job.seconds / 3600:.2f} for {job.seconds:.0f} s "
                                      f"so far (prices of {pricing.PRICES_AS_OF}, {pricing.PRICE_REGION})")
            out.append(r)
        return out

    def _resource_names(self, kind: str) -> list[str]:
        """What this workspace created (names it kept), then what else carries the project tag in this
        region (created by another workspace, or by one whose records are lost)."""
        names = self._kept_names(kind)
        known = {n.lower() for n in names}  # SageMaker writes names in lower case in its ARNs
        return names + [n for n in self._tagged_names().get(kind, []) if n.lower() not in known]

    def _describe_all(self, kind: str, describe: Callable[[str], Any]) -> list[Any]:
        """`describe(name)` for each resource of `kind`; one deleted elsewhere is skipped (and, if this
        workspace kept its name, forgotten)."""
        out = []
        for name in self._resource_names(kind):
            try:
                out.append(describe(name))
            except ResourceNotFound:
                self._forget_resource(kind, name)
        return out

    def not_created_here(self, resources: list[Resource]) -> set[tuple[str, str]]:
        """What only the project tag found (resources of a tagged kind whose name this workspace did not
        keep; a state machine's executions go with it) and the roles it adopted. The data is the bucket's."""
        kept: dict[str, set[str]] = {}
        adopted = self.adopted_roles()
        out = {("iam-role", r.name) for r in resources if r.kind == "iam-role" and r.name in adopted}
        for r in resources:
            kind = "state-machine" if r.kind == "executions" else r.kind
            if kind not in TAGGED_KINDS.values():
                continue
            if kind not in kept:
                kept[kind] = {n.lower() for n in self._kept_names(kind)}
            if r.name.lower() not in kept[kind]:
                out.add((r.kind, r.name))
        return out

    def inventory_notes(self) -> list[str]:
        return [note] if (note := self.__dict__.get("_tag_search_note")) else []

    def captured_endpoints(self) -> list[str]:
        """The endpoints this workspace deployed, gone or not: their capture folders are its data (others'
        in the shared default bucket are not)."""
        return list(dict.fromkeys(self._kept_names("capture") + self._kept_names("endpoint")))

    def _kept_names(self, kind: str) -> list[str]:
        rows = self.db.query("SELECT name FROM aws_resources WHERE kind=? ORDER BY created DESC", (kind,))
        return [r["name"] for r in rows]

    def _tagged_names(self) -> dict[str, list[str]]:
        """{kind: names} of the resources tagged with the project tag (Resource Groups Tagging API),
        read at most every few seconds; empty when the credentials may not call tag:GetResources."""
        now = time.monotonic()
        cached = self.__dict__.get("_tagged_cache")
        if cached and now - cached[0] < TAG_CACHE_S:
            return cached[1]
        found: dict[str, list[str]] = {}
        try:
            with aws_errors("finding the project's tagged resources (tag:GetResources)"):
                pages = self.client("resourcegroupstaggingapi").get_paginator("get_resources").paginate(
                    TagFilters=[{"Key": PROJECT_TAG["Key"], "Values": [PROJECT_TAG["Value"]]}],
                    ResourceTypeFilters=list(TAGGED_TYPES))
                arns = [m["ResourceARN"] for page in pages for m in page["ResourceTagMappingList"]]
        except AccessDenied:  # the workspace's own records still list what it created; say what is not searched
            arns = []
            self.__dict__["_tag_search_note"] = (
                "Resources the project tag marks outside this workspace were not searched: the credentials may "
                "not call tag:GetResources (add it to their policy to see another workspace's endpoints).")
        else:
            self.__dict__.pop("_tag_search_note", None)
        for arn in arns:
            m = TAGGED_ARN_RE.search(str(arn))
            if m and m.group("region") == self.region:
                found.setdefault(TAGGED_KINDS[m.group("type")], []).append(m.group("name"))
        self.__dict__["_tagged_cache"] = (now, found)
        return found
