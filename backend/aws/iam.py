"""The three IAM roles the workflow needs, least privilege, shown before they are created.

Each role trusts one service and carries one inline policy that names this workspace's resources:
SageMaker reads and writes the workspace bucket; the Lambda functions read the staged images and
uploads, invoke our endpoints and write their own logs; Step Functions invokes our three functions.
Provisioning is idempotent: a role that exists (tagged as the project's) gets its trust and its
inline policy rewritten, never a second copy. The workspace remembers the ARNs, so `role_arn`
finds them when no SCONES_*_ROLE_ARN is set.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from backend.api import ROLE_KINDS, Resource, ResourceInUse, RolePlan, ValidationError
from backend.aws.errors import aws_errors
from backend.aws.s3 import PROJECT_TAG
from backend.aws.training import image_uri
from backend.workflow_defs import SEED_HANDLERS, UPLOAD_PREFIX

ROLE_NAMES = {"sagemaker": "scones-sagemaker-execution", "lambda": "scones-lambda-execution",
              "states": "scones-states-execution"}
SERVICES = {"sagemaker": "sagemaker.amazonaws.com", "lambda": "lambda.amazonaws.com",
            "states": "states.amazonaws.com"}
DESCRIPTIONS = {"sagemaker": "Scones Unlimited: SageMaker training and endpoints (workspace bucket only)",
                "lambda": "Scones Unlimited: the workflow's three Lambda functions",
                "states": "Scones Unlimited: the Step Functions workflow (our three functions only)"}
POLICY_NAME = "scones-least-privilege"
# Until the workspace knows an endpoint, the Lambda role may invoke endpoints whose name starts with
# this (the CLI's default endpoint is scones-endpoint); provisioning again after a deploy narrows it
# to the endpoints the workspace created.
ENDPOINT_PREFIX = "scones-"
FUNCTION_NAMES = tuple(SEED_HANDLERS)
STAGED_PREFIXES = ("train/", "test/", UPLOAD_PREFIX)

IAM_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE aws_roles (
        kind        TEXT PRIMARY KEY,       -- sagemaker | lambda | states
        name        TEXT NOT NULL,
        arn         TEXT NOT NULL,
        created     TEXT NOT NULL
    );
    """,
    # 1: a role that existed (tagged) before this workspace provisioned it is adopted, not created here
    "ALTER TABLE aws_roles ADD COLUMN adopted INTEGER NOT NULL DEFAULT 0;",
)


def trust_policy(service: str) -> dict[str, Any]:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def sagemaker_policy(partition: str, region: str, account: str, bucket: str, image: str) -> dict[str, Any]:
    """Training and endpoints: the bucket (data, artifacts, capture), their logs and metrics, the image."""
    registry, _, repository = image.partition("/")
    image_account = registry.split(".")[0]
    repository = repository.split(":")[0]
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "WorkspaceBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": [f"arn:{partition}:s3:::{bucket}"]},
        {"Sid": "WorkspaceObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": [f"arn:{partition}:s3:::{bucket}/*"]},
        {"Sid": "SageMakerLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
         "Resource": [f"arn:{partition}:logs:{region}:{account}:log-group:/aws/sagemaker/*"]},
        # PutMetricData has no resource-level permissions; the namespace condition keeps it to SageMaker's.
        {"Sid": "SageMakerMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": ["*"],
         "Condition": {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}}},
        # GetAuthorizationToken has no resource-level permissions; the pulls are for the algorithm's image only.
        {"Sid": "EcrToken", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": ["*"]},
        {"Sid": "AlgorithmImage", "Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
         "Resource": [f"arn:{partition}:ecr:{region}:{image_account}:repository/{repository}"]},
    ]}


def endpoint_arns(partition: str, region: str, account: str, endpoint_names: list[str]) -> list[str]:
    """SageMaker writes endpoint ARNs in lower case; with no endpoint known, the project's name prefix."""
    names = sorted({n.lower() for n in endpoint_names}) or [f"{ENDPOINT_PREFIX}*"]
    return [f"arn:{partition}:sagemaker:{region}:{account}:endpoint/{n}" for n in names]


def lambda_policy(partition: str, region: str, account: str, bucket: str, endpoint_names: list[str],
                  functions: tuple[str, ...] = FUNCTION_NAMES) -> dict[str, Any]:
    """The three functions: read the staged images and uploads, invoke our endpoints, write their own logs."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadStagedImages", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:{partition}:s3:::{bucket}/{prefix}*" for prefix in STAGED_PREFIXES]},
        {"Sid": "InvokeOurEndpoints", "Effect": "Allow", "Action": ["sagemaker:InvokeEndpoint"],
         "Resource": endpoint_arns(partition, region, account, endpoint_names)},
        {"Sid": "OwnLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{fn}:*" for fn in functions]},
    ]}


def function_arns(partition: str, region: str, account: str, functions: tuple[str, ...] = FUNCTION_NAMES) -> list[str]:
    out = []
    for fn in functions:
        arn = f"arn:{partition}:lambda:{region}:{account}:function:{fn}"
        out += [arn, f"{arn}:*"]  # the function, and its versions and aliases
    return out


def states_policy(partition: str, region: str, account: str, functions: tuple[str, ...] = FUNCTION_NAMES) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "InvokeOurFunctions", "Effect": "Allow", "Action": ["lambda:InvokeFunction"],
         "Resource": function_arns(partition, region, account, functions)},
    ]}


def _has_project_tag(tags: list[dict[str, str]]) -> bool:
    return any(t.get("Key") == PROJECT_TAG["Key"] and t.get("Value") == PROJECT_TAG["Value"] for t in tags)


class AwsProvisioningMixin:
    """role_plan / provision_roles, the roles' records, and the roles in the inventory and cleanup."""

    # -- the plan --------------------------------------------------------------------------

    @property
    def partition(self) -> str:
        return self.session.get_partition_for_region(self.region) or "aws"

    def role_plan(self) -> list[RolePlan]:
        """The three roles as provisioning would create them (or rewrite them, when they exist)."""
        part, region, account, bucket = self.partition, self.region, self.account_id, self.objects.bucket
        policies = {
            "sagemaker": sagemaker_policy(part, region, account, bucket, image_uri(region)),
            "lambda": lambda_policy(part, region, account, bucket, self._kept_names("endpoint"), self._our_functions()),
            "states": states_policy(part, region, account, self._our_functions()),
        }
        out = []
        for kind in ROLE_KINDS:
            role = self._get_role(ROLE_NAMES[kind])
            out.append(RolePlan(kind=kind, name=ROLE_NAMES[kind], trust_policy=trust_policy(SERVICES[kind]),
                                policies={POLICY_NAME: policies[kind]}, exists=role is not None,
                                arn=role["Arn"] if role else ""))
        return out

    def _get_role(self, name: str) -> dict[str, Any] | None:
        iam = self.client("iam")
        with aws_errors(f"reading IAM role {name}"):
            try:
                return iam.get_role(RoleName=name)["Role"]
            except iam.exceptions.NoSuchEntityException:
                return None

    # -- provisioning ----------------------------------------------------------------------

    def provision_roles(self, plan: list[RolePlan] | None = None) -> dict[str, str]:
        """Create (or bring up to date) the roles of `plan`; returns {kind: role ARN}."""
        plan = self.role_plan() if plan is None else plan
        iam = self.client("iam")
        out: dict[str, str] = {}
        for p in plan:
            if p.kind not in ROLE_KINDS:
                raise ValidationError(f"Unknown role kind {p.kind!r}: use one of {', '.join(ROLE_KINDS)}.")
            role = self._get_role(p.name)
            adopted = role is not None
            with aws_errors(f"provisioning IAM role {p.name}"):
                if role is None:
                    role = iam.create_role(RoleName=p.name, AssumeRolePolicyDocument=json.dumps(p.trust_policy),
                                           Description=DESCRIPTIONS[p.kind], Tags=[PROJECT_TAG])["Role"]
                else:
                    tags = iam.list_role_tags(RoleName=p.name).get("Tags", [])
                    if not _has_project_tag(tags):
                        raise ResourceInUse(
                            f"IAM role {p.name} exists and is not tagged {PROJECT_TAG['Key']}={PROJECT_TAG['Value']}, so "
                            "it is not this project's: delete or rename it, or set its ARN in the role's "
                            "SCONES_*_ROLE_ARN setting to use it as it is.")
                    iam.update_assume_role_policy(RoleName=p.name, PolicyDocument=json.dumps(p.trust_policy))
                for name, document in p.policies.items():
                    iam.put_role_policy(RoleName=p.name, PolicyName=name, PolicyDocument=json.dumps(document))
            self._remember_role(p.kind, p.name, role["Arn"], adopted)
            out[p.kind] = role["Arn"]
        return out

    def _our_functions(self, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The three workflow functions, those an import deployed, and `extra`, in a stable order."""
        return tuple(dict.fromkeys((*FUNCTION_NAMES, *sorted(self._kept_names("lambda-function")), *extra)))

    def allow_for_workflow(self, endpoint_name: str, functions: tuple[str, ...] = ()) -> None:
        """Deploying or importing a workflow widens the provisioned roles to what it uses: the Lambda
        role to its endpoint (and the logs of its functions), the Step Functions role to its functions.
        Roles set by SCONES_*_ROLE_ARN are the user's to manage and are left as they are."""
        part, region, account = self.partition, self.region, self.account_id
        names = self._our_functions(functions)
        policies = []
        if not self.settings.lambda_role_arn and self.provisioned_role_arn("lambda"):
            endpoints = sorted(set(self._kept_names("endpoint")) | {endpoint_name})
            policies.append(("lambda", lambda_policy(part, region, account, self.objects.bucket, endpoints, names)))
        if not self.settings.states_role_arn and self.provisioned_role_arn("states"):
            policies.append(("states", states_policy(part, region, account, names)))
        for kind, policy in policies:
            with aws_errors(f"updating the policy of IAM role {ROLE_NAMES[kind]}"):
                self.client("iam").put_role_policy(RoleName=ROLE_NAMES[kind], PolicyName=POLICY_NAME,
                                                   PolicyDocument=json.dumps(policy))

    # -- the workspace's records -------------------------------------------------------------

    def _roles_db(self) -> Any:
        self.db.migrate("aws_iam", IAM_MIGRATIONS)
        return self.db

    def _remember_role(self, kind: str, name: str, arn: str, adopted: bool) -> None:
        """Provisioning again keeps what the workspace first knew: a role it created stays its own."""
        self._roles_db().execute(
            "INSERT INTO aws_roles(kind, name, arn, created, adopted) VALUES(?,?,?,?,?) "
            "ON CONFLICT(kind) DO UPDATE SET name=excluded.name, arn=excluded.arn, "
            "adopted=CASE WHEN aws_roles.name=excluded.name THEN aws_roles.adopted ELSE excluded.adopted END",
            (kind, name, arn, datetime.now(timezone.utc).isoformat(), int(adopted)))

    def provisioned_role_arn(self, kind: str) -> str | None:
        row = self._roles_db().query_one("SELECT arn FROM aws_roles WHERE kind=?", (kind,))
        return row["arn"] if row else None

    def _provisioned_roles(self) -> list[tuple[str, str]]:
        return [(r["kind"], r["name"]) for r in self._roles_db().query("SELECT kind, name FROM aws_roles ORDER BY kind")]

    def adopted_roles(self) -> set[str]:
        """Roles that existed (tagged) before this workspace provisioned them: not created here."""
        return {r["name"] for r in self._roles_db().query("SELECT name FROM aws_roles WHERE adopted=1")}

    # -- inventory and cleanup ---------------------------------------------------------------

    def role_resources(self) -> list[Resource]:
        """The roles this workspace provisioned (one deleted outside the dashboard is forgotten)."""
        roles = []
        for kind, name in self._provisioned_roles():
            if self._get_role(name) is None:
                self._roles_db().execute("DELETE FROM aws_roles WHERE kind=?", (kind,))
                continue
            roles.append(Resource("iam-role", name, "Active", detail=f"{kind} role, inline policy {POLICY_NAME}; costs nothing"))
        return roles

    def delete_role(self, name: str) -> None:
        """Its inline policies first (IAM refuses to delete a role that still has them), then the role."""
        iam = self.client("iam")
        with aws_errors(f"deleting IAM role {name}"):
            for policy in iam.list_role_policies(RoleName=name).get("PolicyNames", []):
                iam.delete_role_policy(RoleName=name, PolicyName=policy)
            try:
                iam.delete_role(RoleName=name)
            except iam.exceptions.DeleteConflictException:
                raise ResourceInUse(f"IAM role {name} still has managed policies or instance profiles attached: "
                                    "detach them in the IAM console, then clean up again.") from None
        self._roles_db().execute("DELETE FROM aws_roles WHERE name=?", (name,))

    def _delete(self, kind: str, name: str) -> None:
        if kind != "iam-role":
            return super()._delete(kind, name)  # type: ignore[misc]
        if name not in {n for _, n in self._provisioned_roles()}:
            raise ValidationError(f"IAM role {name} was not provisioned by this workspace: it is left alone.")
        self.delete_role(name)
