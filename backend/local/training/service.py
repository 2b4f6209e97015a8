"""Training jobs, models and evaluations of the local backend, with SageMaker's names and statuses.

`TrainingService` is held by `LocalBackend`. A create call validates everything it can at once
(hyperparameters, the staged channels) and raises `ValidationError` before any process starts;
then a JobRunner worker process runs `run()`, which reads the channels from the bucket, trains,
records each epoch's metrics as it ends and writes model.tar.gz atomically under the job's output
path. The job's status is the JobRunner's (reconciled with the real process, so a killed worker
reads Failed at once); the secondary status, the metrics and the artifact are this service's rows.

Nothing here imports torch at module level: the dashboard process describes, lists, evaluates
(onnxruntime) and stops jobs without it; only the worker's `run()` imports the trainer.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from backend.api import (
    JOB_COMPLETED, JOB_FAILED, JOB_IN_PROGRESS, JOB_STOPPED, Evaluation, Job, Model, ResourceInUse,
    ResourceLimitExceeded, ResourceNotFound, SERVED_ACCURACY, StepStatus, TrainingJob, ValidationError, stopped_or_failed,
)
from backend.local.db import Database, dumps, loads
from backend.local.jobs import JobRunner, utcnow
from backend.local.store import LocalStore
from backend.local.training import hyperparameters as hps
from backend.local.training.architectures import architecture
from backend.local.training.artifact import ArtifactError, load_artifact, read_members
from backend.local.training.data import Channel, ImageSet, holdout_split, read_channel, read_lst
from backend.local.training.evaluation import evaluate_predictions, evaluation_from_dict, evaluation_to_dict

JOB_KIND = "train"
VALIDATION_CHOICES = ("test", "holdout")
TRAIN_CHANNEL = Channel("train", "train/", "train.lst")
TEST_CHANNEL = Channel("validation", "test/", "test.lst")
MANIFEST_KEY = "dataset.json"
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's TrainingJobName / ModelName
LOG_TAIL_BYTES = 256 * 1024
STOP_POLL_SECONDS = 1.0
OMP_SPIN_COUNT = 20_000

TRAINING_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE training_jobs (
        job_name          TEXT PRIMARY KEY,
        job_id            TEXT NOT NULL UNIQUE,       -- the JobRunner job that runs it
        hyperparameters   TEXT NOT NULL,              -- {name: string}, as SageMaker stores them
        validation        TEXT NOT NULL,              -- test | holdout
        seed              INTEGER NOT NULL,
        secondary_status  TEXT NOT NULL,
        transitions       TEXT NOT NULL DEFAULT '[]', -- [{"status", "start", "message"}]
        output_path       TEXT NOT NULL,              -- s3://bucket/output/<job_name>/output/model.tar.gz
        model_artifact    TEXT,                       -- set once the artifact is completely written
        classes           TEXT NOT NULL DEFAULT '[]',
        created           TEXT NOT NULL
    );
    CREATE INDEX training_jobs_created ON training_jobs(created);
    CREATE TABLE training_metrics (
        job_name  TEXT NOT NULL REFERENCES training_jobs(job_name) ON DELETE CASCADE,
        epoch     INTEGER NOT NULL,
        metrics   TEXT NOT NULL,
        recorded  TEXT NOT NULL,
        PRIMARY KEY (job_name, epoch)
    );
    CREATE TABLE models (
        model_name      TEXT PRIMARY KEY,
        job_name        TEXT NOT NULL,
        model_artifact  TEXT NOT NULL,
        classes         TEXT NOT NULL,
        image_shape     TEXT NOT NULL,
        metrics         TEXT NOT NULL,
        created         TEXT NOT NULL
    );
    CREATE TABLE evaluations (
        job_name    TEXT NOT NULL,
        data_digest TEXT NOT NULL,                    -- of test.lst: a re-staged test split is evaluated afresh
        result      TEXT NOT NULL,
        created     TEXT NOT NULL,
        PRIMARY KEY (job_name, data_digest)
    );
    """,
    # The accuracy of the 8-bit graph the artifact serves (int8_serving=1) on the validation images, set with
    # model_artifact; NULL when the artifact serves the float graph, whose accuracy is validation:accuracy.
    "ALTER TABLE training_jobs ADD COLUMN served_accuracy REAL;",
)


def sagemaker_job_name(base: str = "image-classification") -> str:
    """Like the SageMaker SDK's default: base name, UTC time to the millisecond."""
    now = datetime.now(timezone.utc)
    return f"{base}-{now:%Y-%m-%d-%H-%M-%S}-{now.microsecond // 1000:03d}"


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValidationError(
            f"{what} {name!r} is not valid: use 1 to 63 letters, digits and hyphens, starting with a letter or digit.")
    return name


class TrainingService:
    def __init__(self, db: Database, store: LocalStore, bucket: str, jobs: JobRunner, settings: Any = None):
        self.db, self.store, self.bucket, self.jobs, self.settings = db, store, bucket, jobs, settings
        self.backend_name = getattr(jobs, "backend_name", "local")
        self._float_served: set[str] = set()  # int8_serving jobs whose artifact serves the float graph
        db.migrate("training", TRAINING_MIGRATIONS)

    # -- what the form needs -------------------------------------------------------------------

    def hyperparameter_specs(self) -> list[dict[str, Any]]:
        """Every hyperparameter of the algorithm: name, help, default (string or None), choices, required."""
        out = []
        for spec in hps.SPECS:
            choices = None
            if spec.parse in (hps.flag01,):
                choices = ["0", "1"]
            elif spec.parse is hps.true_false:
                choices = ["True", "False"]
            elif spec.name in ("optimizer", "augmentation_type", "kv_store", "precision_dtype"):
                choices = list({"optimizer": hps.OPTIMIZERS, "augmentation_type": hps.AUGMENTATIONS,
                                "kv_store": hps.KV_STORES, "precision_dtype": hps.PRECISIONS}[spec.name])
            elif spec.name == "num_layers":
                choices = [str(n) for n in hps.NUM_LAYERS]
            default = None if spec.default in (None, ()) else hps.format_value(spec.default)
            out.append({"name": spec.name, "help": hps.help_text(spec.name), "default": default,
                        "choices": choices, "required": spec.required, "allowed": spec.allowed})
        return out

    def default_hyperparameters(self, preset: str = "local") -> dict[str, str]:
        """A preset ('local': chosen for CPU training here; 'sagemaker': the notebook's values for AWS),
        with num_classes and num_training_samples taken from the staged data when there is any."""
        if preset not in hps.PRESETS:
            raise ValidationError(f"Unknown preset {preset!r}: choose one of {', '.join(hps.PRESETS)}.")
        values = dict(hps.PRESETS[preset])
        try:
            rows = read_lst(self.store, self.bucket, TRAIN_CHANNEL)
        except (ResourceNotFound, ValidationError):
            return values
        values["num_training_samples"] = str(len(rows))
        values["num_classes"] = str(max(len(self._dataset_classes()), max(label for _, label, _ in rows) + 1))
        return values

    def describe_network(self, num_layers: int | str, image_shape: str = "3,32,32") -> str:
        try:
            _, h, w = hps.image_shape(image_shape)
            return architecture(int(num_layers), min(h, w)).description
        except ValueError:
            return ""

    # -- jobs ----------------------------------------------------------------------------------

    def create_training_job(self, hyperparameters: dict[str, str | int | float], job_name: str | None = None,
                            validation: str = "test", seed: int | None = None) -> str:
        """Validate at once (ValidationError names the problem), then start a worker; returns the job name."""
        hp = hps.validate(hyperparameters)
        if validation not in VALIDATION_CHOICES:
            raise ValidationError(f"validation={validation!r} is not valid: use 'test' (the staged test split, as "
                                  "the workflow does) or 'holdout' (20% of the training data).")
        classes = self._check_data(hp, validation)
        if job_name is None:
            job_name = sagemaker_job_name()
            while self._row(job_name) is not None:
                time.sleep(0.002)
                job_name = sagemaker_job_name()
        _check_name(job_name, "Training job name")
        if self._row(job_name) is not None:
            raise ResourceInUse(f"A training job named {job_name!r} already exists: choose another name.")
        running = self.jobs.running(JOB_KIND)
        if running:
            name = self._name_for_job_id(running[0].job_id) or running[0].job_id
            raise ResourceLimitExceeded(
                f"Training job {name} is still running and local training runs one job at a time: "
                f"wait for it to end, or stop it ('scones stop --job {name}', or Stop on the Train page).")
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        stored = hps.as_strings(hp, hyperparameters)
        job_id = self.jobs.create(JOB_KIND, {"job_name": job_name})
        now = utcnow()
        self.db.execute(
            "INSERT INTO training_jobs(job_name, job_id, hyperparameters, validation, seed, secondary_status, "
            "transitions, output_path, classes, created) VALUES(?,?,?,?,?,?,?,?,?,?)",
            (job_name, job_id, dumps(stored), validation, seed, "Starting",
             dumps([{"status": "Starting", "start": now, "message": "Launching the training worker process."}]),
             f"s3://{self.bucket}/{self.artifact_key(job_name)}", dumps(classes), now),
        )
        try:
            self.jobs.spawn(job_id)
        except OSError as exc:
            self.jobs.fail(job_id, f"The training worker process could not start ({exc}).")
        return job_name

    @staticmethod
    def artifact_key(job_name: str) -> str:
        return f"output/{job_name}/output/model.tar.gz"

    def describe_training_job(self, name: str) -> TrainingJob:
        row = self._row(name)
        if row is None:
            raise ResourceNotFound(f"No training job named {name!r}: list the training jobs to see their names.")
        return self._record(row)

    def list_training_jobs(self, limit: int = 100) -> list[TrainingJob]:
        """Newest first. Three queries in all, however many jobs: the page polls this while a job runs, and a
        query a job (two connections each) took 70 ms a poll for 60 jobs."""
        rows = self.db.query("SELECT * FROM training_jobs ORDER BY created DESC LIMIT ?", (limit,))
        if not rows:
            return []
        jobs = self.jobs.describe_many([r["job_id"] for r in rows])
        names = [r["job_name"] for r in rows]
        epochs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        with self.db.connect() as conn:
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                for name, metrics in conn.execute(
                        f"SELECT job_name, metrics FROM training_metrics WHERE job_name IN ({','.join('?' * len(chunk))}) "
                        "ORDER BY job_name, epoch", chunk):
                    epochs[name].append(loads(metrics))
        return [self._record(r, jobs.get(r["job_id"]), tuple(epochs[r["job_name"]])) for r in rows]

    def stop_training_job(self, name: str) -> TrainingJob:
        """Stop a running job (its worker gets SIGTERM); a job that has already ended is returned as it is."""
        row = self._row(name)
        if row is None:
            raise ResourceNotFound(f"No training job named {name!r}: list the training jobs to see their names.")
        job = self.jobs.stop(row["job_id"])
        if job.status == JOB_STOPPED:
            self._transition(name, "Stopped", "Stopped by the operator.")
        return self._record(self._row(name))

    def training_log(self, name: str) -> str:
        row = self._row(name)
        if row is None:
            raise ResourceNotFound(f"No training job named {name!r}: list the training jobs to see their names.")
        path = self.jobs.logs_dir / f"{row['job_id']}.log"
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def run_summary(self, name: str) -> dict[str, Any] | None:
        """What the worker reported when the job completed (epoch seconds, device...), for benchmarks."""
        row = self._row(name)
        if row is None:
            raise ResourceNotFound(f"No training job named {name!r}: list the training jobs to see their names.")
        return self.jobs.describe(row["job_id"]).result

    def step_status(self) -> StepStatus:
        """The dashboard's 'train' step: the newest training job."""
        jobs = self.list_training_jobs(limit=1)
        if not jobs:
            return StepStatus("train", "not_started", "No training job yet.")
        job = jobs[0]
        if job.status == JOB_IN_PROGRESS:
            return StepStatus("train", "in_progress", f"{job.job_name}: {job.secondary_status}, epoch "
                              f"{len(job.epochs)} of {job.hyperparameters.get('epochs', '30')}.")
        if job.status == JOB_COMPLETED:
            acc = job.final_metrics.get("validation:accuracy")
            tail = f", validation accuracy {acc:.3f}" if acc is not None else ""
            if job.served_accuracy is not None:
                tail += f" (served 8-bit graph {job.served_accuracy:.3f})"
            return StepStatus("train", "done", f"{job.job_name} completed{tail}.")
        return stopped_or_failed(job, self._newest_completed)

    def _newest_completed(self) -> TrainingJob | None:
        for row in self.db.query("SELECT * FROM training_jobs WHERE model_artifact IS NOT NULL ORDER BY created DESC"):
            job = self._record(row)  # the artifact is set only once a job completes
            if job.status == JOB_COMPLETED:
                return job
        return None

    # -- models --------------------------------------------------------------------------------

    def create_model(self, job_name: str, model_name: str | None = None) -> Model:
        """As CreateModel: a name bound to a Completed job's complete artifact."""
        job = self.describe_training_job(job_name)
        if job.status != JOB_COMPLETED or not job.model_artifact:
            raise ValidationError(f"Training job {job_name} is {job.status}; only a Completed job has a model artifact.")
        model_name = _check_name(model_name or job_name, "Model name")
        if self.db.query_one("SELECT 1 FROM models WHERE model_name=?", (model_name,)):
            raise ValidationError(f"Cannot create already existing model {model_name!r}: choose another name.")
        meta, _ = read_members(self.store.get(self.bucket, self.artifact_key(job_name)))
        metrics = dict(job.final_metrics)
        if job.served_accuracy is not None:
            metrics[SERVED_ACCURACY] = job.served_accuracy  # what the endpoint's graph scored, beside PyTorch's
        self.db.execute(
            "INSERT INTO models(model_name, job_name, model_artifact, classes, image_shape, metrics, created) "
            "VALUES(?,?,?,?,?,?,?)",
            (model_name, job_name, job.model_artifact, dumps(meta["classes"]), dumps(meta["image_shape"]),
             dumps(metrics), utcnow()),
        )
        return self.describe_model(model_name)

    def describe_model(self, name: str) -> Model:
        row = self.db.query_one("SELECT * FROM models WHERE model_name=?", (name,))
        if row is None:
            raise ResourceNotFound(f"No model named {name!r}: create one from a Completed training job.")
        return self._model(row)

    def list_models(self) -> list[Model]:
        return [self._model(r) for r in self.db.query("SELECT * FROM models ORDER BY created DESC")]

    def _model(self, row: Any) -> Model:
        return Model(
            model_name=row["model_name"], job_name=row["job_name"], model_artifact=row["model_artifact"],
            created=row["created"], classes=tuple(loads(row["classes"])),
            image_shape=tuple(loads(row["image_shape"])), metrics=loads(row["metrics"]), backend=self.backend_name,
        )

    # -- evaluation ----------------------------------------------------------------------------

    def delete_model(self, name: str) -> None:
        """As DeleteModel: the record only (the job's artifact stays with the job)."""
        self.describe_model(name)
        self.db.execute("DELETE FROM models WHERE model_name=?", (name,))

    def delete_training_job(self, name: str) -> None:
        """Local housekeeping: stop the job if it runs, then remove its records and output/<job>/."""
        row = self._row(name)
        if row is None:
            raise ResourceNotFound(f"No training job named {name!r}: list the training jobs to see their names.")
        users = self.db.query("SELECT model_name FROM models WHERE job_name=?", (name,))
        if users:
            raise ResourceInUse(f"Model {users[0]['model_name']} was made from training job {name}: delete the model first.")
        if self.jobs.describe(row["job_id"]).status == JOB_IN_PROGRESS:
            self.jobs.stop(row["job_id"])
            if not self.jobs.wait_exited(row["job_id"]):  # it could still write its artifact after the delete
                raise ResourceInUse(f"Training job {name} is still stopping: clean up again in a few seconds.")
        for obj in self.store.list(self.bucket, f"output/{name}/"):
            self.store.delete(self.bucket, obj.key)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM evaluations WHERE job_name=?", (name,))
            conn.execute("DELETE FROM training_metrics WHERE job_name=?", (name,))
            conn.execute("DELETE FROM training_jobs WHERE job_name=?", (name,))
            conn.execute("DELETE FROM jobs WHERE job_id=?", (row["job_id"],))

    def evaluate(self, name: str) -> Evaluation:
        """The job's model (its artifact, through onnxruntime as the endpoint will) on the staged test split."""
        job = self.describe_training_job(name)
        if job.status != JOB_COMPLETED or not job.model_artifact:
            raise ValidationError(f"Training job {name} is {job.status}; evaluate a Completed job.")
        lst_bytes = self.store.get(self.bucket, TEST_CHANNEL.lst_key)
        staged = self._dataset_classes()  # the names of the lists' class indices
        digest = hashlib.sha256(lst_bytes + "\n".join(staged).encode()).hexdigest()[:16]
        cached = self.db.query_one("SELECT result FROM evaluations WHERE job_name=? AND data_digest=?", (name, digest))
        if cached:
            return evaluation_from_dict(loads(cached["result"]))
        model = load_artifact(self.store.get(self.bucket, self.artifact_key(name)), threads=min(2, os.cpu_count() or 1))
        rows = read_lst(self.store, self.bucket, TEST_CHANNEL)
        labels = np.array([label for _, label, _ in rows], dtype=np.int64)
        if staged and list(staged) != list(model.classes) and not all(
                re.fullmatch(r"class_\d+", c) for c in model.classes):  # unnamed classes: by position, as staged
            if not all(c in model.classes for c in staged):
                raise ValidationError(
                    f"The data was re-staged with other classes ({', '.join(staged)}) than this model knows "
                    f"({', '.join(model.classes)}): stage its classes again to evaluate it, or train again.")
            labels = np.array([model.classes.index(c) for c in staged], dtype=np.int64)[labels]  # by name
        if int(labels.max()) >= len(model.classes):
            raise ValidationError(
                f"The staged test split has class {int(labels.max())} but the model knows {len(model.classes)} "
                "classes: the data was re-staged with other classes; train again.")
        keys = [TEST_CHANNEL.prefix + path for _, _, path in rows]
        # The endpoint's own preparation of each image (decode, resize), so the numbers are what serving gives.
        decoded = []
        for key in keys:
            try:
                decoded.append(model.decode(self.store.get(self.bucket, key)))
            except ValidationError:  # decode speaks of a request body: here it is a staged file
                raise ValidationError(f"The staged test image s3://{self.bucket}/{key} is not a readable PNG or JPEG "
                                      "image: stage the data again.") from None
        images = np.stack(decoded)
        probabilities = model.predict(images)
        result = evaluate_predictions(name, model.classes, labels, probabilities, keys)
        self.db.execute(
            "INSERT OR REPLACE INTO evaluations(job_name, data_digest, result, created) VALUES(?,?,?,?)",
            (name, digest, dumps(evaluation_to_dict(result)), utcnow()),
        )
        return result

    # -- the worker side -----------------------------------------------------------------------

    def run(self, job: Job, progress: Callable[[float, str], None]) -> dict[str, Any]:
        """Called in the worker process: download the channels, train, upload model.tar.gz."""
        # Idle OpenMP threads spin only briefly before they sleep: libgomp's default spin (300,000
        # turns) made training many times slower on a machine shared with other work, while sleeping
        # at once (OMP_WAIT_POLICY=PASSIVE) costs 50% on a quiet one. Set before torch loads OpenMP.
        os.environ.setdefault("GOMP_SPINCOUNT", str(OMP_SPIN_COUNT))
        from backend.local.training import trainer
        from backend.local.training.artifact import build_artifact, export_onnx

        name = job.params["job_name"]
        row = self._row(name)
        if row is None:
            raise ResourceNotFound(f"Training job {name} has no record; it cannot run.")
        hp = hps.validate(loads(row["hyperparameters"]))
        log = _printer()
        started = time.perf_counter()
        log(f"Training job {name} (worker pid {os.getpid()}); hyperparameters: {loads(row['hyperparameters'])}")
        for note in hps.advisories(loads(row["hyperparameters"])):
            log(f"Note: {note}")

        self._transition(name, "Downloading", "Reading the train and validation channels from the bucket.")
        progress(0.02, "Downloading")
        train_set, validation_set = self._load_channels(hp, row["validation"])
        log(f"Read {len(train_set)} training and {len(validation_set)} validation images "
            f"({'test split' if row['validation'] == 'test' else '20% hold-out of the training data'}) "
            f"in {time.perf_counter() - started:.2f} s.")

        self._transition(name, "Training", "Training image classification model.")
        progress(0.05, f"Training: epoch 0 of {hp.epochs}")
        last_check = [0.0, False]

        def should_stop() -> bool:
            now = time.monotonic()
            if now - last_check[0] >= STOP_POLL_SECONDS:
                last_check[0] = now
                last_check[1] = self.jobs.describe(job.job_id).status != JOB_IN_PROGRESS
            return last_check[1]

        def on_epoch(metrics: dict[str, float]) -> None:
            epoch = int(metrics["epoch"])
            self.db.execute(
                "INSERT OR REPLACE INTO training_metrics(job_name, epoch, metrics, recorded) VALUES(?,?,?,?)",
                (name, epoch, dumps(metrics), utcnow()),
            )
            progress(0.05 + 0.9 * epoch / hp.epochs, f"Training: epoch {epoch} of {hp.epochs}")
            print("#metrics " + json.dumps({k: round(v, 6) for k, v in metrics.items()}), flush=True)

        try:
            result = trainer.train(hp, train_set, validation_set, seed=int(row["seed"]), on_epoch=on_epoch,
                                   should_stop=should_stop, log=log)
        except trainer.TrainingStopped as exc:
            log(str(exc))
            raise SystemExit(143) from None
        except FloatingPointError as exc:
            raise ValidationError(str(exc)) from None
        train_seconds = time.perf_counter() - started

        self._transition(name, "Uploading", "Uploading the generated training model.")
        progress(0.97, "Uploading")
        classes = self._class_names(loads(row["classes"]), hp.num_classes)
        final = {k: v for k, v in result.epochs[-1].items() if k != "epoch"} if result.epochs else {}
        onnx_bytes = export_onnx(result.model, result.mean, result.std, hp.image_shape, bool(hp.test_time_flip))
        precision, artifact_metrics = "float32", dict(final)
        if hp.int8_serving:
            progress(0.98, "Uploading: quantizing the served graph to 8 bits and checking it on the validation images")
            onnx_bytes, precision, served = _quantized(onnx_bytes, hp, train_set, validation_set, int(row["seed"]),
                                                       final.get("validation:accuracy"), log)
            if served is not None:
                artifact_metrics[SERVED_ACCURACY] = served
        data = build_artifact(onnx_bytes, classes=classes, image_shape=hp.image_shape, mean=result.mean,
                              std=result.std, hyperparameters=loads(row["hyperparameters"]), metrics=artifact_metrics,
                              job_name=name, network=result.model.arch.description, precision=precision)
        key = self.artifact_key(name)
        self.store.put(self.bucket, key, data)  # atomic: a reader never sees half an archive
        uri = f"s3://{self.bucket}/{key}"
        self.db.execute("UPDATE training_jobs SET model_artifact=?, served_accuracy=? WHERE job_name=?",
                        (uri, artifact_metrics.get(SERVED_ACCURACY) if precision == "int8" else None, name))
        self._transition(name, "Completed", "Training job completed.")
        log(f"Wrote {uri} ({len(data):,} bytes). Total {time.perf_counter() - started:.1f} s.")
        return {
            "job_name": name, "model_artifact": uri, "metrics": final, "epochs": len(result.epochs),
            "stopped_early": result.stopped_early, "epoch_seconds": [round(s, 3) for s in result.epoch_seconds],
            "train_seconds": round(train_seconds, 3), "total_seconds": round(time.perf_counter() - started, 3),
            "device": result.device,
        }

    def _load_channels(self, hp: hps.Hyperparameters, validation: str) -> tuple[ImageSet, ImageSet]:
        _, height, width = hp.image_shape
        size = None if hp.resize else (width, height)
        train_set = read_channel(self.store, self.bucket, TRAIN_CHANNEL, size=size)
        if len(train_set) != hp.num_training_samples:
            raise ValidationError(
                f"num_training_samples={hp.num_training_samples} does not match the train channel, which holds "
                f"{len(train_set)} images: set it to {len(train_set)}.")
        if validation == "holdout":
            train_idx, hold_idx = holdout_split(train_set.labels)
            return train_set.subset(train_idx), train_set.subset(hold_idx)
        return train_set, read_channel(self.store, self.bucket, TEST_CHANNEL, size=size)

    # -- helpers -------------------------------------------------------------------------------

    def _check_data(self, hp: hps.Hyperparameters, validation: str) -> list[str]:
        """The staged channels exist and agree with num_training_samples and num_classes."""
        train_rows = read_lst(self.store, self.bucket, TRAIN_CHANNEL)
        if len(train_rows) != hp.num_training_samples:
            raise ValidationError(
                f"num_training_samples={hp.num_training_samples} does not match the train channel "
                f"(s3://{self.bucket}/{TRAIN_CHANNEL.lst_key} lists {len(train_rows)} images): set it to {len(train_rows)}.")
        labels = {label for _, label, _ in train_rows}
        if validation == "test":
            labels |= {label for _, label, _ in read_lst(self.store, self.bucket, TEST_CHANNEL)}
        if max(labels) >= hp.num_classes:
            raise ValidationError(
                f"num_classes={hp.num_classes} is not valid: the staged lists use class indices up to {max(labels)}, "
                f"so use at least {max(labels) + 1}.")
        classes = self._dataset_classes()
        if not classes:  # lists without the manifest: a staging that was cut short (it removes dataset.json first)
            raise ValidationError(f"The data in s3://{self.bucket} is not completely staged (no {MANIFEST_KEY}: the last "
                                  "staging did not finish); stage the data again before training.")
        if hp.num_classes != len(classes):  # as on AWS: no class without a name or images
            raise ValidationError(f"num_classes={hp.num_classes} does not match the staged classes "
                                  f"({', '.join(classes)}): set it to {len(classes)}.")
        return classes

    def _dataset_classes(self) -> list[str]:
        try:
            return list(json.loads(self.store.get(self.bucket, MANIFEST_KEY)).get("classes", []))
        except (ResourceNotFound, ValueError, AttributeError):
            return []

    @staticmethod
    def _class_names(staged: list[str], num_classes: int) -> list[str]:
        return [staged[i] if i < len(staged) else f"class_{i}" for i in range(num_classes)]

    def _row(self, name: str) -> Any:
        return self.db.query_one("SELECT * FROM training_jobs WHERE job_name=?", (name,))

    def _name_for_job_id(self, job_id: str) -> str | None:
        row = self.db.query_one("SELECT job_name FROM training_jobs WHERE job_id=?", (job_id,))
        return row["job_name"] if row else None

    def _transition(self, name: str, status: str, message: str) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT transitions FROM training_jobs WHERE job_name=?", (name,)).fetchone()
            transitions = loads(row["transitions"]) if row else []
            if transitions and transitions[-1]["status"] == status:
                return
            transitions.append({"status": status, "start": utcnow(), "message": message})
            conn.execute("UPDATE training_jobs SET secondary_status=?, transitions=? WHERE job_name=?",
                         (status, dumps(transitions), name))

    def _record(self, row: Any, job: Any = None, epochs: tuple[dict[str, float], ...] | None = None) -> TrainingJob:
        """The TrainingJob of a training_jobs row; `job` (its JobRunner job) and `epochs` when already read."""
        if job is None:
            job = self.jobs.describe(row["job_id"])  # reconciles a dead worker to Failed
        name = row["job_name"]
        secondary = row["secondary_status"]
        if job.status == JOB_FAILED:
            secondary = "Failed"
        elif job.status == JOB_STOPPED:
            secondary = "Stopped"
        elif job.status == JOB_COMPLETED:
            secondary = "Completed"
        ended = job.updated if job.done else None
        end_time = _parse_time(ended) if ended else datetime.now(timezone.utc)
        seconds = max(0.0, (end_time - _parse_time(row["created"])).total_seconds())
        if epochs is None:
            epochs = tuple(
                loads(r["metrics"]) for r in
                self.db.query("SELECT metrics FROM training_metrics WHERE job_name=? ORDER BY epoch", (name,))
            )
        return TrainingJob(
            job_name=name, status=job.status, secondary_status=secondary,
            hyperparameters=loads(row["hyperparameters"]), created=row["created"], ended=ended,
            seconds=seconds, failure_reason=job.failure_reason if job.status == JOB_FAILED else "",
            epochs=epochs, model_artifact=row["model_artifact"] if job.status == JOB_COMPLETED else None,
            backend=self.backend_name, validation=row["validation"],
            served_accuracy=self._served_accuracy(row) if job.status == JOB_COMPLETED else None,
        )

    def _served_accuracy(self, row: Any) -> float | None:
        """The row's served_accuracy. A job that completed with int8_serving=1 before the column existed has
        NULL there: its artifact says (read once, then kept in the row; a float fallback is read once per process)."""
        if row["served_accuracy"] is not None or not row["model_artifact"]:
            return row["served_accuracy"]
        name = row["job_name"]
        if loads(row["hyperparameters"]).get("int8_serving", "0").strip() != "1" or name in self._float_served:
            return None
        try:
            meta, _ = read_members(self.store.get(self.bucket, self.artifact_key(name)))
        except Exception:  # noqa: BLE001 - a deleted or unreadable artifact: nothing to say
            return None
        served = (meta.get("metrics") or {}).get(SERVED_ACCURACY)
        if meta.get("precision") != "int8" or not isinstance(served, (int, float)):
            self._float_served.add(name)  # quantizing failed then, and the float graph serves
            return None
        self.db.execute("UPDATE training_jobs SET served_accuracy=? WHERE job_name=?", (float(served), name))
        return float(served)


class TrainingBackendMixin:
    """The training methods of a backend, delegated to `self.training` (a TrainingService).

    LocalBackend inherits this and sets `self.training`; pages and the CLI call these names.
    """

    training: TrainingService

    def training_hyperparameter_specs(self) -> list[dict[str, Any]]:
        return self.training.hyperparameter_specs()

    def training_advisories(self, hyperparameters: dict[str, str]) -> list[str]:
        """Valid values that cannot do what they seem to (hyperparameters.advisories), for the page and the CLI."""
        return hps.advisories(hyperparameters)

    def default_training_hyperparameters(self, preset: str = "local") -> dict[str, str]:
        return self.training.default_hyperparameters(preset)

    def create_training_job(self, hyperparameters: dict[str, str | int | float], job_name: str | None = None,
                            validation: str = "test", seed: int | None = None) -> str:
        return self.training.create_training_job(hyperparameters, job_name, validation, seed)

    def describe_training_job(self, name: str) -> TrainingJob:
        return self.training.describe_training_job(name)

    def list_training_jobs(self) -> list[TrainingJob]:
        return self.training.list_training_jobs()

    def stop_training_job(self, name: str) -> TrainingJob:
        return self.training.stop_training_job(name)

    def training_log(self, name: str) -> str:
        return self.training.training_log(name)

    def evaluate_training_job(self, name: str) -> Evaluation:
        return self.training.evaluate(name)

    def create_model(self, job_name: str, model_name: str | None = None) -> Model:
        return self.training.create_model(job_name, model_name)

    def describe_model(self, name: str) -> Model:
        return self.training.describe_model(name)

    def list_models(self) -> list[Model]:
        return self.training.list_models()

    def delete_model(self, name: str) -> None:
        self.training.delete_model(name)

    def delete_training_job(self, name: str) -> None:
        self.training.delete_training_job(name)


def _printer() -> Callable[[str], None]:
    def log(line: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(f"[{stamp}] {line}", file=sys.stdout, flush=True)
    return log


__all__ = ["TrainingService", "TrainingBackendMixin", "TRAINING_MIGRATIONS", "JOB_KIND", "ArtifactError"]


def _quantized(onnx_bytes: bytes, hp: hps.Hyperparameters, train_set: ImageSet, validation_set: ImageSet, seed: int,
               float_accuracy: float | None, log: Callable[[str], None]) -> tuple[bytes, str, float | None]:
    """(graph, precision, its validation accuracy) for int8_serving=1: the graph quantized on a sample of the
    training images, its own validation accuracy said in the log beside PyTorch's; the float graph, said so,
    if it fails."""
    from backend.local.training import trainer
    from backend.local.training.artifact import CALIBRATION_IMAGES, quantize_onnx

    began = time.perf_counter()
    pick = np.sort(np.random.default_rng(seed).permutation(len(train_set))[:CALIBRATION_IMAGES])
    try:
        quantized = quantize_onnx(onnx_bytes, trainer.served_inputs(train_set.images[pick], hp).numpy())
        said = (f"Quantized the served graph to 8-bit integers (calibrated on {len(pick)} training "
                f"image{'s' if len(pick) != 1 else ''}) in {time.perf_counter() - began:.1f} s.")
        accuracy = served_accuracy(quantized, trainer.served_inputs(validation_set.images, hp).numpy(),
                                   validation_set.labels) if len(validation_set) else None
    except Exception as exc:  # noqa: BLE001 - the float graph still serves
        log(f"Note: int8_serving=1, but quantizing the graph failed ({type(exc).__name__}: {exc}); "
            "the endpoint will serve the float graph.")
        return onnx_bytes, "float32", None
    if accuracy is not None:
        said += f" Validation accuracy of the graph the endpoint serves: {accuracy:.4f}"
        said += f" (PyTorch at the last epoch: {float_accuracy:.4f})." if float_accuracy is not None else "."
    log(said)
    return quantized, "int8", accuracy


def served_accuracy(graph: bytes, x: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of an ONNX graph (as model.onnx: float NCHW in, probabilities out) on prepared images."""
    import onnxruntime as ort

    from backend.local.training.artifact import INPUT_NAME

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, len(os.sched_getaffinity(0)))
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    predicted = np.concatenate([session.run(None, {INPUT_NAME: x[i:i + 256]})[0].argmax(1)
                                for i in range(0, len(x), 256)])
    return float((predicted == np.asarray(labels)).mean())
