"""What every backend shares: the workspace (SQLite records, worker jobs) and staging through an
`ObjectStore`. The local backend puts its bucket on disk; the AWS backend puts it on S3."""
from __future__ import annotations

import functools
import re
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from backend import cifar, staging
from backend.api import (
    JOB_FAILED, JOB_IN_PROGRESS, ArchiveError, ArchiveInfo, BillingNotice, CleanupReport, DownloadError, IdleEndpoint, Job,
    ProgressCallback, ResourceInUse, ResourceNotFound, RolePlan, StagedImage, StageReport, StepStatus, StoredObject,
    SERVING_STATUSES, ValidationError,
)
from backend.local.db import Database, dumps, loads
from backend.local.jobs import JobRunner, utcnow
from backend.objects import ObjectStore
from backend.settings import DEFAULT_CLASSES, SAMPLE_ARCHIVE, Settings

MAX_UPLOAD_BYTES = 250 * 1024 * 1024  # .streamlit/config.toml's maxUploadSize
ROLES_ARE_AWS = ("IAM roles are an AWS thing: the local backend needs none (use --backend aws, or "
                 "SCONES_BACKEND=aws, to provision them).")


def normalize_classes(classes: list[str] | tuple[str, ...] | None) -> list[str]:
    if not classes:
        return list(DEFAULT_CLASSES)
    return [c.strip() for c in classes if c and c.strip()]


@functools.lru_cache(maxsize=1)
def sample_classes() -> tuple[str, ...]:
    """The classes the bundled sample has images of (read once: the sample is 3 MB)."""
    archive = cifar.read_archive(SAMPLE_ARCHIVE)
    ids = sorted({int(i) for split in archive.splits.values() for i in split.fine_labels})
    return tuple(archive.fine_label_names[i] for i in ids)


# What each step's resources are, as the Clean up step's detail names them when they are back (or left).
HOLDING_WORDS = {"train": "training jobs", "deploy": "models and endpoints", "workflow": "the workflow"}
# What a workspace without an endpoint may still hold of the deploy step, and the backend method that lists it.
LEFT_WITHOUT_ENDPOINT = {"models": "list_models", "endpoint configs": "list_endpoint_configs"}


class WorkspaceBackend:
    name = "workspace"
    objects: ObjectStore

    def __init__(self, settings: Settings):
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_path)
        self.jobs = JobRunner(self.db, settings.home, settings.logs_dir, self.name)

    # -- workspace -------------------------------------------------------------------------

    def describe_workspace(self) -> dict[str, str]:
        return {"backend": self.name, "home": str(self.settings.home), "bucket": self.objects.bucket}

    def step_statuses(self) -> dict[str, StepStatus]:
        steps = {s: StepStatus(s, "not_started", "Not started.") for s in ("stage", "train", "deploy", "workflow", "monitor", "cleanup")}
        steps["stage"] = self._stage_status()
        steps.update(self.resource_step_statuses())
        read: dict[str, list] = {}  # the models and endpoint configs, listed once for the two steps that ask

        def listed(kind: str) -> list:
            if kind not in read:
                read[kind] = getattr(self, LEFT_WITHOUT_ENDPOINT[kind], list)()
            return read[kind]

        steps["deploy"] = self._deploy_after_endpoints_went(steps["deploy"], listed)
        steps["workflow"] = self._workflow_reachable(steps["workflow"])
        steps["cleanup"] = self._cleanup_status(steps, listed)
        return steps

    def resource_step_statuses(self) -> dict[str, StepStatus]:
        """The train, deploy, workflow and monitor steps, from the backend's own records."""
        return {}

    def workflow_targets(self) -> dict[str, str]:
        """{state machine: the endpoint its functions call}, of the machines that call functions."""
        return {}

    def _deploy_after_endpoints_went(self, step: StepStatus, listed: Callable[[str], list]) -> StepStatus:
        """No endpoint, but a model is there (its endpoint deleted, or none made yet): say so, not 'No endpoint yet'
        as on a fresh workspace."""
        if step.state != "not_started":
            return step
        models = listed("models")
        if not models:  # an endpoint config left without its model reads as a fresh workspace otherwise (audit)
            configs = listed("endpoint configs")
            if configs:
                return StepStatus("deploy", "not_started", f"No endpoint now; {len(configs)} endpoint config"
                                  f"{'s are' if len(configs) > 1 else ' is'} left (the Clean up page lists "
                                  f"{'them' if len(configs) > 1 else 'it'}).")
            return step
        newest = max(models, key=lambda m: m.created)
        more = f" (and {len(models) - 1} more)" if len(models) > 1 else ""
        return StepStatus("deploy", "not_started", f"No endpoint now; model {newest.model_name}{more} is ready to deploy.")

    def _workflow_reachable(self, step: StepStatus) -> StepStatus:
        """A deployed workflow whose endpoint is gone (or not InService) fails at classifyImage: the step says
        so rather than 'done' from its past executions (as the Workflow page warns)."""
        if step.state == "in_progress" or not (targets := self.workflow_targets()):
            return step
        status = {e.endpoint_name: e.status for e in getattr(self, "list_endpoints", list)()}
        broken = [(m, ep, status.get(ep)) for m, ep in targets.items() if status.get(ep) not in SERVING_STATUSES]
        if not broken:
            return step
        machine, endpoint, now = broken[0]
        why = "no longer exists" if now is None else f"is {now}"
        more = f" ({len(broken) - 1} other state machine(s) too)" if len(broken) > 1 else ""
        return StepStatus("workflow", "failed", f"The endpoint {endpoint} that {machine} calls {why}{more}: its "
                                                "executions will fail; choose an InService endpoint on the Workflow "
                                                f"page. {step.detail}".rstrip())

    def record_cleanup(self, deleted: list[tuple[str, str]], left: list[tuple[str, str, str]]) -> None:
        """Keep a cleanup's outcome for the pages; one that had nothing to do is not one."""
        if not deleted and not left:
            return
        self.db.execute("INSERT INTO cleanups (at, deleted, left_over) VALUES (?, ?, ?)",
                        (utcnow(), dumps([list(d) for d in deleted]), dumps([list(x) for x in left])))

    def last_cleanup(self, deleted_something: bool = False) -> tuple[str, CleanupReport] | None:
        """(when, what it deleted and left with the reasons) of the newest cleanup, page's or CLI's; with
        `deleted_something`, of the newest one that deleted anything (not one that every resource refused)."""
        where = "WHERE deleted != '[]' " if deleted_something else ""
        row = self.db.query_one(f"SELECT at, deleted, left_over FROM cleanups {where}ORDER BY id DESC LIMIT 1")
        if row is None:
            return None
        return row["at"], CleanupReport(tuple(tuple(d) for d in loads(row["deleted"])),
                                        tuple(tuple(x) for x in loads(row["left_over"])))

    def last_deleted(self, kind: str, name: str) -> str | None:
        """When a cleanup last deleted this resource (ISO 8601 UTC), or None."""
        needle = f"%{dumps([kind, name])}%"
        row = self.db.query_one("SELECT at FROM cleanups WHERE deleted LIKE ? ORDER BY id DESC LIMIT 1", (needle,))
        return None if row is None else row["at"]

    def _cleanup_status(self, steps: dict[str, StepStatus], listed: Callable[[str], list]) -> StepStatus:
        """Done once a cleanup deleted something and no step holds resources any more; while train, deploy
        or the workflow still hold some (a partial cleanup, or a new round of work since), in progress."""
        newest, last = self.last_cleanup(), self.last_cleanup(deleted_something=True)
        refused = ""
        if newest is not None and not newest[1].deleted:
            refused = (f" The last clean up ({newest[0].replace('T', ' ')[:19]} UTC) deleted nothing: "
                       f"{len(newest[1].left)} left, with the reason on the Clean up page.")
        if last is None:
            costs = " and what it costs an hour" if self.name == "aws" else " and its size"  # locally nothing bills
            return StepStatus("cleanup", "not_started", "Nothing cleaned up yet: the Clean up page lists what "
                                                        f"the project created{costs}." + refused)
        at, report = last
        deleted, left = report.deleted, report.left
        detail = f"Last clean up {at.replace('T', ' ')[:19]} UTC: deleted {len(deleted)} resource{'s' if len(deleted) != 1 else ''}"
        if left:
            detail += f"; {len(left)} left, with the reason on the Clean up page"
        holding = []
        for step, words in HOLDING_WORDS.items():
            if step in steps and steps[step].state != "not_started":
                holding.append(words)
            elif step == "deploy" and step in steps:  # no endpoint, but models or endpoint configs may be left (audit)
                holding += [kind for kind in LEFT_WITHOUT_ENDPOINT if listed(kind)]
        if holding:
            return StepStatus("cleanup", "in_progress", f"{detail}. Made since or left: {', '.join(holding)}; "
                                                        f"the Clean up page lists every resource.{refused}")
        return StepStatus("cleanup", "done", detail + "." + refused)

    def _stage_status(self) -> StepStatus:
        job = self.jobs.latest("stage")
        if job and job.status == JOB_IN_PROGRESS:
            return StepStatus("stage", "in_progress", f"{job.message} ({job.progress:.0%}).")
        report = self.latest_stage_report()
        if job and job.status == JOB_FAILED and report is None:
            cleared = self.last_deleted("data", "staged-images")
            if cleared is None or job.updated > cleared:  # a failure from before the data was deleted: not this state
                return StepStatus("stage", "failed", job.failure_reason)
        if report is not None:
            n = sum(sum(c.values()) for c in report.counts.values())
            detail = f"{n:,} images of {', '.join(report.classes)} in s3://{report.bucket}/."
            if job and job.status == JOB_FAILED:
                detail += f" The last staging attempt failed and changed nothing: {job.failure_reason}"
            return StepStatus("stage", "done", detail)
        return StepStatus("stage", "not_started", "No data staged yet.")

    # -- staging ---------------------------------------------------------------------------

    def resolve_source(self, source: str | None) -> str:
        """Check a source before any work starts: 'sample', 'official', a URL or an existing file."""
        source = (source or "official").strip()
        if source in ("sample", "official"):
            return source
        url = re.match(r"^(https?)://", source, re.IGNORECASE)
        if url:  # a scheme is case-insensitive; the rest of the backend reads it lower-case
            source = url[1].lower() + source[len(url[1]):]
            if re.search(r"[\x00-\x20\x7f]", source):  # urlsplit drops tabs; http.client quotes the rest back
                raise ValidationError("The address holds a space or a control character: enter it without them "
                                      "(a space in a path is written %20).")
            shown = cifar.redact_url(source)  # never a password or a presigned signature in a message
            try:
                parts = urlsplit(source)
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError:
                raise ValidationError(f"{shown} is not a valid address (its host or port cannot be read): enter "
                                      "the whole address, such as https://mirror.example.com/cifar-100-python.tar.gz.") from None
            if parts.username is not None or parts.password is not None:
                raise ValidationError("Addresses with a user name or password are not supported (they would not be "
                                      "sent, and could be shown): use an address without them, such as a presigned "
                                      "URL, or download the archive and give its path.")
            if not parts.hostname:
                raise ValidationError(f"{shown} names no host: enter the whole address, such as "
                                      "https://mirror.example.com/cifar-100-python.tar.gz.")
            return source
        scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", source)
        if scheme:
            raise ValidationError(f"{scheme[1]}:// sources are not supported: give an http:// or https:// URL, "
                                  "a path to the archive on this machine, or 'sample'.")
        path = Path(source).expanduser()
        if not path.is_file():
            raise ResourceNotFound(f"No archive file at {path}: check the path, or use the bundled sample.")
        return str(path.resolve())

    def start_staging(self, source: str | None = None, classes: list[str] | None = None,
                      fallback_to_sample: bool = False) -> str:
        source = self.resolve_source(source)
        classes = normalize_classes(classes)
        if len(set(classes)) < 2:
            raise ValidationError("Choose at least two different classes: a classifier needs two or more.")
        if source == "sample":  # known at once: refused here (bad input), not as a staging job that fails
            missing = [c for c in classes if c not in sample_classes()]
            if missing:
                raise ValidationError(
                    f"The bundled sample holds {' and '.join(sample_classes())} images only, not "
                    f"{', '.join(repr(c) for c in missing)}: choose among those, or stage the official archive.")
        self.check_ready_to_stage()
        self._check_no_training_reads_the_data()
        running = self.jobs.running("stage")
        if running:
            raise ResourceInUse(f"Staging job {running[0].job_id} is still running; wait for it to finish.")
        return self.jobs.start("stage", {"source": source, "classes": classes, "fallback_to_sample": fallback_to_sample})

    def _check_no_training_reads_the_data(self) -> None:
        """A training job that has not ended reads (or is about to read) the staged lists and images, and has
        recorded their class names: staging again under it would train it on other data with the old names."""
        listing = getattr(self, "list_training_jobs", None)
        busy = [j.job_name for j in (listing() if listing else []) if j.status in ("InProgress", "Stopping")]
        if busy:
            raise ResourceInUse(f"Training job {busy[0]} is still running on the staged data; wait for it to end "
                                "(or stop it) before staging again.")

    def check_ready_to_stage(self) -> None:
        """What the backend needs before a staging job can work (the AWS backend: region, credentials, bucket
        name), so a missing setting is refused at once with its one sentence instead of failing the job."""

    def run_job(self, job: Job, progress: ProgressCallback) -> dict[str, Any]:
        """Called in the worker process."""
        if job.kind == "stage":
            p = job.params
            try:
                report = self.stage_data(p["source"], p["classes"], progress, p.get("fallback_to_sample", False),
                                         job.job_id)
            except ArchiveError as exc:  # an upload refused for what it holds is of no further use: not kept
                if self.discard_upload(p["source"]):
                    exc.message = exc.message.rstrip(".") + ". The uploaded copy was deleted."
                raise
            return report.to_dict()
        raise ValidationError(f"Unknown job kind {job.kind!r}.")

    def _archive_path(self, source: str, progress: ProgressCallback) -> Path:
        if source == "sample":
            return SAMPLE_ARCHIVE
        if source == "official" or re.match(r"^https?://", source):
            url = self.settings.cifar_url if source == "official" else source
            return cifar.download(url, self.settings.downloads_dir, self.settings.cifar_md5, progress,
                                  self.settings.download_timeout, span=(0.0, 0.5))
        return Path(source)

    def stage_data(self, source: str | None = None, classes: list[str] | None = None,
                   progress: ProgressCallback | None = None, fallback_to_sample: bool = False,
                   job_id: str | None = None) -> StageReport:
        source = self.resolve_source(source)
        classes = normalize_classes(classes)
        progress = progress or (lambda f, m: None)
        if job_id is None:  # called directly, not as the job start_staging checked
            self._check_no_training_reads_the_data()
        bucket = self.objects.bucket
        started = time.perf_counter()
        previous = self.db.query_one("SELECT state, report, job_id FROM datasets WHERE bucket=?", (bucket,))
        self._set_dataset(bucket, "staging", None, job_id)
        note = ""
        try:
            try:
                path = self._archive_path(source, progress)
            except DownloadError as exc:
                if not fallback_to_sample:
                    raise
                note = f"{exc} Staged the bundled sample (1,200 real CIFAR-100 images) instead."
                source, path = "sample", SAMPLE_ARCHIVE
            shown = cifar.redact_url(source) if re.match(r"^https?://", source) else source  # the report is shown
            report = staging.stage_archive(path, classes, self.objects, progress, shown)
            report["seconds"] = time.perf_counter() - started
            report["note"] = note
            report["staged_at"] = utcnow()
            result = StageReport.from_dict(report)
        except BaseException:
            # Refused before the first image was written (the manifest is still there): the staged
            # dataset is as it was, and stays the one the pages and training use.
            if previous is not None and previous["state"] == "staged" and staging.manifest_keys(self.objects):
                self._set_dataset(bucket, "staged", loads(previous["report"]), previous["job_id"])
            else:
                self._set_dataset(bucket, "failed", None, job_id)
            raise
        self._set_dataset(bucket, "staged", result.to_dict(), job_id)
        return result

    def _set_dataset(self, bucket: str, state: str, report: dict | None, job_id: str | None) -> None:
        self.db.execute(
            "INSERT INTO datasets(bucket, state, report, job_id, updated) VALUES(?,?,?,?,?) "
            "ON CONFLICT(bucket) DO UPDATE SET state=excluded.state, report=excluded.report, "
            "job_id=excluded.job_id, updated=excluded.updated",
            (bucket, state, None if report is None else dumps(report), job_id, utcnow()),
        )

    def latest_stage_report(self) -> StageReport | None:
        row = self.db.query_one("SELECT report FROM datasets WHERE bucket=? AND state='staged'", (self.objects.bucket,))
        return StageReport.from_dict(loads(row["report"])) if row else None

    def save_upload(self, filename: str, data: bytes) -> str:
        if not data:
            raise ValidationError(f"The uploaded file {filename!r} is empty; choose the CIFAR-100 .tar.gz archive.")
        if len(data) > MAX_UPLOAD_BYTES:
            raise ValidationError(f"The uploaded file is {len(data) / 2**20:,.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB.")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename).name)[-80:] or "upload"
        # A folder of its own keeps the file's name, which errors about the archive name to the operator.
        folder = self.settings.uploads_dir / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / safe
        tmp = folder / (".tmp-" + safe)
        tmp.write_bytes(data)
        tmp.replace(path)
        return str(path)

    def discard_upload(self, source: str) -> bool:
        """Delete an uploaded archive (its folder under uploads/) that cannot be staged; False when `source` is not
        one (a path elsewhere is never touched)."""
        try:
            path = Path(source).resolve()
            uploads = self.settings.uploads_dir.resolve()
        except (OSError, ValueError):
            return False
        if path.parent.parent != uploads or not path.is_file():
            return False
        shutil.rmtree(path.parent, ignore_errors=True)
        return not path.exists()

    def archive_info(self, source: str | None = None) -> ArchiveInfo:
        source = self.resolve_source(source or "sample")
        if source == "sample":
            return cifar.describe_archive(SAMPLE_ARCHIVE, "bundled sample")
        if source == "official" or re.match(r"^https?://", source):
            cached = self.settings.downloads_dir / f"cifar-100-python-{self.settings.cifar_md5}.tar.gz"
            if not cached.is_file():
                raise ResourceNotFound("The official archive has not been downloaded yet: stage it once, or explore the bundled sample.")
            return cifar.describe_archive(cached, "official download")
        return cifar.describe_archive(Path(source), source)

    def stageable_classes(self, source: str) -> tuple[str, ...]:
        """The classes a staging of `source` may choose: the bundled sample's own two for the sample (start_staging
        refuses the others), every fine label otherwise."""
        return sample_classes() if source == "sample" else self.label_names("sample")

    def label_names(self, source: str = "sample") -> tuple[str, ...]:
        """The 100 fine names (official order) of a local archive; the sample's for a URL."""
        source = self.resolve_source(source)
        path = SAMPLE_ARCHIVE if source in ("sample", "official") or source.startswith("http") else Path(source)
        return cifar.read_archive(path, want_splits=()).fine_label_names

    def staged_samples(self, split: str = "train", per_class: int = 8) -> list[StagedImage]:
        report = self.latest_stage_report()
        if report is None:
            return []
        prefix, lst = (report.train_prefix, report.train_lst) if split == "train" else (report.test_prefix, report.test_lst)
        rows = cifar.parse_lst(self.get_object(lst).decode())
        taken: dict[int, int] = {}
        out: list[StagedImage] = []
        for _, cls, rel in rows:
            if taken.get(cls, 0) >= per_class or not 0 <= cls < len(report.classes):
                continue
            taken[cls] = taken.get(cls, 0) + 1
            key = prefix + rel
            out.append(StagedImage(key, split, report.classes[cls], cls, self.get_object(key)))
        return sorted(out, key=lambda im: im.class_index)

    def test_image_keys(self) -> list[str]:
        """Keys of the staged test images, in .lst order."""
        report, rows = self._test_rows()
        return [report.test_prefix + rel for _, _, rel in rows]

    def test_image_labels(self) -> dict[str, str]:
        """The class of each staged test image, by key (what an execution's answer is checked against)."""
        report, rows = self._test_rows()
        return {report.test_prefix + rel: report.classes[cls] for _, cls, rel in rows if 0 <= cls < len(report.classes)}

    def _test_rows(self) -> tuple[Any, list[tuple[int, int, str]]]:
        """The latest staging's report and its test.lst rows (none while nothing is staged)."""
        report = self.latest_stage_report()
        if report is None:
            return None, []
        return report, cifar.parse_lst(self.get_object(report.test_lst).decode())

    def default_threshold(self) -> float:
        return self.settings.threshold

    # -- guardrails (the AWS backend brings its own: nothing here bills or needs a role) ---------

    def billing_notice(self, kind: str, instance_type: str | None = None) -> BillingNotice | None:
        """What starting a `kind` ('training' or 'endpoint') bills; None where nothing bills."""
        return None

    def idle_endpoints(self, now: datetime | None = None) -> list[IdleEndpoint]:
        return []

    def role_plan(self) -> list[RolePlan]:
        raise ValidationError(ROLES_ARE_AWS)

    def provision_roles(self, plan: list[RolePlan] | None = None) -> dict[str, str]:
        raise ValidationError(ROLES_ARE_AWS)

    # -- jobs ------------------------------------------------------------------------------

    def describe_job(self, job_id: str) -> Job:
        return self.jobs.describe(job_id)

    def list_jobs(self, kind: str | None = None, limit: int = 50) -> list[Job]:
        return self.jobs.list(kind, limit)

    def latest_job(self, kind: str) -> Job | None:
        return self.jobs.latest(kind)

    def wait_job(self, job_id: str, timeout: float | None = None) -> Job:
        return self.jobs.wait(job_id, timeout)

    def stop_job(self, job_id: str) -> Job:
        return self.jobs.stop(job_id)

    # -- objects ---------------------------------------------------------------------------

    def list_objects(self, prefix: str = "") -> list[StoredObject]:
        return self.objects.list(prefix)

    def get_object(self, key: str) -> bytes:
        return self.objects.get(key)
