"""The AWS backend's staging and error handling, against moto."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from backend import get_backend
from backend.api import (
    AccessDenied, CredentialsError, ResourceInUse, ResourceLimitExceeded, ResourceNotFound, Throttling,
    ValidationError,
)
from backend.aws.errors import translate
from backend.aws.s3 import MULTIPART_THRESHOLD
from backend.settings import load_settings

MOTO_ACCOUNT = "123456789012"


def test_stage_to_s3_then_restage_skips_unchanged(aws):
    b = get_backend(load_settings())
    report = b.stage_data("sample")
    assert report.bucket == f"sagemaker-us-east-1-{MOTO_ACCOUNT}"
    assert report.counts == {"train": {"bicycle": 500, "motorcycle": 500}, "test": {"bicycle": 100, "motorcycle": 100}}
    s3 = boto3.client("s3", region_name="us-east-1")
    keys = {o.key for o in b.list_objects()}
    assert len([k for k in keys if k.startswith("train/")]) == 1000
    assert {"train.lst", "test.lst", "dataset.json"} <= keys
    lst = s3.get_object(Bucket=report.bucket, Key="train.lst")["Body"].read().decode()
    assert lst.splitlines()[0] == "0\t0\tbike_s_000682.png"
    tags = s3.get_bucket_tagging(Bucket=report.bucket)["TagSet"]
    assert {"Key": "project", "Value": "scones-unlimited"} in tags

    uploaded_before = b.objects.uploaded
    b.stage_data("sample")
    assert b.objects.uploaded - uploaded_before <= 1  # only dataset.json (its timings change)
    assert b.objects.skipped >= 1202
    assert b.latest_stage_report().counts == report.counts
    assert b.step_statuses()["stage"].state == "done"
    assert b.describe_workspace()["account"] == MOTO_ACCOUNT


def test_restaging_in_a_shared_bucket_removes_only_the_images_its_lists_named(aws, tmp_path):
    """The default bucket is the whole account's: another project's objects under train/ and test/ stay."""
    from tests.archives import several_classes, synthetic_archive

    def listed() -> set[str]:
        return {f"{split}/{line.split(chr(9))[2]}" for split in ("train", "test")
                for line in b.get_object(f"{split}.lst").decode().splitlines()}

    b = get_backend(load_settings())
    path = synthetic_archive(tmp_path / "syn.tar.gz", several_classes(4), several_classes(2, seed=1))
    b.stage_data(str(path), ["bicycle", "motorcycle"])
    first = listed()
    theirs = {"train/other-project/img1.jpg", "test/other.png"}
    b.objects.put_many({k: b"theirs" for k in theirs})
    report = b.stage_data(str(path), ["bicycle", "bear"])
    assert report.counts["train"] == {"bicycle": 4, "bear": 4}
    images = {o.key for o in b.list_objects() if o.key.startswith(("train/", "test/"))}
    assert first - listed() and not (first - listed()) & images  # the motorcycles went
    assert images == listed() | theirs  # and nothing else did


def test_a_restage_whose_clean_up_failed_leaves_nothing_unknown_behind(aws, tmp_path):
    """The new lists are written before the stale images go: a failed delete must not orphan them for good."""
    from backend.api import SconesError
    from tests.archives import several_classes, synthetic_archive

    b = get_backend(load_settings())
    path = synthetic_archive(tmp_path / "syn.tar.gz", several_classes(4), several_classes(2, seed=1))
    b.stage_data(str(path), ["bicycle", "motorcycle"])
    before = {o.key for o in b.list_objects() if o.key.startswith(("train/", "test/"))}

    from types import SimpleNamespace

    images_call = []

    def refuse(params, **_):  # S3 keeps the stale images (not the manifest): answered here, nothing deleted
        images_call.append(b"<Key>train/" in params["body"] or b"<Key>test/" in params["body"])
        if images_call[-1]:
            return SimpleNamespace(status_code=200, headers={}), {"Errors": [
                {"Key": "x", "Code": "InternalError", "Message": "We encountered an internal error"}]}
        return None
    events = b.objects.client.meta.events
    events.register("before-call.s3.DeleteObjects", refuse)
    with pytest.raises(SconesError, match="S3 did not delete"):
        b.stage_data(str(path), ["bicycle", "bear"])
    assert images_call == [False, True]  # it got as far as the stale images
    events.unregister("before-call.s3.DeleteObjects", refuse)
    b.stage_data(str(path), ["bicycle", "bear"])  # the retry removes the motorcycles the failed one left
    images = {o.key for o in b.list_objects() if o.key.startswith(("train/", "test/"))}
    motorcycles = before - images
    assert motorcycles and len(images) == 4 * 2 + 2 * 2
    b.cleanup([("data", "staged-images")])
    assert [o.key for o in b.list_objects()] == []


def test_a_delete_s3_refuses_in_part_is_an_error_not_a_success(aws):
    """DeleteObjects answers 200 with an Errors list for the keys it kept: that is not 'deleted'."""
    b = get_backend(load_settings())
    b.objects.put_many({"data_capture/a.jsonl": b"1", "data_capture/b.jsonl": b"2"})

    def refuse(parsed, **_):
        parsed["Errors"] = [{"Key": "data_capture/a.jsonl", "Code": "AccessDenied", "Message": "Access Denied"}]
    b.objects.client.meta.events.register("after-call.s3.DeleteObjects", refuse)
    with pytest.raises(AccessDenied, match=r"S3 did not delete 1 of 2 object\(s\) .* data_capture/a.jsonl: "
                                           r"AccessDenied .* Allow s3:DeleteObject"):
        b.objects.delete_keys(["data_capture/a.jsonl", "data_capture/b.jsonl"])


def test_network_failures_say_network_not_settings():
    from botocore.exceptions import (
        ConnectionClosedError, ConnectTimeoutError, ProxyConnectionError, SSLError,
    )

    cases = [(ConnectTimeoutError(endpoint_url="https://s3"), "could not be reached for listing buckets; check the network"),
             (ProxyConnectionError(proxy_url="http://proxy:3128", error="x"), "The proxy in HTTPS_PROXY"),
             (SSLError(endpoint_url="https://s3", error="x"), "set AWS_CA_BUNDLE"),
             (ConnectionClosedError(endpoint_url="https://s3"), "AWS closed the connection during listing buckets")]
    for exc, words in cases:
        error = translate(exc, "listing buckets")
        assert words in str(error) and "check the AWS settings" not in str(error), str(error)
        assert error.code == "NetworkError"  # a code of its own for scripts, not the generic SconesError


def test_large_objects_go_multipart(aws):
    b = get_backend(load_settings())
    big = os.urandom(MULTIPART_THRESHOLD + 1024)
    b.objects.put_many({"big/blob.bin": big})
    head = boto3.client("s3", region_name="us-east-1").head_object(Bucket=b.objects.bucket, Key="big/blob.bin")
    assert "-" in head["ETag"]  # a multipart upload's ETag
    assert b.get_object("big/blob.bin") == big
    with pytest.raises(ResourceNotFound, match="No object s3://"):
        b.get_object("big/none.bin")


def test_missing_credentials_is_one_clear_sentence(aws_env, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k)
    b = get_backend(load_settings())
    with pytest.raises(CredentialsError, match="No AWS credentials were found") as err:
        b.describe_workspace()
    assert "AWS_PROFILE" in str(err.value) and "\n" not in str(err.value)
    # said once: not "No AWS credentials were found for checking the AWS credentials" (audit)
    assert str(err.value).startswith("No AWS credentials were found for the identity check (sts:GetCallerIdentity)")


def test_missing_region_is_one_clear_sentence(aws_env, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(CredentialsError, match="No AWS region is set"):
        get_backend(load_settings()).describe_workspace()


def test_cli_status_without_credentials_exits_2_and_prints_no_secret(aws_env, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    r = subprocess.run([sys.executable, "-m", "backend.cli", "status", "--backend", "aws", "--json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert "No AWS credentials were found" in r.stderr and "Traceback" not in r.stderr
    assert "No AWS credentials were found" in json.loads(r.stdout)["error"]["message"]


def test_cli_stage_on_aws_through_a_worker_process(moto_server, tmp_path):
    r = subprocess.run([sys.executable, "-m", "backend.cli", "stage", "--source", "sample", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["counts"]["test"] == {"bicycle": 100, "motorcycle": 100}
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_server)
    assert s3.list_objects_v2(Bucket=doc["bucket"], Prefix="test/")["KeyCount"] == 200
    # the secret never reaches the output
    assert "testing-secret-value" not in r.stdout + r.stderr


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "DoThing")


@pytest.mark.parametrize("code, cls, advice", [
    ("AccessDenied", AccessDenied, "IAM policy"),
    ("AccessDeniedException", AccessDenied, "IAM policy"),
    ("ResourceNotFound", ResourceNotFound, "check the name"),
    ("ThrottlingException", Throttling, "wait a moment"),
    ("ValidationException", ValidationError, "fix the value"),
    ("ResourceLimitExceeded", ResourceLimitExceeded, "Service Quotas"),
    ("ResourceInUse", ResourceInUse, "already exists"),
    ("ExpiredToken", CredentialsError, "expired or invalid"),
])
def test_client_error_codes_map_to_named_errors(code, cls, advice):
    err = translate(client_error(code), "creating the training job")
    assert type(err) is cls
    assert err.code == code
    assert str(err).startswith(f"AWS refused creating the training job ({code}: {code} happened)")
    assert advice in str(err) and "\n" not in str(err)


def test_no_credentials_error_translates():
    err = translate(NoCredentialsError(), "listing buckets")
    assert isinstance(err, CredentialsError) and "aws configure" in str(err)


def test_an_expired_sso_session_says_to_log_in_again(monkeypatch):
    from botocore.exceptions import CredentialRetrievalError, SSOTokenLoadError, UnauthorizedSSOTokenError

    monkeypatch.setenv("AWS_PROFILE", "operator")
    for exc in (UnauthorizedSSOTokenError(), SSOTokenLoadError(error_msg="Token for example.com does not exist")):
        err = translate(exc, "listing buckets")
        assert isinstance(err, CredentialsError)
        assert str(err) == ("The AWS SSO session is expired or was never started (listing buckets): run "
                            "'aws sso login --profile operator', then try again.")
    leaky = CredentialRetrievalError(provider="custom-process", error_msg="secret=AKIASECRETVALUE")
    err = translate(leaky, "listing buckets")
    assert isinstance(err, CredentialsError) and "custom-process" in str(err) and "AKIASECRETVALUE" not in str(err)


def test_a_bucket_of_another_account_says_so(aws, monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setenv("SCONES_BUCKET", "someone-elses-bucket")
    b = get_backend(load_settings())

    def forbidden(**_):  # what S3 answers a HEAD on a bucket another account owns
        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadBucket")
    b.objects.client.meta.events.register("before-call.s3.HeadBucket", forbidden)
    with pytest.raises(AccessDenied, match="belongs to another AWS account"):
        b.objects.put_many({"a": b"x"})


def test_a_bucket_in_another_region_is_refused_not_followed(aws, monkeypatch):
    """botocore follows a bucket's region by itself; SageMaker in this region could not read it."""
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="bucket-in-ireland", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.setenv("SCONES_BUCKET", "bucket-in-ireland")
    b = get_backend(load_settings())
    with pytest.raises(ValidationError, match="is in eu-west-1, not us-east-1: SageMaker reads its data"):
        b.objects.put_many({"a": b"x"})
    assert "Contents" not in boto3.client("s3", region_name="eu-west-1").list_objects_v2(Bucket="bucket-in-ireland")


def test_staging_without_credentials_is_refused_before_any_job(aws_env, tmp_path, monkeypatch):
    """A missing credential is a setting to fix (exit 2 at once), not a staging job that runs and fails."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "backend.cli", "stage", "--source", "sample", "--backend", "aws", "--json"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "No AWS credentials were found" in r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "CredentialsError"
    b = get_backend(load_settings())
    assert b.latest_job("stage") is None  # no job was started
