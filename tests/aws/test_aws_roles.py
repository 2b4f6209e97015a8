"""Provisioning the three IAM roles (moto): least-privilege policies, shown before anything is
created, tagged, idempotent, remembered by the workspace, and removed last by cleanup."""
from __future__ import annotations

import json

import boto3
import pytest

from backend import cli, get_backend
from backend.api import CredentialsError, ResourceInUse
from backend.aws.iam import ENDPOINT_PREFIX, POLICY_NAME, ROLE_NAMES
from backend.aws.s3 import PROJECT_TAG
from backend.settings import load_settings

ACCOUNT, REGION = "123456789012", "us-east-1"
BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"
FUNCTIONS = ("serializeImageData", "classifyImage", "filterInferences")


def statements(plan, kind):
    role = next(p for p in plan if p.kind == kind)
    return role.policies[POLICY_NAME]["Statement"]


def resources(plan, kind) -> list[str]:
    return [r for s in statements(plan, kind) for r in s["Resource"]]


def iam():
    return boto3.client("iam", region_name=REGION)


@pytest.fixture
def b(aws):
    return get_backend(load_settings())


@pytest.fixture
def staged(b, small_archive):
    b.stage_data(small_archive)
    return b


def test_the_plan_is_least_privilege_and_creates_nothing(b):
    plan = b.role_plan()
    assert [(p.kind, p.name, p.exists) for p in plan] == [
        ("sagemaker", ROLE_NAMES["sagemaker"], False), ("lambda", ROLE_NAMES["lambda"], False),
        ("states", ROLE_NAMES["states"], False)]
    assert iam().list_roles()["Roles"] == []
    services = {p.kind: p.trust_policy["Statement"][0]["Principal"]["Service"] for p in plan}
    assert services == {"sagemaker": "sagemaker.amazonaws.com", "lambda": "lambda.amazonaws.com",
                        "states": "states.amazonaws.com"}
    for p in plan:  # no action wildcards anywhere (no s3:*, no sagemaker:*)
        assert all("*" not in a for s in p.policies[POLICY_NAME]["Statement"] for a in s["Action"])

    # SageMaker: the workspace bucket only; "*" only where AWS has no resource-level permissions
    sm = statements(plan, "sagemaker")
    s3 = {r for s in sm for r in s["Resource"] if r.startswith("arn:aws:s3:::")}
    assert s3 == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    stars = {a for s in sm if s["Resource"] == ["*"] for a in s["Action"]}
    assert stars == {"cloudwatch:PutMetricData", "ecr:GetAuthorizationToken"}
    metrics = next(s for s in sm if s["Action"] == ["cloudwatch:PutMetricData"])
    assert metrics["Condition"] == {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}}
    assert f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/*" in resources(plan, "sagemaker")
    pull = next(s for s in sm if "ecr:BatchGetImage" in s["Action"])
    assert pull["Resource"] == [f"arn:aws:ecr:{REGION}:811284229777:repository/image-classification"]

    # Lambda: the staged prefixes, our endpoints by the documented prefix, our three log groups
    lam = resources(plan, "lambda")
    assert "*" not in lam
    documented = {f"arn:aws:s3:::{BUCKET}/{p}*" for p in ("train/", "test/", "uploads/")} | {
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT_PREFIX}*"} | {
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{fn}:*" for fn in FUNCTIONS}
    assert set(lam) == documented
    assert {a for s in statements(plan, "lambda") for a in s["Action"]} == {
        "s3:GetObject", "sagemaker:InvokeEndpoint", "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}

    # Step Functions: InvokeFunction on the three functions (and their versions/aliases) only
    assert statements(plan, "states")[0]["Action"] == ["lambda:InvokeFunction"]
    base = [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn}" for fn in FUNCTIONS]
    assert sorted(resources(plan, "states")) == sorted(base + [f"{a}:*" for a in base])


def test_provisioning_creates_tagged_roles_and_twice_changes_nothing(b):
    plan = b.role_plan()
    arns = b.provision_roles(plan)
    assert arns == {k: f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAMES[k]}" for k in ("sagemaker", "lambda", "states")}
    client = iam()
    for p in plan:
        role = client.get_role(RoleName=p.name)["Role"]
        assert role["AssumeRolePolicyDocument"] == p.trust_policy
        assert PROJECT_TAG in client.list_role_tags(RoleName=p.name)["Tags"]
        assert client.list_role_policies(RoleName=p.name)["PolicyNames"] == [POLICY_NAME]
        doc = client.get_role_policy(RoleName=p.name, PolicyName=POLICY_NAME)["PolicyDocument"]
        assert doc == p.policies[POLICY_NAME]

    # someone widens a policy by hand: provisioning again puts ours back, and makes no second role
    client.put_role_policy(RoleName=ROLE_NAMES["states"], PolicyName=POLICY_NAME, PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}]}))
    again = b.role_plan()
    assert all(p.exists and p.arn == arns[p.kind] for p in again)
    assert b.provision_roles(again) == arns
    assert sorted(r["RoleName"] for r in client.list_roles()["Roles"]) == sorted(ROLE_NAMES.values())
    doc = client.get_role_policy(RoleName=ROLE_NAMES["states"], PolicyName=POLICY_NAME)["PolicyDocument"]
    assert doc == next(p for p in plan if p.kind == "states").policies[POLICY_NAME]
    assert len(client.list_role_tags(RoleName=ROLE_NAMES["states"])["Tags"]) == 1


def test_role_arn_falls_back_to_the_provisioned_role_and_the_setting_wins(b, monkeypatch):
    with pytest.raises(CredentialsError, match=r"Provision roles' / 'scones roles --yes'"):
        b.role_arn("lambda")
    arns = b.provision_roles()
    assert [b.role_arn(k) for k in ("sagemaker", "lambda", "states")] == [arns["sagemaker"], arns["lambda"],
                                                                           arns["states"]]
    again = get_backend(load_settings())  # the workspace remembers them (a restart loses nothing)
    assert again.role_arn("states") == arns["states"]
    monkeypatch.setenv("SCONES_SAGEMAKER_ROLE_ARN", f"arn:aws:iam::{ACCOUNT}:role/mine")
    assert get_backend(load_settings()).role_arn("sagemaker") == f"arn:aws:iam::{ACCOUNT}:role/mine"


def test_a_role_of_that_name_that_is_not_the_projects_is_left_alone(b):
    foreign = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam().create_role(RoleName=ROLE_NAMES["lambda"], AssumeRolePolicyDocument=json.dumps(foreign))
    with pytest.raises(ResourceInUse, match="not tagged project=scones-unlimited"):
        b.provision_roles()
    role = iam().get_role(RoleName=ROLE_NAMES["lambda"])["Role"]
    assert role["AssumeRolePolicyDocument"] == foreign
    assert iam().list_role_policies(RoleName=ROLE_NAMES["lambda"])["PolicyNames"] == []


def test_provisioned_roles_train_and_the_lambda_policy_then_names_our_endpoint(staged):
    b = staged
    b.provision_roles()
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.describe_training_job(TrainingJobName=job)["RoleArn"].endswith(f"role/{ROLE_NAMES['sagemaker']}")
    model = b.create_model(job)
    b.deploy(model.model_name, "Scones-Demo")
    lam = resources(b.role_plan(), "lambda")
    endpoints = [r for r in lam if ":endpoint/" in r]
    assert endpoints == [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/scones-demo"]  # lower case, no prefix


def test_the_workflow_runs_as_the_provisioned_roles_and_widens_the_lambda_policy_to_its_endpoint(staged):
    b = staged
    b.provision_roles()  # no endpoint yet: the Lambda role may invoke the project's name prefix only
    assert [r for r in resources(b.role_plan(), "lambda") if ":endpoint/" in r] == [
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT_PREFIX}*"]
    model = b.create_model(b.create_training_job(b.default_training_hyperparameters("sagemaker")))
    b.deploy(model.model_name, "fleet-classifier")  # outside the prefix
    b.deploy_workflow("fleet-classifier")
    policy = iam().get_role_policy(RoleName=ROLE_NAMES["lambda"], PolicyName=POLICY_NAME)["PolicyDocument"]
    if isinstance(policy, str):
        policy = json.loads(policy)
    invoke = next(s for s in policy["Statement"] if s["Action"] == ["sagemaker:InvokeEndpoint"])
    assert invoke["Resource"] == [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/fleet-classifier"]
    lam = boto3.client("lambda", region_name=REGION)
    assert lam.get_function_configuration(FunctionName="classifyImage")["Role"].endswith(f"role/{ROLE_NAMES['lambda']}")
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.list_state_machines()["stateMachines"][0]["stateMachineArn"]
    assert sfn.describe_state_machine(stateMachineArn=machine)["roleArn"].endswith(f"role/{ROLE_NAMES['states']}")


def test_cleanup_removes_provisioned_roles_after_everything_else(staged):
    b = staged
    b.provision_roles()
    job = b.create_training_job(b.default_training_hyperparameters("sagemaker"))
    b.deploy(b.create_model(job).model_name, "scones-endpoint")
    kinds = [r.kind for r in b.inventory()]
    assert kinds.count("iam-role") == 3 and kinds.index("iam-role") < kinds.index("data")
    report = b.cleanup(None, include_data=False)
    assert report.left == ()
    deleted = [k for k, _ in report.deleted]
    assert deleted[-3:] == ["iam-role"] * 3 and deleted[0] == "endpoint"
    assert iam().list_roles()["Roles"] == []
    with pytest.raises(CredentialsError):
        b.role_arn("sagemaker")
    left = b.cleanup([("iam-role", "someone-elses-role")])
    assert left.deleted == () and left.left[0][:2] == ("iam-role", "someone-elses-role")


def test_a_role_deleted_outside_the_dashboard_leaves_the_inventory(b):
    b.provision_roles()
    client = iam()
    client.delete_role_policy(RoleName=ROLE_NAMES["states"], PolicyName=POLICY_NAME)
    client.delete_role(RoleName=ROLE_NAMES["states"])
    assert sorted(r.name for r in b.inventory() if r.kind == "iam-role") == sorted(
        [ROLE_NAMES["sagemaker"], ROLE_NAMES["lambda"]])
    with pytest.raises(CredentialsError):
        b.role_arn("states")


def test_cli_roles_shows_the_plan_without_yes_and_creates_with_it(aws, capsys):
    assert cli.main(["roles", "--json"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [r["kind"] for r in doc["roles"]] == ["sagemaker", "lambda", "states"]
    assert set(doc["roles"][0]) >= {"kind", "name", "exists", "trust_policy", "policies"}
    assert "arn" not in doc["roles"][0] and "add --yes" in err and len(err.strip().splitlines()) == 1
    assert iam().list_roles()["Roles"] == []

    assert cli.main(["roles"]) == 2  # the text form shows each policy
    out, _ = capsys.readouterr()
    assert f"create role {ROLE_NAMES['lambda']}" in out and "sagemaker:InvokeEndpoint" in out
    assert iam().list_roles()["Roles"] == []

    assert cli.main(["roles", "--yes", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["kind"]: r["arn"] for r in doc["roles"]} == {
        k: f"arn:aws:iam::{ACCOUNT}:role/{n}" for k, n in ROLE_NAMES.items()}
    assert len(iam().list_roles()["Roles"]) == 3


def test_cli_roles_on_the_local_backend_is_one_sentence_and_exit_2(home, capsys):
    assert cli.main(["roles", "--yes", "--backend", "local"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "IAM roles are an AWS thing" in err and len(err.strip().splitlines()) == 1


def test_an_imported_workflow_widens_the_provisioned_roles_to_its_functions(staged):
    b = staged
    b.provision_roles()
    b.deploy(b.create_model(b.create_training_job(b.default_training_hyperparameters("sagemaker"))).model_name,
             "scones-endpoint")
    exported = {"StartAt": "Classify", "States": {"Classify": {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True,
        "Parameters": {"FunctionName": "arn:aws:lambda:eu-west-1:999999999999:function:my-classifier", "Payload.$": "$"}}}}
    b.import_workflow(json.dumps(exported), {"my-classifier": "classify_image"}, name="from-console")

    def policy(kind):
        doc = iam().get_role_policy(RoleName=ROLE_NAMES[kind], PolicyName=POLICY_NAME)["PolicyDocument"]
        return json.loads(doc) if isinstance(doc, str) else doc

    invoke = [r for s in policy("states")["Statement"] for r in s["Resource"]]
    assert f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:my-classifier" in invoke
    assert f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:classifyImage" in invoke  # the workflow's own stay
    logs = [r for s in policy("lambda")["Statement"] if s["Sid"] == "OwnLogs" for r in s["Resource"]]
    assert any("/aws/lambda/my-classifier:" in r for r in logs)
    plan = {p.kind: p for p in b.role_plan()}  # provisioning again keeps what the import needed
    assert f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:my-classifier" in resources(list(plan.values()), "states")


def test_roles_another_workspace_created_are_adopted_and_left_by_cleanup_everything(b, tmp_path, monkeypatch):
    arns = b.provision_roles()
    b.provision_roles()  # again: still the creator's own
    assert all(r.created_here for r in b.inventory() if r.kind == "iam-role")
    monkeypatch.setenv("SCONES_HOME", str(tmp_path / "colleague"))
    other = get_backend(load_settings())
    assert other.provision_roles() == arns  # the same tagged roles, adopted rather than created
    roles = {r.name: r for r in other.inventory() if r.kind == "iam-role"}
    assert set(roles) == set(ROLE_NAMES.values()) and not any(r.created_here for r in roles.values())
    report = other.cleanup(None, include_data=False)
    assert report.deleted == () and {(k, n) for k, n, _ in report.left} == {("iam-role", n) for n in ROLE_NAMES.values()}
    assert sorted(r["RoleName"] for r in iam().list_roles()["Roles"]) == sorted(ROLE_NAMES.values())
    named = other.cleanup([("iam-role", ROLE_NAMES["states"])])  # named: deleted, as asked
    assert named.deleted == (("iam-role", ROLE_NAMES["states"]),)
