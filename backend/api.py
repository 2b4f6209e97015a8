"""The one door to everything that does work: the Backend protocol, its records and its errors.

Pages and the CLI see only what is defined here. Both backends (local and AWS) return these
frozen records and raise these named errors, so a page never indexes a raw SDK dict and never
needs to know which backend answered.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

# ---------------------------------------------------------------------------------------------
# Named errors. Each message is one sentence a person can act on.
# ---------------------------------------------------------------------------------------------


class SconesError(Exception):
    """Base of every error the backend raises on purpose; `code` follows AWS's error codes."""

    code = "SconesError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(SconesError):
    code = "ValidationException"


class ResourceNotFound(SconesError):
    code = "ResourceNotFound"


class ResourceInUse(SconesError):
    code = "ResourceInUse"


class ArchiveError(ValidationError):
    """The archive is not a usable CIFAR-100 python archive (corrupt, truncated, wrong layout)."""

    code = "InvalidArchive"


class UnsafeArchiveError(ArchiveError):
    """A member would write outside its folder, or is a link or a device."""

    code = "UnsafeArchive"


class UnsafePickleError(ArchiveError):
    """A pickle tried to call something the CIFAR format never needs."""

    code = "UnsafePickle"


class ChecksumMismatch(ArchiveError):
    code = "ChecksumMismatch"


class DownloadError(SconesError):
    code = "DownloadError"


class InvalidKey(ValidationError):
    code = "InvalidKey"


class AccessDenied(SconesError):
    code = "AccessDenied"


class Throttling(SconesError):
    code = "Throttling"


class ResourceLimitExceeded(SconesError):
    code = "ResourceLimitExceeded"


class BatchPartlyStarted(SconesError):
    """Some executions of a batch started and the others were refused: `started` holds the ARNs that run,
    so nobody starts them again by retrying the whole batch."""

    def __init__(self, message: str, started: list[str], cause: SconesError):
        super().__init__(message)
        self.started, self.cause = list(started), cause
        self.code = cause.code


class CredentialsError(SconesError):
    code = "CredentialsError"


class NetworkError(SconesError):
    """AWS (or the proxy before it) could not be reached, or the connection failed."""

    code = "NetworkError"


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------

STEPS = ("stage", "train", "deploy", "workflow", "monitor", "cleanup")
# The endpoint name the CLI and the Deploy page suggest (the AWS Lambda role's first policy covers scones-*).
DEFAULT_ENDPOINT = "scones-endpoint"
STEP_STATES = ("not_started", "in_progress", "done", "failed")

# Job statuses follow SageMaker's (InProgress -> Completed | Failed | Stopped).
JOB_IN_PROGRESS = "InProgress"
JOB_COMPLETED = "Completed"
JOB_FAILED = "Failed"
JOB_STOPPED = "Stopped"
JOB_TERMINAL = (JOB_COMPLETED, JOB_FAILED, JOB_STOPPED)


@dataclass(frozen=True)
class StepStatus:
    step: str
    state: str  # one of STEP_STATES
    detail: str = ""


def stopped_or_failed(job: "TrainingJob", newest_completed: Callable[[], "TrainingJob | None"]) -> StepStatus:
    """The train step when the newest job did not complete: when an earlier one completed, its model is
    there to deploy and the step stays done, naming what became of the newer job (stopped, or failed and
    why); with none, the step failed."""
    reason = f": {job.failure_reason.rstrip('.')}" if job.failure_reason else ""
    earlier = newest_completed()
    if earlier is not None:
        what = "was stopped" if job.status == "Stopped" else f"{job.status.lower()}{reason}"
        return StepStatus("train", "done", f"{earlier.job_name} completed; the newer job {job.job_name} {what}.")
    return StepStatus("train", "failed", f"{job.job_name} {job.status.lower()}{reason}.")


# A model's metric when its artifact is the 8-bit graph (local int8_serving): that graph's validation accuracy, what
# the endpoint answers with; validation:accuracy stays PyTorch's at the last epoch, as the training chart shows it.
SERVED_ACCURACY = "validation:accuracy_served"


def failed_endpoints_note(endpoints: list[Any], shown: str) -> str:
    """' X is Failed.' for endpoints other than the one a deploy step names (`shown`): a step that reads done
    because one endpoint serves must not hide that another one died."""
    failed = [e.endpoint_name for e in endpoints if e.status == "Failed" and e.endpoint_name != shown]
    if not failed:
        return ""
    return f" {failed[0]} is Failed." if len(failed) == 1 else f" {len(failed)} endpoints are Failed: {', '.join(failed)}."


@dataclass(frozen=True)
class StageReport:
    """What a staging run wrote: the numbers the page and `scones stage` show."""

    counts: dict[str, dict[str, int]]  # {split: {class: n}}
    classes: tuple[str, ...]
    bucket: str
    train_prefix: str
    test_prefix: str
    train_lst: str
    test_lst: str
    seconds: float
    source: str
    note: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    staged_at: str = ""  # ISO 8601 UTC, when the run ended ("" for reports from before it was kept)

    def data_hyperparameters(self) -> dict[str, str]:
        """num_classes and num_training_samples as this staging decides them (SageMaker's strings)."""
        return {"num_classes": str(len(self.classes)),
                "num_training_samples": str(sum(self.counts.get("train", {}).values()))}

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "classes": list(self.classes),
            "bucket": self.bucket,
            "train_prefix": self.train_prefix,
            "test_prefix": self.test_prefix,
            "train_lst": self.train_lst,
            "test_lst": self.test_lst,
            "seconds": round(self.seconds, 3),
            "source": self.source,
            "note": self.note,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "staged_at": self.staged_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageReport":
        return cls(
            counts=d["counts"], classes=tuple(d["classes"]), bucket=d["bucket"],
            train_prefix=d["train_prefix"], test_prefix=d["test_prefix"],
            train_lst=d["train_lst"], test_lst=d["test_lst"], seconds=float(d["seconds"]),
            source=d.get("source", ""), note=d.get("note", ""), timings=d.get("timings", {}),
            staged_at=d.get("staged_at", ""),
        )


@dataclass(frozen=True)
class StagedImage:
    key: str
    split: str
    label: str
    class_index: int
    data: bytes  # PNG


@dataclass(frozen=True)
class Job:
    """A long operation running outside the caller (a worker process locally)."""

    job_id: str
    kind: str
    status: str  # JOB_* above
    progress: float  # 0..1
    message: str
    created: str  # ISO 8601 UTC
    updated: str
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    failure_reason: str = ""

    @property
    def done(self) -> bool:
        return self.status in JOB_TERMINAL


@dataclass(frozen=True)
class ArrayInfo:
    key: str
    kind: str  # "ndarray", "list", "bytes"...
    shape: tuple[int, ...]
    dtype: str = ""


@dataclass(frozen=True)
class ArchiveMember:
    name: str
    size: int
    type: str  # "file" or "dir"


@dataclass(frozen=True)
class ArchiveInfo:
    """What the "Explore archive" view shows: files, pickle keys, array shapes, label names."""

    source: str
    members: tuple[ArchiveMember, ...]
    pickles: dict[str, tuple[ArrayInfo, ...]]  # {"train": (...), "test": (...), "meta": (...)}
    fine_label_names: tuple[str, ...]
    coarse_label_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]  # {split: {fine name: n}} for the names present


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    modified: float  # epoch seconds


ProgressCallback = Callable[[float, str], None]


@runtime_checkable
class Backend(Protocol):
    """What every backend offers. Start calls return an id at once; the caller polls."""

    name: str

    def describe_workspace(self) -> dict[str, str]: ...

    def step_statuses(self) -> dict[str, StepStatus]: ...

    # staging
    def start_staging(self, source: str, classes: list[str] | None = None,
                      fallback_to_sample: bool = False) -> str: ...

    def stage_data(self, source: str, classes: list[str] | None = None,
                   progress: ProgressCallback | None = None,
                   fallback_to_sample: bool = False) -> StageReport: ...

    def save_upload(self, filename: str, data: bytes) -> str: ...

    def discard_upload(self, source: str) -> bool: ...

    def latest_stage_report(self) -> StageReport | None: ...

    def archive_info(self, source: str) -> ArchiveInfo: ...

    def label_names(self, source: str = "sample") -> tuple[str, ...]: ...

    def stageable_classes(self, source: str) -> tuple[str, ...]: ...

    def staged_samples(self, split: str = "train", per_class: int = 8) -> list[StagedImage]: ...

    def test_image_labels(self) -> dict[str, str]: ...

    # jobs
    def describe_job(self, job_id: str) -> Job: ...

    def list_jobs(self, kind: str | None = None, limit: int = 50) -> list[Job]: ...

    def latest_job(self, kind: str) -> Job | None: ...

    # objects
    def list_objects(self, prefix: str = "") -> list[StoredObject]: ...

    def get_object(self, key: str) -> bytes: ...


# ---------------------------------------------------------------------------------------------
# Training (SageMaker's CreateTrainingJob / DescribeTrainingJob shapes, as records)
# ---------------------------------------------------------------------------------------------

TRAINING_STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
SECONDARY_STATUSES = ("Starting", "Downloading", "Training", "Uploading", "Completed", "Failed", "Stopped")


@dataclass(frozen=True)
class TrainingJob:
    job_name: str
    status: str  # TRAINING_STATUSES
    secondary_status: str  # SECONDARY_STATUSES
    hyperparameters: dict[str, str]  # as SageMaker stores them: strings
    created: str  # ISO 8601 UTC
    ended: str | None = None
    seconds: float = 0.0
    failure_reason: str = ""
    # one dict per epoch: {"epoch": 1, "train:accuracy": 0.8, "validation:accuracy": 0.7, "train:loss": 0.5}
    epochs: tuple[dict[str, float], ...] = ()
    model_artifact: str | None = None  # s3://bucket/key of model.tar.gz once uploaded
    backend: str = "local"
    # What validation:accuracy was measured on: "test" (the test split, as the workflow's validation
    # channel) or "holdout" (20% of the training data, kept out of training; local only).
    validation: str = "test"
    # Local jobs with int8_serving=1: the served 8-bit graph's accuracy on the same validation images
    # (SERVED_ACCURACY in the model's metrics). None when the endpoint serves the float graph, whose
    # accuracy is validation:accuracy itself, and on AWS.
    served_accuracy: float | None = None

    @property
    def final_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.epochs[-1].items() if k != "epoch"} if self.epochs else {}


@dataclass(frozen=True)
class Model:
    """As CreateModel: a name bound to an artifact; the pages say which backend it belongs to."""

    model_name: str
    job_name: str
    model_artifact: str
    created: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    metrics: dict[str, float] = field(default_factory=dict)
    backend: str = "local"


@dataclass(frozen=True)
class Evaluation:
    job_name: str
    accuracy: float
    classes: tuple[str, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]  # rows = true class, columns = predicted
    per_class: dict[str, dict[str, float]]  # {class: {"precision", "recall"}}
    worst: tuple[dict[str, Any], ...]  # [{"key", "label", "predicted", "confidence"}] most confidently wrong first


# ---------------------------------------------------------------------------------------------
# Deployment (SageMaker's CreateEndpointConfig / CreateEndpoint / InvokeEndpoint, as records)
# ---------------------------------------------------------------------------------------------

ENDPOINT_STATUSES = ("Creating", "InService", "Updating", "Deleting", "Failed", "OutOfService")
SERVING_STATUSES = ("InService", "Updating", "SystemUpdating")  # an endpoint being updated goes on answering
VARIANT_NAME = "AllTraffic"


@dataclass(frozen=True)
class CaptureConfig:
    enabled: bool = True
    sampling_percent: int = 100  # InitialSamplingPercentage, 0..100
    destination: str = ""  # s3://bucket/prefix (the local bucket locally)
    capture_input: bool = True
    capture_output: bool = True


@dataclass(frozen=True)
class EndpointConfig:
    config_name: str
    model_name: str
    instance_type: str
    capture: CaptureConfig
    created: str
    variant_name: str = VARIANT_NAME


@dataclass(frozen=True)
class Endpoint:
    endpoint_name: str
    status: str  # ENDPOINT_STATUSES
    config_name: str
    model_name: str
    created: str
    updated: str
    capture: CaptureConfig
    failure_reason: str = ""
    url: str = ""  # local: http://127.0.0.1:<port>; AWS: empty
    backend: str = "local"


@dataclass(frozen=True)
class Prediction:
    """One InvokeEndpoint answer, with the class names of the model that gave it."""

    probabilities: tuple[float, ...]
    classes: tuple[str, ...]

    @property
    def index(self) -> int:
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    @property
    def label(self) -> str:
        return self.classes[self.index]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.index]

    @property
    def tied(self) -> tuple[str, ...]:
        """The classes sharing the highest probability when two or more do (label is then only the first of
        them, as argmax picks it); () when one class leads."""
        top = self.confidence
        names = tuple(c for c, p in zip(self.classes, self.probabilities) if p == top)
        return names if len(names) > 1 else ()


# ---------------------------------------------------------------------------------------------
# Workflow (Step Functions state machines and executions, as records)
# ---------------------------------------------------------------------------------------------

EXECUTION_STATUSES = ("RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
THRESHOLD_ERROR = "THRESHOLD_CONFIDENCE_NOT_MET"
DEFAULT_STATE_MACHINE = "scones-workflow"


def input_threshold(execution_input: Any) -> float | None:
    """The threshold an execution was started with for itself, read as filterInferences reads it: a 'threshold'
    (a number, or a string of one, between 0 and 1) in its input, bare or wrapped as {"statusCode", "body"}."""
    body = execution_input
    if isinstance(body, dict) and "body" in body and set(body) <= {"statusCode", "body", "headers", "isBase64Encoded"}:
        body = body["body"]
        if isinstance(body, (str, bytes)):
            try:
                body = json.loads(body)
            except ValueError:
                return None
    value = body.get("threshold") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0.0 <= number <= 1.0 else None


@dataclass(frozen=True)
class StateMachine:
    name: str
    arn: str
    endpoint_name: str
    threshold: float
    functions: dict[str, str]  # function name -> ARN
    definition: dict[str, Any]  # with the ARNs filled in
    created: str
    updated: str
    imported: bool = False
    backend: str = "local"


@dataclass(frozen=True)
class Execution:
    name: str
    arn: str
    state_machine: str
    status: str  # EXECUTION_STATUSES
    start: str
    stop: str | None
    seconds: float | None
    error: str | None
    cause: str | None
    s3_key: str | None
    label: str | None  # predicted class, when the classify step ran
    confidence: float | None
    input: Any = None
    output: Any = None
    # Finished, but its details (error, cause, output) not read yet: AWS rate-limits DescribeExecution, so a
    # long list is described a few at a time. Pages keep polling and count it apart; never set locally.
    details_pending: bool = False
    # The endpoint its functions were configured to call when it started (noted by the backend); None when
    # unknown (an execution from before such notes): the state machine's endpoint now is the only guess then.
    endpoint: str | None = None
    # The threshold it is judged against: its own (a 'threshold' in its input), else the workflow's when it
    # started (noted by the backend); None when unknown (an execution from before such notes).
    threshold: float | None = None


@dataclass(frozen=True)
class StateRun:
    """One state's part in an execution, for the graph and the details view."""

    name: str
    status: str  # not_run | running | succeeded | failed | caught
    input: Any = None
    output: Any = None
    error: str | None = None
    cause: str | None = None


# ---------------------------------------------------------------------------------------------
# Inventory and cleanup
# ---------------------------------------------------------------------------------------------

# Deleted in this order, so nothing is removed while something else still depends on it: the workflow's
# executions are stopped and its state machines and functions go before the endpoint they call (an execution
# still running when the endpoint went failed at classifyImage with EndpointNotFound), then the endpoint
# before its config and model, a model before the training job it was made from.
RESOURCE_KINDS = ("executions", "state-machine", "lambda-function", "endpoint", "endpoint-config", "model",
                  "training-job", "iam-role", "data")


@dataclass(frozen=True)
class Resource:
    kind: str  # RESOURCE_KINDS
    name: str
    status: str
    size_bytes: int | None = None
    hourly_usd: float | None = None  # AWS only: what it costs per hour while it exists
    detail: str = ""
    is_data: bool = False  # staged images, capture, uploads: removed only when data is asked for
    created_here: bool = True  # False: found by the project tag (AWS), not created by this workspace
    busy: str = ""  # what deleting it now would interrupt, in a sentence (executions still running); "" when idle


@dataclass(frozen=True)
class CleanupReport:
    deleted: tuple[tuple[str, str], ...]  # (kind, name)
    left: tuple[tuple[str, str, str], ...]  # (kind, name, reason)


# ---------------------------------------------------------------------------------------------
# Guardrails (AWS: roles the project can provision, what a start bills, endpoints left idle)
# ---------------------------------------------------------------------------------------------

ROLE_KINDS = ("sagemaker", "lambda", "states")


@dataclass(frozen=True)
class RolePlan:
    """One IAM role as it would be created: shown to the operator before anything is created."""

    kind: str  # ROLE_KINDS
    name: str
    trust_policy: dict[str, Any]
    policies: dict[str, dict[str, Any]]  # inline policy name -> policy document
    exists: bool
    arn: str = ""  # known once the role exists


@dataclass(frozen=True)
class BillingNotice:
    """What a start will bill, for the confirmation that comes before it."""

    instance_type: str
    hourly_usd: float | None
    prices_as_of: str
    price_region: str

    @property
    def starts(self) -> str:
        if self.hourly_usd is None:
            return (f"starts {self.instance_type}, which the price table ({self.prices_as_of}) does not list: "
                    "see the SageMaker pricing page")
        return (f"starts {self.instance_type} at about {usd(self.hourly_usd)}/h "
                f"(prices of {self.prices_as_of}, {self.price_region})")

    @property
    def confirmation(self) -> str:
        return f"I understand this {self.starts}"


@dataclass(frozen=True)
class IdleEndpoint:
    """An InService endpoint with no invocations in the last hour, and what it has cost so far."""

    endpoint_name: str
    instance_type: str
    created: str
    hours_running: float
    hours_idle: float  # since its last invocation (or its creation), in whole hours of metrics
    hourly_usd: float | None
    cost_so_far_usd: float | None  # hourly price x hours since creation


def confidence_text(value: float, digits: int = 4) -> str:
    """A confidence cut (not rounded) to `digits` decimals: 0.92996 under a 0.93 threshold reads 0.9299, never
    0.9300 beside THRESHOLD_CONFIDENCE_NOT_MET (the filter compares the full value)."""
    from decimal import ROUND_FLOOR, Decimal

    return str(Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_FLOOR))


def usd(amount: float) -> str:
    """A price from the table: $0.23, or $3.825 where the table has a third decimal."""
    return f"${amount:,.2f}" if round(amount, 2) == round(amount, 6) else f"${amount:,.3f}"


def human_size(n: float | None) -> str:
    """A size in binary units, labelled as such (990.5 KiB, 1.2 GiB): the same everywhere (pages, CLI)."""
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""
