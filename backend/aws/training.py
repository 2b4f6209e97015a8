"""Training on SageMaker with the built-in image-classification algorithm (boto3 only).

Same method names, hyperparameters and validation as the local backend; statuses, secondary status
and failure reason come from DescribeTrainingJob, per-epoch accuracy from the algorithm's
CloudWatch log lines while it runs (it logs no loss, so charts show none).
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from backend.api import (
    AccessDenied, Evaluation, Model, ResourceInUse, ResourceLimitExceeded, ResourceNotFound, SconesError, StepStatus,
    Throttling, TrainingJob, ValidationError, stopped_or_failed,
)
from backend.aws.errors import aws_errors
from backend.aws.s3 import PROJECT_TAG
from backend.local.training import hyperparameters as hps

# Built-in image-classification algorithm registries (account per region), as the SageMaker SDK's
# image_uri_config lists them; the image is <account>.dkr.ecr.<region>.amazonaws.com/image-classification:1.
IMAGE_CLASSIFICATION_ACCOUNTS = {
    "us-east-1": "811284229777", "us-east-2": "825641698319", "us-west-1": "632365934929",
    "us-west-2": "433757028032", "ca-central-1": "469771592824", "eu-west-1": "685385470294",
    "eu-west-2": "644912444149", "eu-west-3": "749696950732", "eu-central-1": "813361260812",
    "eu-north-1": "669576153137", "ap-northeast-1": "501404015308", "ap-northeast-2": "306986355934",
    "ap-southeast-1": "475088953585", "ap-southeast-2": "544295431143", "ap-south-1": "991648021394",
    "sa-east-1": "855470959533", "ap-east-1": "286214385809", "me-south-1": "249704162688",
    "us-gov-west-1": "226302683700", "cn-north-1": "390948362332", "cn-northwest-1": "387376663083",
}
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
LOG_SETTLE_SECONDS = 300  # CloudWatch Logs may still receive a job's last lines this long after it ends
MAX_RUNTIME_SECONDS = 2 * 3600  # a cost guardrail on every job
EPOCH_RE = re.compile(r"Epoch\[(\d+)\]\s+(Train|Validation)-accuracy=([0-9.eE+-]+)")
GPU_FAMILIES = ("ml.p2.", "ml.p3.", "ml.p3dn.", "ml.p4d.", "ml.p5.", "ml.g4dn.", "ml.g5.")


def classes_key(job_name: str) -> str:
    return f"output/{job_name}/scones-classes.json"


def image_uri(region: str) -> str:
    account = IMAGE_CLASSIFICATION_ACCOUNTS.get(region)
    if account is None:
        raise ValidationError(
            f"The built-in image-classification algorithm is not listed for region {region}: use one of "
            f"{', '.join(sorted(IMAGE_CLASSIFICATION_ACCOUNTS))}.")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/image-classification:1"


def job_name_now() -> str:
    now = datetime.now(timezone.utc)
    return f"image-classification-{now:%Y-%m-%d-%H-%M-%S}-{now.microsecond // 1000:03d}"


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_epoch_lines(lines: list[str]) -> tuple[dict[str, float], ...]:
    """The algorithm's `Epoch[k] Train-accuracy=...` / `Validation-accuracy=...` lines, per epoch."""
    epochs: dict[int, dict[str, float]] = {}
    for line in lines:
        for m in EPOCH_RE.finditer(line):
            k = int(m.group(1))
            key = "train:accuracy" if m.group(2) == "Train" else "validation:accuracy"
            epochs.setdefault(k, {"epoch": float(k + 1)})[key] = float(m.group(3))
    return tuple(epochs[k] for k in sorted(epochs))


def channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "ContentType": "application/x-image", "InputMode": "File",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated"}}}


class AwsTrainingMixin:
    """Training methods of the AWS backend (the names the pages and the CLI call)."""

    # -- what the form needs ---------------------------------------------------------------

    def training_hyperparameter_specs(self) -> list[dict[str, Any]]:
        from backend.local.training.service import TrainingService

        specs = TrainingService.hyperparameter_specs(self)  # type: ignore[arg-type]  # uses no state
        return [s for s in specs if s["name"] not in hps.LOCAL_ONLY]  # the algorithm's own, no local options

    def training_advisories(self, hyperparameters: dict[str, str]) -> list[str]:
        return hps.advisories(hyperparameters, local=False)

    def default_training_hyperparameters(self, preset: str = "sagemaker") -> dict[str, str]:
        if preset not in hps.PRESETS:
            raise ValidationError(f"Unknown preset {preset!r}: choose one of {', '.join(hps.PRESETS)}.")
        values = hps.algorithm_only(hps.PRESETS[preset])
        report = self.latest_stage_report()
        if report is not None:
            values.update(report.data_hyperparameters())
        return values

    def training_cost_notice(self) -> str:
        itype = self.settings.training_instance_type
        return (f"Training runs on {itype} (billed per second while it runs; at most "
                f"{MAX_RUNTIME_SECONDS // 3600} h per job).")

    # -- jobs --------------------------------------------------------------------------------

    def create_training_job(self, hyperparameters: dict[str, str | int | float], job_name: str | None = None,
                            validation: str = "test", seed: int | None = None) -> str:
        hps.check_for_sagemaker(hyperparameters)  # first: a local-only option is refused as such, whatever its value
        hp = hps.validate(hyperparameters, local=False)
        if validation != "test":
            raise ValidationError("On AWS the validation channel is the staged test split (validation='test'), "
                                  "as in the workflow notebook.")
        report = self.latest_stage_report()
        if report is None:
            raise ResourceNotFound("No staged data in the bucket: stage the data first.")
        n_train = sum(report.counts["train"].values())
        if hp.num_training_samples != n_train:
            raise ValidationError(f"num_training_samples={hp.num_training_samples} does not match the train channel "
                                  f"({n_train} images): set it to {n_train}.")
        if hp.num_classes != len(report.classes):
            raise ValidationError(f"num_classes={hp.num_classes} does not match the staged classes "
                                  f"({len(report.classes)}): set it to {len(report.classes)}.")
        itype = self.settings.training_instance_type
        if not itype.startswith(GPU_FAMILIES):
            raise ValidationError(f"The image-classification algorithm trains on GPU instances only; {itype} is not "
                                  "one: set SCONES_TRAINING_INSTANCE_TYPE to e.g. ml.p3.2xlarge.")
        role = self.role_arn("sagemaker")
        name = job_name or job_name_now()
        bucket = self.objects.bucket
        request = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {"TrainingImage": image_uri(self.region), "TrainingInputMode": "File",
                                       "EnableSageMakerMetricsTimeSeries": True},
            "RoleArn": role,
            "InputDataConfig": [
                channel("train", f"s3://{bucket}/{report.train_prefix}"),
                channel("validation", f"s3://{bucket}/{report.test_prefix}"),
                channel("train_lst", f"s3://{bucket}/{report.train_lst}"),
                channel("validation_lst", f"s3://{bucket}/{report.test_lst}"),
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": itype, "VolumeSizeInGB": 50},
            "StoppingCondition": {"MaxRuntimeInSeconds": MAX_RUNTIME_SECONDS},
            "HyperParameters": hps.algorithm_only(hps.as_strings(hp, hyperparameters)),
            "Tags": [PROJECT_TAG],
        }
        # The classes in the order the job learns them (class index i = classes[i]), beside its output: a
        # later restage (other classes, another order) must not relabel this job's model.
        try:
            self.describe_training_job(name)
        except ResourceNotFound:
            pass
        else:  # SageMaker refuses the name too: and that job's kept classes must stay as they are
            raise ResourceInUse(f"A training job named {name} already exists: choose another name.")
        self.objects.put_many({classes_key(name): json.dumps({"classes": list(report.classes)}).encode()})
        try:
            with aws_errors(f"creating training job {name}"):
                self.client("sagemaker").create_training_job(**request)
        except SconesError as exc:
            if isinstance(exc, (ResourceLimitExceeded, ValidationError, AccessDenied, ResourceInUse)):
                self.objects.delete_keys([classes_key(name)])  # refused for certain: no job will learn them
            if isinstance(exc, ResourceLimitExceeded):
                raise ResourceLimitExceeded(
                    f"The account's quota for {itype} training is used up or 0 (new accounts often have none): "
                    f"request an increase for '{itype} for training job usage' in Service Quotas. ({exc})") from None
            raise
        self._record_resource("training-job", name)
        return name

    def _epochs(self, name: str, ended: datetime | None) -> tuple[dict[str, float], ...]:
        """Per-epoch metrics from the job's log. A log that may not be read (no logs:FilterLogEvents, or
        throttled) gives none: the job's status still shows, and reading the log itself says why. A job
        ended a while ago has its metrics read once per backend: its log no longer changes."""
        done: dict[str, tuple[dict[str, float], ...]] = self.__dict__.setdefault("_ended_epochs", {})
        seen: dict[str, tuple[dict[str, float], ...]] = self.__dict__.setdefault("_seen_epochs", {})
        if name in done:
            return done[name]
        try:
            epochs = parse_epoch_lines(self._log_text(name).splitlines())
        except (AccessDenied, Throttling):
            return seen.get(name, ())  # what an earlier read found: a throttled look takes no epochs away
        seen[name] = epochs
        if ended is not None and (datetime.now(timezone.utc) - ended).total_seconds() > LOG_SETTLE_SECONDS:
            done[name] = epochs
        return epochs

    def describe_training_job(self, name: str) -> TrainingJob:
        return self._once("training-job", name, self._describe_training_job)

    def _describe_training_job(self, name: str) -> TrainingJob:
        with aws_errors(f"describing training job {name}"):
            d = self.client("sagemaker").describe_training_job(TrainingJobName=name)
        start = d.get("TrainingStartTime") or d["CreationTime"]
        end = d.get("TrainingEndTime")
        seconds = ((end or datetime.now(timezone.utc)) - start).total_seconds()
        status = d["TrainingJobStatus"]
        return TrainingJob(
            job_name=d.get("TrainingJobName", name), status=status, secondary_status=d.get("SecondaryStatus", ""),
            hyperparameters=dict(d.get("HyperParameters", {})), created=_iso(d["CreationTime"]),
            ended=_iso(end), seconds=max(0.0, seconds), failure_reason=d.get("FailureReason") or "",
            epochs=self._epochs(name, end),
            model_artifact=(d.get("ModelArtifacts") or {}).get("S3ModelArtifacts") if status == "Completed" else None,
            backend="aws",
        )

    def list_training_jobs(self) -> list[TrainingJob]:
        """This workspace's jobs, and the project's running ones found by tag (SageMaker keeps finished
        jobs for good and cannot delete them, so only a running one elsewhere is worth listing)."""
        kept = self._kept_names("training-job")
        jobs = [self.describe_training_job(n) for n in kept]
        known = {n.lower() for n in kept}
        for name in self._resource_names("training-job"):
            if name.lower() in known:
                continue
            try:  # the status alone first: a finished job's log is not read for nothing
                with aws_errors(f"describing training job {name}"):
                    status = self.client("sagemaker").describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
                if status in ("InProgress", "Stopping"):
                    jobs.append(self.describe_training_job(name))
            except ResourceNotFound:
                continue
        return jobs

    def stop_training_job(self, name: str) -> TrainingJob:
        with aws_errors(f"stopping training job {name}"):
            self.client("sagemaker").stop_training_job(TrainingJobName=name)
        return self.describe_training_job(name)

    def training_log(self, name: str) -> str:
        text = self._log_text(name)
        if not text:  # no log yet, or no such job: an unknown name is ResourceNotFound, as locally
            self.describe_training_job(name)
        return text

    def _log_text(self, name: str) -> str:
        logs = self.client("logs")
        out: list[str] = []
        with aws_errors(f"reading the logs of training job {name}"):
            try:
                for page in logs.get_paginator("filter_log_events").paginate(
                        logGroupName=LOG_GROUP, logStreamNamePrefix=f"{name}/"):
                    out += [e["message"] for e in page.get("events", [])]
            except logs.exceptions.ResourceNotFoundException:
                return ""
        return "\n".join(out)

    def evaluate_training_job(self, name: str) -> Evaluation:
        raise ValidationError(
            "A SageMaker-trained model runs only in SageMaker's container: deploy it and send the test images "
            "to the endpoint to evaluate it (models do not cross backends).")

    def training_step_status(self) -> StepStatus:
        names = self._kept_names("training-job")
        if not names:
            return StepStatus("train", "not_started", "No training job yet.")
        job = self.describe_training_job(names[0])
        if job.status in ("InProgress", "Stopping"):
            return StepStatus("train", "in_progress", f"{job.job_name}: {job.secondary_status}.")
        if job.status == "Completed":
            return StepStatus("train", "done", f"{job.job_name} completed on SageMaker.")

        def newest_completed() -> TrainingJob | None:
            for name in names[1:6]:  # a few: each look reads the job (and its log) on every Home redraw
                try:
                    earlier = self.describe_training_job(name)
                except SconesError:  # gone, throttled, not allowed: the step says the newest job's own state
                    continue
                if earlier.status == "Completed":
                    return earlier
            return None
        return stopped_or_failed(job, newest_completed)

    # -- models ------------------------------------------------------------------------------

    def create_model(self, job_name: str, model_name: str | None = None) -> Model:
        job = self.describe_training_job(job_name)
        if job.status != "Completed" or not job.model_artifact:
            raise ValidationError(f"Training job {job_name} is {job.status}, not Completed: a model needs a "
                                  "completed job's artifact.")
        name = model_name or f"{job_name}-model"[:63]
        role = self.role_arn("sagemaker")
        with aws_errors(f"creating model {name}"):
            self.client("sagemaker").create_model(
                ModelName=name, ExecutionRoleArn=role, Tags=[PROJECT_TAG],
                PrimaryContainer={"Image": image_uri(self.region), "ModelDataUrl": job.model_artifact})
        self._record_resource("model", name)
        return self.describe_model(name)

    def describe_model(self, name: str) -> Model:
        return self._once("model", name, self._describe_model)

    def _describe_model(self, name: str) -> Model:
        with aws_errors(f"describing model {name}"):
            d = self.client("sagemaker").describe_model(ModelName=name)
        artifact = d.get("PrimaryContainer", {}).get("ModelDataUrl", "")
        m = re.search(r"/output/([^/]+)/output/model\.tar\.gz$", artifact)
        job_name = m.group(1) if m else ""
        classes = self._job_classes(job_name)
        shape = (3, 32, 32)
        metrics: dict[str, float] = {}
        if job_name:
            try:
                job = self.describe_training_job(job_name)
                metrics = job.final_metrics
                shape = tuple(int(x) for x in job.hyperparameters.get("image_shape", "3,32,32").split(","))  # type: ignore[assignment]
            except ResourceNotFound:
                pass
        return Model(model_name=d.get("ModelName", name), job_name=job_name, model_artifact=artifact, created=_iso(d["CreationTime"]) or "",
                     classes=classes, image_shape=shape, metrics=metrics, backend="aws")

    def _job_classes(self, job_name: str) -> tuple[str, ...]:
        """The classes a job learned, kept beside its output; the staged ones for a job started before they
        were kept (or by other means)."""
        kept: dict[str, tuple[str, ...]] = self.__dict__.setdefault("_kept_job_classes", {})
        if job_name and job_name not in kept:
            try:
                kept[job_name] = tuple(json.loads(self.objects.get(classes_key(job_name)))["classes"])
            except (ResourceNotFound, ValueError, KeyError, TypeError):
                pass  # none kept (an older job), or not ours after all: the staged classes
        if job_name in kept:  # written once when the job started: never changes
            return kept[job_name]
        report = self.latest_stage_report()
        return tuple(report.classes) if report else ()

    def delete_model(self, name: str) -> None:
        with aws_errors(f"deleting model {name}"):
            self.client("sagemaker").delete_model(ModelName=name)
        self._forget_resource("model", name)

    def delete_training_job(self, name: str) -> None:
        """SageMaker keeps training job records (they cost nothing): delete its artifacts, and forget it in
        this workspace. A running job is stopped first and kept until it has stopped: SageMaker may still
        upload its artifacts while it stops, and a forgotten job's artifacts would stay in the bucket."""
        job = self.describe_training_job(name)
        if job.status == "InProgress":
            self.stop_training_job(name)
        if job.status in ("InProgress", "Stopping"):
            raise ResourceInUse(f"Training job {name} is stopping (SageMaker may still write its artifacts): clean "
                                "up again once it shows Stopped.")
        users = [m.model_name for m in self.list_models() if m.job_name == name]
        if users:  # its model.tar.gz is what the model serves
            raise ResourceInUse(f"Model {users[0]} was made from training job {name}: delete the model first.")
        self.objects.delete_keys([o.key for o in self.objects.list(f"output/{name}/")])
        self._forget_resource("training-job", name)

    def list_models(self) -> list[Model]:
        return self._describe_all("model", self.describe_model)
