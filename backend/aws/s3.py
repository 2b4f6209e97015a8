"""An S3 bucket as `backend.objects.ObjectStore`: parallel small uploads, multipart for large
objects, and objects whose bytes are already there (same MD5 ETag) are skipped."""
from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from boto3.s3.transfer import TransferConfig

from backend.api import AccessDenied, ResourceNotFound, SconesError, StoredObject, ValidationError
from backend.aws.errors import aws_errors

MULTIPART_THRESHOLD = 8 * 1024 * 1024
PROJECT_TAG = {"Key": "project", "Value": "scones-unlimited"}


class S3Bucket:
    # An S3 bucket may hold other projects' objects (the default sagemaker-<region>-<account> bucket is
    # the whole account's): restaging removes only the images the bucket's own lists named.
    shared = True

    def __init__(self, client: Any, bucket: str, region: str, workers: int = 8):
        self.client, self.bucket, self.region, self.workers = client, bucket, region, workers
        self.uploaded = 0
        self.skipped = 0
        self._ensured = False

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        """Create the bucket (tagged as the project's) when it does not exist yet."""
        if self._ensured:
            return
        with aws_errors(f"creating bucket {self.bucket}"):
            try:
                head = self.client.head_bucket(Bucket=self.bucket)
            except self.client.exceptions.ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code"))
                if code in ("403", "AccessDenied"):  # HEAD has no body: a 403 is another owner's bucket, or no right
                    raise AccessDenied(
                        f"Bucket {self.bucket} exists but these credentials may not use it: it belongs to another "
                        "AWS account (bucket names are global), or the policy lacks s3:ListBucket on it. Set "
                        "SCONES_BUCKET to a bucket of your own, or leave it unset for sagemaker-<region>-<account>."
                    ) from None
                if code not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                kwargs: dict[str, Any] = {"Bucket": self.bucket}
                if self.region and self.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
                self.client.create_bucket(**kwargs)
                self.client.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": [PROJECT_TAG]})
            else:  # botocore follows a bucket in another region by itself: SageMaker there would not
                where = (head.get("BucketRegion")
                         or head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region"))
                if where and self.region and where != self.region:
                    raise ValidationError(
                        f"Bucket {self.bucket} is in {where}, not {self.region}: SageMaker reads its data from its "
                        f"own region. Set AWS_REGION to {where}, or SCONES_BUCKET to a bucket in {self.region}.")
        self._ensured = True

    def get(self, key: str) -> bytes:
        with aws_errors(f"reading s3://{self.bucket}/{key}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except self.client.exceptions.NoSuchKey:
                raise ResourceNotFound(f"No object s3://{self.bucket}/{key}: stage the data first or check the key.") from None

    def _etags(self, keys: list[str]) -> dict[str, str]:
        folders = {k.rpartition("/")[0] + "/" if "/" in k else "" for k in keys}
        out: dict[str, str] = {}
        for folder in folders:
            for obj in self._iter(folder, delimiter=folder == ""):
                out[obj["Key"]] = obj["ETag"].strip('"')
        return out

    def put_many(self, items: dict[str, bytes], progress: Callable[[int], None] | None = None) -> None:
        if not items:
            return
        self.ensure_bucket()
        with aws_errors(f"listing s3://{self.bucket}/"):
            existing = self._etags(list(items))
        todo = {k: v for k, v in items.items() if existing.get(k) != hashlib.md5(v).hexdigest()}
        self.skipped += len(items) - len(todo)
        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)

        def upload(kv: tuple[str, bytes]) -> None:
            key, data = kv
            with aws_errors(f"uploading s3://{self.bucket}/{key}"):
                if len(data) >= MULTIPART_THRESHOLD:
                    self.client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=config)
                else:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

        with ThreadPoolExecutor(self.workers) as pool:
            for _ in pool.map(upload, todo.items()):
                self.uploaded += 1
        if progress:
            progress(len(items))

    def _iter(self, prefix: str, delimiter: bool = False):
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = "/"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                yield from page.get("Contents", [])
        except self.client.exceptions.NoSuchBucket:
            return

    def list(self, prefix: str = "") -> list[StoredObject]:
        with aws_errors(f"listing s3://{self.bucket}/{prefix}"):
            return [StoredObject(self.bucket, o["Key"], int(o["Size"]), o["LastModified"].timestamp())
                    for o in self._iter(prefix)]

    def delete_keys(self, keys: list[str]) -> None:
        with aws_errors(f"deleting from s3://{self.bucket}/"):
            for i in range(0, len(keys), 1000):
                chunk = keys[i:i + 1000]
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk],
                                                                                 "Quiet": True})
                failed = answer.get("Errors") or []  # DeleteObjects answers 200 and lists the keys it kept
                if failed:
                    first = failed[0]
                    message = (f"S3 did not delete {len(failed)} of {len(chunk)} object(s) from s3://{self.bucket}/, "
                               f"for example {first.get('Key')}: {first.get('Code')} ({first.get('Message', '')}).")
                    if first.get("Code") == "AccessDenied":
                        raise AccessDenied(message + " Allow s3:DeleteObject on the bucket to the credentials.")
                    raise SconesError(message)
