"""Endpoint configs and endpoints of the local backend, with SageMaker's names, statuses and errors.

`DeploymentService` is held by `LocalBackend`. Each endpoint is one process
(`python -m backend.local.serving.server`) in its own session, so it outlives the dashboard or
CLI that started it; its pid and kernel start time are in SQLite, and whoever reads an endpoint
reconciles that record with the real process (as jobs.py does for workers):

- Creating -> InService once the process has written its ready file and answers GET /ping;
  -> Failed when the process exits (its FailureReason line, from the log) or never answers.
- InService -> Failed when the process is gone (killed, crashed, a reboot). `start_endpoint`
  starts a Failed or OutOfService endpoint again from its config.
- Updating (blue/green): the new config's process starts beside the old one; once it answers
  /ping the record switches to it in one conditional UPDATE, and only then is the old process
  stopped (SIGTERM: it finishes the requests in flight). A new process that fails leaves the old
  one serving (InService, with the reason in FailureReason), as SageMaker rolls back.
- Deleting -> gone: the processes are stopped, the record removed; captured data stays.

Models come from a `ModelSource` (the training service): only `describe_model` is needed.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from backend.api import (
    ENDPOINT_STATUSES, VARIANT_NAME, CaptureConfig, Endpoint, EndpointConfig, Model, Prediction,
    ResourceInUse, ResourceNotFound, SconesError, StepStatus, ValidationError, failed_endpoints_note,
)
from backend.local.db import Database, dumps, loads
from backend.local.jobs import process_alive, process_start_time, utcnow
from backend.local.serving.client import ConnectionFailed, EndpointClient
from backend.local.store import LocalStore, check_bucket, check_key

REPO_ROOT = Path(__file__).resolve().parents[3]
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # EndpointName / EndpointConfigName
INSTANCE_TYPE_RE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"  # the workflow's endpoint instance
INSTANCE_TYPES = ("ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.c5.large", "ml.c5.xlarge", "ml.g4dn.xlarge")
DEFAULT_CAPTURE_PREFIX = "data_capture"  # the Scones notebook's s3://<bucket>/data_capture
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 15.0
TARGET_TTL_SECONDS = 1.0
PING_TIMEOUT_SECONDS = 2.0
CREATING, IN_SERVICE, UPDATING, DELETING, FAILED, OUT_OF_SERVICE = ENDPOINT_STATUSES
RESTARTABLE = (FAILED, OUT_OF_SERVICE)  # what start_endpoint starts again (after a reboot, say)
BUSY = (CREATING, UPDATING, DELETING)

SERVING_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE endpoint_configs (
        config_name    TEXT PRIMARY KEY,
        model_name     TEXT NOT NULL,
        instance_type  TEXT NOT NULL,
        variant_name   TEXT NOT NULL,
        capture        TEXT NOT NULL,                 -- CaptureConfig as JSON, destination filled in
        created        TEXT NOT NULL
    );
    CREATE TABLE endpoints (
        endpoint_name      TEXT PRIMARY KEY,
        status             TEXT NOT NULL,
        config_name        TEXT NOT NULL,
        failure            TEXT NOT NULL DEFAULT '',
        created            TEXT NOT NULL,
        updated            TEXT NOT NULL,
        generation         INTEGER NOT NULL DEFAULT 0, -- bumped on every change: conditional updates
        instance           TEXT,                      -- the serving process: its ready file, log
        pid                INTEGER,
        pid_start          TEXT,
        port               INTEGER,
        classes            TEXT,                      -- class names of the model it serves
        started            REAL,                      -- epoch seconds the process was started
        pending_config     TEXT,                      -- blue/green: the process starting for an update
        pending_instance   TEXT,
        pending_pid        INTEGER,
        pending_pid_start  TEXT,
        pending_port       INTEGER,
        pending_classes    TEXT,
        pending_started    REAL
    );
    """,
)


class ModelSource(Protocol):
    """Where models come from: the training service locally (CreateModel records)."""

    def describe_model(self, name: str) -> Model: ...


class ModelError(SconesError):
    """The endpoint answered the request with an error (InvokeEndpoint's ModelError)."""

    code = "ModelError"

    def __init__(self, message: str, status: int = 400, error: str = ""):
        super().__init__(message)
        self.status, self.error = status, error


class EndpointUnavailable(ValidationError):
    """The endpoint exists but cannot answer: not InService, or its process is gone."""


@dataclass(frozen=True)
class _Target:
    port: int
    classes: tuple[str, ...]
    expires: float


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/prefix/' -> ('bucket', 'prefix'); ValidationError when it is not one."""
    m = re.fullmatch(r"s3://([^/]+)/?(.*)", (uri or "").strip())
    if not m:
        raise ValidationError(f"{uri!r} is not an S3 URI: write it as s3://bucket/prefix.")
    bucket, prefix = m.group(1), m.group(2).strip("/")
    check_bucket(bucket)
    if prefix:
        check_key(prefix)
    return bucket, prefix


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValidationError(f"{what} {name!r} is not valid: use 1 to 63 letters, digits and hyphens, "
                              "starting with a letter or digit.")
    return name


class DeploymentService:
    def __init__(self, db: Database, store: LocalStore, bucket: str, settings: Any, models: ModelSource,
                 backend_name: str = "local", threads: int = 1):
        self.db, self.store, self.bucket, self.settings, self.models = db, store, bucket, settings, models
        self.backend_name, self.threads = backend_name, threads
        self.client = EndpointClient()
        self.pinger = EndpointClient(timeout=PING_TIMEOUT_SECONDS)
        self._targets: dict[str, _Target] = {}
        self._children: dict[int, subprocess.Popen] = {}
        self._children_lock = threading.Lock()
        db.migrate("serving", SERVING_MIGRATIONS)

    # -- endpoint configs ----------------------------------------------------------------------

    def default_capture_destination(self) -> str:
        return f"s3://{self.bucket}/{DEFAULT_CAPTURE_PREFIX}"

    def endpoint_cost_notice(self) -> str:
        return ("A local endpoint is one process on this machine (about 100 MB of memory), billed nothing; "
                "the instance type is recorded as SageMaker's, for the day you deploy on AWS.")

    def create_endpoint_config(self, config_name: str, model_name: str, instance_type: str = DEFAULT_INSTANCE_TYPE,
                               capture: CaptureConfig | None = None) -> EndpointConfig:
        """As CreateEndpointConfig: one variant (AllTraffic) of one model, with its DataCaptureConfig."""
        check_name(config_name, "Endpoint config name")
        if not isinstance(instance_type, str) or not INSTANCE_TYPE_RE.fullmatch(instance_type):
            raise ValidationError(f"Instance type {instance_type!r} is not valid: use a SageMaker type such as "
                                  f"{DEFAULT_INSTANCE_TYPE}.")
        capture = self._checked_capture(capture or CaptureConfig(enabled=False))
        self._served_model(model_name)  # the model exists and this backend can serve it
        now = utcnow()
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM endpoint_configs WHERE config_name=?", (config_name,)).fetchone():
                raise ResourceInUse(f"Cannot create already existing endpoint configuration {config_name!r}: "
                                    "choose another name.")
            conn.execute(
                "INSERT INTO endpoint_configs(config_name, model_name, instance_type, variant_name, capture, created) "
                "VALUES(?,?,?,?,?,?)",
                (config_name, model_name, instance_type, VARIANT_NAME, dumps(vars(capture)), now),
            )
        return self.describe_endpoint_config(config_name)

    def _checked_capture(self, capture: CaptureConfig) -> CaptureConfig:
        percent = capture.sampling_percent
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or percent != int(percent) \
                or not 0 <= percent <= 100:
            raise ValidationError(f"Sampling percentage {percent!r} is not valid: use a whole number from 0 to 100.")
        if capture.enabled and not (capture.capture_input or capture.capture_output):
            raise ValidationError("Capture options are empty: capture Input, Output or both, or turn capture off.")
        if not capture.enabled:  # no DataCaptureConfig at all, as SageMaker reads back a config made without one
            return CaptureConfig(enabled=False, sampling_percent=0)
        destination = (capture.destination or "").strip() or self.default_capture_destination()
        bucket, prefix = parse_s3_uri(destination)
        if bucket != self.bucket:  # one bucket locally: another would be a folder nothing reads or cleans up
            raise ValidationError(f"Capture goes to the workspace bucket locally: {destination} is in bucket "
                                  f"{bucket!r}; use s3://{self.bucket}/<prefix> (default {self.default_capture_destination()}).")
        destination = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return CaptureConfig(bool(capture.enabled), int(percent), destination, bool(capture.capture_input),
                             bool(capture.capture_output))

    def describe_endpoint_config(self, config_name: str) -> EndpointConfig:
        row = self.db.query_one("SELECT * FROM endpoint_configs WHERE config_name=?", (config_name,))
        if row is None:
            raise ResourceNotFound(f"Could not find endpoint configuration {config_name!r}: list the configs to see "
                                   "their names.")
        return _config(row)

    def list_endpoint_configs(self) -> list[EndpointConfig]:
        rows = self.db.query("SELECT * FROM endpoint_configs ORDER BY created DESC, config_name")
        return [_config(r) for r in rows]

    def delete_endpoint_config(self, config_name: str) -> None:
        """Refused while an endpoint uses it: a local endpoint restarts from its config."""
        self.describe_endpoint_config(config_name)
        with self.db.transaction() as conn:
            user = conn.execute("SELECT endpoint_name FROM endpoints WHERE config_name=? OR pending_config=?",
                                (config_name, config_name)).fetchone()
            if user:
                raise ResourceInUse(f"Endpoint {user['endpoint_name']} uses endpoint configuration {config_name}: "
                                    "delete or update the endpoint first.")
            conn.execute("DELETE FROM endpoint_configs WHERE config_name=?", (config_name,))

    # -- endpoints: control plane --------------------------------------------------------------

    def create_endpoint(self, endpoint_name: str, config_name: str) -> str:
        """As CreateEndpoint: returns the name at once; the status is Creating until /ping answers."""
        check_name(endpoint_name, "Endpoint name")
        config = self.describe_endpoint_config(config_name)
        model = self._served_model(config.model_name)
        now = utcnow()
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM endpoints WHERE endpoint_name=?", (endpoint_name,)).fetchone():
                raise ResourceInUse(f"Cannot create already existing endpoint {endpoint_name!r}: update it, or "
                                    "delete it first.")
            conn.execute("INSERT INTO endpoints(endpoint_name, status, config_name, created, updated) "
                         "VALUES(?,?,?,?,?)", (endpoint_name, CREATING, config_name, now, now))
        self._start_process(endpoint_name, config, model, pending=False)
        return endpoint_name

    def describe_endpoint(self, endpoint_name: str) -> Endpoint:
        return self._record(self._reconciled(self._row(endpoint_name)))

    def list_endpoints(self) -> list[Endpoint]:
        rows = self.db.query(f"{_SELECT} ORDER BY e.created DESC, e.endpoint_name")
        return [self._record(self._reconciled(r)) for r in rows]

    def wait_endpoint(self, endpoint_name: str, timeout: float = 60.0, poll: float = 0.05) -> Endpoint:
        """Poll until the endpoint leaves Creating/Updating (or the timeout passes); for `deploy --wait`."""
        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.describe_endpoint(endpoint_name)
            if endpoint.status not in BUSY or time.monotonic() > deadline:
                return endpoint
            time.sleep(poll)

    def update_endpoint(self, endpoint_name: str, config_name: str) -> str:
        """As UpdateEndpoint: blue/green to a new config, without dropping a request; returns at once."""
        row = self._reconciled(self._row(endpoint_name))
        config = self.describe_endpoint_config(config_name)
        model = self._served_model(config.model_name)
        if row["status"] != IN_SERVICE:
            hint = "start it or delete it" if row["status"] in (FAILED, OUT_OF_SERVICE) else "wait until it is InService"
            raise ValidationError(f"Cannot update endpoint {endpoint_name} while it is {row['status']}: {hint}.")
        changed = self.db.execute(
            "UPDATE endpoints SET status=?, pending_config=?, failure='', updated=?, generation=generation+1 "
            "WHERE endpoint_name=? AND generation=? AND status=?",
            (UPDATING, config_name, utcnow(), endpoint_name, row["generation"], IN_SERVICE),
        )
        if not changed:
            raise ResourceInUse(f"Endpoint {endpoint_name} changed while it was being updated: try again.")
        self._start_process(endpoint_name, config, model, pending=True)
        return endpoint_name

    def start_endpoint(self, endpoint_name: str) -> Endpoint:
        """Start a Failed or OutOfService endpoint again from its config (after a reboot, say)."""
        row = self._reconciled(self._row(endpoint_name))
        if row["status"] not in RESTARTABLE:
            return self._record(row)
        config = self.describe_endpoint_config(row["config_name"])
        model = self._served_model(config.model_name)
        self._stop_processes(row)
        changed = self.db.execute(
            "UPDATE endpoints SET status=?, failure='', updated=?, generation=generation+1, "
            f"{_CLEAR_CURRENT}, {_CLEAR_PENDING} WHERE endpoint_name=? AND generation=?",
            (CREATING, utcnow(), endpoint_name, row["generation"]),
        )
        if not changed:
            raise ResourceInUse(f"Endpoint {endpoint_name} changed while it was being started: try again.")
        self._start_process(endpoint_name, config, model, pending=False)
        return self.describe_endpoint(endpoint_name)

    def stop_endpoint(self, endpoint_name: str) -> Endpoint:
        """Stop the endpoint's process but keep the endpoint (OutOfService); `start_endpoint` brings it back."""
        row = self._row(endpoint_name)
        self._stop_processes(row)
        self.db.execute(
            f"UPDATE endpoints SET status=?, updated=?, generation=generation+1, {_CLEAR_CURRENT}, {_CLEAR_PENDING} "
            "WHERE endpoint_name=?", (OUT_OF_SERVICE, utcnow(), endpoint_name))
        self._targets.pop(endpoint_name, None)
        return self.describe_endpoint(endpoint_name)

    def delete_endpoint(self, endpoint_name: str) -> None:
        """As DeleteEndpoint: the processes stop and the endpoint is gone; its captured data stays."""
        row = self._row(endpoint_name)
        self.db.execute("UPDATE endpoints SET status=?, updated=?, generation=generation+1 WHERE endpoint_name=?",
                        (DELETING, utcnow(), endpoint_name))
        self._stop_processes(row)
        self.db.execute("DELETE FROM endpoints WHERE endpoint_name=?", (endpoint_name,))
        self._targets.pop(endpoint_name, None)

    def deploy(self, model_name: str, endpoint_name: str | None = None, capture_percent: int = 100, *,
               capture_enabled: bool = True, capture_input: bool = True, capture_output: bool = True,
               destination: str | None = None, instance_type: str | None = None) -> Endpoint:
        """A new config for `model_name`, then create the endpoint, or update it (start it again when it
        is Failed or OutOfService). The endpoint name defaults to the model name; the instance type to
        the settings' endpoint_instance_type."""
        endpoint_name = check_name(endpoint_name or model_name, "Endpoint name")
        instance_type = instance_type or getattr(self.settings, "endpoint_instance_type", "") or DEFAULT_INSTANCE_TYPE
        capture = CaptureConfig(capture_enabled, capture_percent, destination or "", capture_input, capture_output)
        config_name = self._new_config_name(endpoint_name)
        existing = self.db.query_one("SELECT 1 FROM endpoints WHERE endpoint_name=?", (endpoint_name,))
        if existing:
            status = self.describe_endpoint(endpoint_name).status
            if status in BUSY:
                raise ResourceInUse(f"Endpoint {endpoint_name} is {status}: wait until it is InService, then deploy again.")
        self.create_endpoint_config(config_name, model_name, instance_type, capture)
        try:
            if not existing:
                self.create_endpoint(endpoint_name, config_name)
            elif status == IN_SERVICE:
                self.update_endpoint(endpoint_name, config_name)
            else:
                self.db.execute("UPDATE endpoints SET config_name=?, generation=generation+1 WHERE endpoint_name=?",
                                (config_name, endpoint_name))
                self.start_endpoint(endpoint_name)
        except SconesError:
            self._drop_unused_config(config_name)
            raise
        return self.describe_endpoint(endpoint_name)

    def step_status(self) -> StepStatus:
        """The dashboard's 'deploy' step: any endpoint InService is done."""
        endpoints = self.list_endpoints()
        serving = [e for e in endpoints if e.status == IN_SERVICE]
        busy = [e for e in endpoints if e.status in BUSY]
        if busy:
            return StepStatus("deploy", "in_progress", f"Endpoint {busy[0].endpoint_name} is {busy[0].status}."
                              + failed_endpoints_note(endpoints, busy[0].endpoint_name))
        if serving:
            return StepStatus("deploy", "done", f"Endpoint {serving[0].endpoint_name} is InService "
                              f"({serving[0].model_name})." + failed_endpoints_note(endpoints, serving[0].endpoint_name))
        if endpoints:
            e = endpoints[0]
            return StepStatus("deploy", "failed", f"Endpoint {e.endpoint_name} is {e.status}: {e.failure_reason}".rstrip(": "))
        return StepStatus("deploy", "not_started", "No endpoint yet.")

    def endpoint_log(self, endpoint_name: str, max_bytes: int = 64 * 1024) -> str:
        """The tail of the serving process's log (start-up line, errors, stop line)."""
        row = self._row(endpoint_name)
        return _tail(self._log_file(endpoint_name, row["instance"]), max_bytes) if row["instance"] else ""

    # -- data plane ----------------------------------------------------------------------------

    def invoke_endpoint(self, endpoint_name: str, body: bytes, content_type: str = "image/png") -> Prediction:
        """As InvokeEndpoint, through the endpoint's HTTP /invocations (keep-alive, TCP_NODELAY)."""
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise ValidationError("The request body must be bytes: the image file's content.")
        target = self._target(endpoint_name)
        try:
            status, data = self.client.invoke(target.port, bytes(body), content_type)
        except ConnectionFailed as exc:
            self._timed_out(endpoint_name, exc)
            # Switched by an update, or gone: read the record again (and reconcile it) before giving up.
            target = self._target(endpoint_name, refresh=True)
            try:
                status, data = self.client.invoke(target.port, bytes(body), content_type)
            except ConnectionFailed as exc:
                self._timed_out(endpoint_name, exc)
                self._targets.pop(endpoint_name, None)
                endpoint = self.describe_endpoint(endpoint_name)
                raise EndpointUnavailable(_unavailable(endpoint)) from None
        return prediction(endpoint_name, target.classes, status, data)

    def _timed_out(self, endpoint_name: str, exc: ConnectionFailed) -> None:
        """A request the endpoint took and did not answer in time is not sent again (the model would run
        twice, and a stuck process would keep the caller twice as long): SageMaker's timed-out ModelError."""
        if isinstance(exc.__cause__, TimeoutError):
            self._targets.pop(endpoint_name, None)
            try:
                model = self._row(endpoint_name)["model_name"]
            except SconesError:  # deleted meanwhile
                model = ""
            raise timed_out(endpoint_name, self.client.timeout, model) from None

    def _target(self, endpoint_name: str, refresh: bool = False) -> _Target:
        target = self._targets.get(endpoint_name)
        if target is not None and not refresh and target.expires > time.monotonic():
            return target
        row = self._reconciled(self._row(endpoint_name))  # a dead process reads Failed here
        if row["status"] not in (IN_SERVICE, UPDATING) or not row["port"]:
            self._targets.pop(endpoint_name, None)
            raise EndpointUnavailable(_unavailable(self._record(row)))
        target = _Target(row["port"], tuple(loads(row["classes"]) or ()), time.monotonic() + TARGET_TTL_SECONDS)
        self._targets[endpoint_name] = target
        return target

    # -- processes -----------------------------------------------------------------------------

    def _served_model(self, model_name: str) -> Model:
        model = self.models.describe_model(model_name)
        if model.backend != self.backend_name:
            raise ValidationError(
                f"Model {model_name} belongs to the {model.backend} backend: models do not cross backends "
                f"(SageMaker's built-in container cannot serve a local model, nor the reverse); train it here.")
        self._artifact_path(model)
        return model

    def _artifact_path(self, model: Model) -> Path:
        bucket, key = parse_s3_uri(model.model_artifact)
        path = self.store.path(bucket, key)
        if not path.is_file():
            raise ValidationError(f"The artifact of model {model.model_name} ({model.model_artifact}) is missing: "
                                  "train the job again and create the model from it.")
        return path

    @property
    def _serving_dir(self) -> Path:
        return Path(self.settings.home) / "serving"

    def _ready_file(self, endpoint_name: str, instance: str) -> Path:
        return self._serving_dir / f"{endpoint_name}-{instance}.json"

    def _log_file(self, endpoint_name: str, instance: str) -> Path:
        return Path(self.settings.logs_dir) / f"endpoint-{endpoint_name}-{instance}.log"

    def _command(self, endpoint_name: str, config: EndpointConfig, model: Model, ready: Path) -> list[str]:
        cmd = [sys.executable, "-m", "backend.local.serving.server", "--endpoint", endpoint_name,
               "--artifact", str(self._artifact_path(model)), "--ready-file", str(ready),
               "--threads", str(self.threads)]
        cap = config.capture
        if cap.enabled:
            bucket, prefix = parse_s3_uri(cap.destination)
            cmd += ["--capture-root", str(self.store.bucket_dir(bucket)), "--capture-prefix", prefix,
                    "--capture-percent", str(cap.sampling_percent), "--capture-input", "1" if cap.capture_input else "0",
                    "--capture-output", "1" if cap.capture_output else "0"]
        return cmd

    def _start_process(self, endpoint_name: str, config: EndpointConfig, model: Model, pending: bool) -> None:
        instance = secrets.token_hex(4)
        ready = self._ready_file(endpoint_name, instance)
        log_path = self._log_file(endpoint_name, instance)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        ready.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        prefix = "pending_" if pending else ""
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    self._command(endpoint_name, config, model, ready), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, env=env, close_fds=True, cwd=str(REPO_ROOT),
                )
        except OSError as exc:
            reason = f"The endpoint process could not start ({exc.strerror or exc})."
            if pending:
                self._rollback(endpoint_name, reason)
            else:
                self.db.execute("UPDATE endpoints SET status=?, failure=?, updated=?, generation=generation+1 "
                                "WHERE endpoint_name=?", (FAILED, reason, utcnow(), endpoint_name))
            return
        with self._children_lock:
            self._children[proc.pid] = proc
        self.db.execute(
            f"UPDATE endpoints SET {prefix}instance=?, {prefix}pid=?, {prefix}pid_start=?, {prefix}port=NULL, "
            f"{prefix}classes=?, {prefix}started=?, generation=generation+1 WHERE endpoint_name=?",
            (instance, proc.pid, process_start_time(proc.pid), dumps(list(model.classes)), time.time(), endpoint_name),
        )

    def _reap(self) -> None:
        """Collect exited children so they do not linger as zombies in a long-lived dashboard."""
        with self._children_lock:
            for pid, proc in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[pid]

    def _terminate(self, pid: int | None, pid_start: str | None, wait: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (the server drains its requests in flight), SIGKILL if it has not exited in `wait` s."""
        if not process_alive(pid, pid_start):
            return
        for sig, patience in ((signal.SIGTERM, wait), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + patience
            while time.monotonic() < deadline:
                self._reap()
                if not process_alive(pid, pid_start):
                    return
                time.sleep(0.01)

    def _stop_processes(self, row: Any) -> None:
        for prefix in ("", "pending_"):
            self._terminate(row[f"{prefix}pid"], row[f"{prefix}pid_start"])
            if row[f"{prefix}instance"]:
                self._ready_file(row["endpoint_name"], row[f"{prefix}instance"]).unlink(missing_ok=True)

    def _ready_port(self, endpoint_name: str, instance: str | None) -> int | None:
        if not instance:
            return None
        try:
            return int(json.loads(self._ready_file(endpoint_name, instance).read_text())["port"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _failure_reason(self, endpoint_name: str, instance: str | None, what: str, model: str = "") -> str:
        tail = _tail(self._log_file(endpoint_name, instance), 16 * 1024) if instance else ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith("FailureReason: "):
                return line[len("FailureReason: "):]
        error = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), "")
        cause = f" with {error[:300]}" if error else " (killed or crashed)"
        return f"The endpoint process {what}{cause}; {restart_hint(endpoint_name, model)}"

    # -- reconciliation ------------------------------------------------------------------------

    def _reconciled(self, row: Any) -> Any:
        """Bring the record in line with the real processes; returns the (possibly re-read) row."""
        self._reap()
        name, status = row["endpoint_name"], row["status"]
        if status == CREATING:
            if not row["pid"]:  # between the insert and the spawn, or the creator died there
                if _age(row) > START_TIMEOUT_SECONDS:
                    self._set_failed(row, f"The endpoint process was never started; {restart_hint(name, row['model_name'])}")
            elif not process_alive(row["pid"], row["pid_start"]):
                self._set_failed(row, self._failure_reason(name, row["instance"], "exited during start-up",
                                                           row["model_name"]))
            elif self._came_up(row, ""):
                self._transition(row, IN_SERVICE, port=self._ready_port(name, row["instance"]))
            elif time.time() - (row["started"] or 0) > START_TIMEOUT_SECONDS:
                self._terminate(row["pid"], row["pid_start"])
                self._set_failed(row, f"The endpoint did not answer /ping within {START_TIMEOUT_SECONDS:.0f} s.")
        elif status == IN_SERVICE:
            if not process_alive(row["pid"], row["pid_start"]):
                self._set_failed(row, self._failure_reason(name, row["instance"], "exited unexpectedly", row["model_name"]))
        elif status == UPDATING:
            self._reconcile_update(row)
        else:
            return row
        return self._row(name)

    def _came_up(self, row: Any, prefix: str) -> bool:
        port = row[f"{prefix}port"] or self._ready_port(row["endpoint_name"], row[f"{prefix}instance"])
        return bool(port) and self.pinger.ping(port)

    def _reconcile_update(self, row: Any) -> None:
        name = row["endpoint_name"]
        if not row["pending_pid"]:
            return
        if not process_alive(row["pending_pid"], row["pending_pid_start"]):
            reason = self._failure_reason(name, row["pending_instance"], "for the new config exited during start-up")
            self._rollback(name, f"Update to {row['pending_config']} failed: {reason}", row)
        elif self._came_up(row, "pending_"):
            port = self._ready_port(name, row["pending_instance"])
            switched = self.db.execute(
                "UPDATE endpoints SET status=?, config_name=pending_config, instance=pending_instance, pid=pending_pid, "
                "pid_start=pending_pid_start, port=?, classes=pending_classes, started=pending_started, failure='', "
                f"updated=?, generation=generation+1, {_CLEAR_PENDING} WHERE endpoint_name=? AND generation=?",
                (IN_SERVICE, port, utcnow(), name, row["generation"]),
            )
            if switched:  # only the reader that won the switch stops the old process
                self._targets.pop(name, None)
                self._terminate(row["pid"], row["pid_start"])
                if row["instance"]:
                    self._ready_file(name, row["instance"]).unlink(missing_ok=True)
        elif time.time() - (row["pending_started"] or 0) > START_TIMEOUT_SECONDS:
            self._terminate(row["pending_pid"], row["pending_pid_start"])
            self._rollback(name, f"Update to {row['pending_config']} failed: the new process did not answer /ping "
                                 f"within {START_TIMEOUT_SECONDS:.0f} s.", row)

    def _rollback(self, endpoint_name: str, reason: str, row: Any = None) -> None:
        """The update failed: the old process goes on serving (InService), or Failed if it is gone too."""
        row = row if row is not None else self._row(endpoint_name)
        alive = process_alive(row["pid"], row["pid_start"])
        self.db.execute(
            f"UPDATE endpoints SET status=?, failure=?, updated=?, generation=generation+1, {_CLEAR_PENDING} "
            "WHERE endpoint_name=? AND generation=?",
            (IN_SERVICE if alive else FAILED, reason, utcnow(), endpoint_name, row["generation"]),
        )

    def _transition(self, row: Any, status: str, port: int | None = None) -> None:
        self.db.execute(
            "UPDATE endpoints SET status=?, port=COALESCE(?, port), updated=?, generation=generation+1 "
            "WHERE endpoint_name=? AND generation=?",
            (status, port, utcnow(), row["endpoint_name"], row["generation"]),
        )

    def _set_failed(self, row: Any, reason: str) -> None:
        self.db.execute(
            "UPDATE endpoints SET status=?, failure=?, updated=?, generation=generation+1 "
            "WHERE endpoint_name=? AND generation=?",
            (FAILED, reason, utcnow(), row["endpoint_name"], row["generation"]),
        )
        self._targets.pop(row["endpoint_name"], None)

    # -- records -------------------------------------------------------------------------------

    def _row(self, endpoint_name: str) -> Any:
        row = self.db.query_one(f"{_SELECT} WHERE e.endpoint_name=?", (endpoint_name,))
        if row is None:
            raise ResourceNotFound(f"Could not find endpoint {endpoint_name!r}: list the endpoints to see their names.")
        return row

    def _record(self, row: Any) -> Endpoint:
        capture = CaptureConfig(**loads(row["capture"])) if row["capture"] else CaptureConfig(enabled=False)
        return Endpoint(
            endpoint_name=row["endpoint_name"], status=row["status"], config_name=row["config_name"],
            model_name=row["model_name"] or "", created=row["created"], updated=row["updated"], capture=capture,
            failure_reason=row["failure"], url=f"http://127.0.0.1:{row['port']}" if row["port"] else "",
            backend=self.backend_name,
        )

    def _new_config_name(self, endpoint_name: str) -> str:
        while True:
            now = datetime.now(timezone.utc)
            stamp = f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"
            name = f"{endpoint_name[:63 - len(stamp) - 1]}-{stamp}".replace("--", "-")
            if not self.db.query_one("SELECT 1 FROM endpoint_configs WHERE config_name=?", (name,)):
                return name
            time.sleep(0.002)

    def _drop_unused_config(self, config_name: str) -> None:
        try:
            self.delete_endpoint_config(config_name)
        except SconesError:
            pass


_SELECT = ("SELECT e.*, c.model_name AS model_name, c.capture AS capture FROM endpoints e "
           "LEFT JOIN endpoint_configs c ON c.config_name = e.config_name")
_CLEAR_CURRENT = "instance=NULL, pid=NULL, pid_start=NULL, port=NULL, started=NULL"
_CLEAR_PENDING = ("pending_config=NULL, pending_instance=NULL, pending_pid=NULL, pending_pid_start=NULL, "
                  "pending_port=NULL, pending_classes=NULL, pending_started=NULL")


def _config(row: Any) -> EndpointConfig:
    return EndpointConfig(
        config_name=row["config_name"], model_name=row["model_name"], instance_type=row["instance_type"],
        capture=CaptureConfig(**loads(row["capture"])), created=row["created"], variant_name=row["variant_name"],
    )


def _tail(path: Path, max_bytes: int) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _age(row: Any) -> float:
    """Seconds since the record last changed."""
    try:
        return time.time() - datetime.fromisoformat(row["updated"].replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return 0.0


def _deploy_command(endpoint: str, model: str | None) -> str:
    """The command that deploys the endpoint's model to it again (the CLI's --endpoint defaults to another)."""
    return f"scones deploy{f' --model {model}' if model else ''} --endpoint {endpoint} --wait"


def restart_hint(endpoint: str, model: str | None) -> str:
    """What to do about a dead endpoint process, on the page and on the command line."""
    return f"start the endpoint again (Start on the Deploy page, or {_deploy_command(endpoint, model)})."


def timed_out(endpoint_name: str, seconds: float, model: str | None = None) -> ModelError:
    """SageMaker's ModelError for a container that did not answer in time, with what to do here: the
    process still looks alive, so it is replaced by a deployment (Start is for a dead one)."""
    return ModelError(f"Your invocation timed out while waiting for a response from container primary of endpoint "
                      f"{endpoint_name} ({seconds:g} s): its process may be stuck; redeploy it (Deploy on the "
                      f"Deploy page, or {_deploy_command(endpoint_name, model)}).", 408)


def _unavailable(endpoint: Endpoint) -> str:
    if endpoint.status == FAILED:
        reason = endpoint.failure_reason or "Its process is gone."
        return f"Endpoint {endpoint.endpoint_name} is Failed: {reason[:1].lower()}{reason[1:]}"
    if endpoint.status == OUT_OF_SERVICE:
        return f"Endpoint {endpoint.endpoint_name} is OutOfService: start it again to invoke it."
    return f"Endpoint {endpoint.endpoint_name} is {endpoint.status}: wait until it is InService, then invoke it."


def prediction(endpoint_name: str, classes: tuple[str, ...], status: int, data: bytes) -> Prediction:
    """An endpoint's HTTP answer read as InvokeEndpoint's result, or the ModelError it amounts to
    (also used by the Lambda workers' direct route, backend/local/direct_route.py)."""
    if status != 200:
        raise _model_error(endpoint_name, status, data)
    try:
        probabilities = tuple(float(p) for p in json.loads(data))
    except (ValueError, TypeError):
        raise ModelError(f"Endpoint {endpoint_name} answered something that is not a list of probabilities.",
                         502) from None
    if len(probabilities) != len(classes):
        raise ModelError(f"Endpoint {endpoint_name} answered {len(probabilities)} probabilities for "
                         f"{len(classes)} classes.", 502)
    return Prediction(probabilities, classes)


def _model_error(endpoint_name: str, status: int, data: bytes) -> ModelError:
    try:
        answer = json.loads(data)
        message, error = str(answer.get("message", "")), str(answer.get("error", ""))
    except (ValueError, AttributeError):
        message, error = data[:200].decode("utf-8", errors="replace"), ""
    kind = "client" if 400 <= status < 500 else "server"
    return ModelError(f"Received {kind} error ({status}) from endpoint {endpoint_name}: {message}", status, error)


class DeploymentBackendMixin:
    """The deployment methods of a backend, delegated to `self.deployment` (a DeploymentService).

    LocalBackend inherits this and sets `self.deployment`; pages and the CLI call these names.
    """

    restartable_statuses = RESTARTABLE

    deployment: DeploymentService

    def default_capture_destination(self) -> str:
        return self.deployment.default_capture_destination()

    def endpoint_cost_notice(self) -> str:
        return self.deployment.endpoint_cost_notice()

    def create_endpoint_config(self, config_name: str, model_name: str, instance_type: str = DEFAULT_INSTANCE_TYPE,
                               capture: CaptureConfig | None = None) -> EndpointConfig:
        return self.deployment.create_endpoint_config(config_name, model_name, instance_type, capture)

    def describe_endpoint_config(self, config_name: str) -> EndpointConfig:
        return self.deployment.describe_endpoint_config(config_name)

    def list_endpoint_configs(self) -> list[EndpointConfig]:
        return self.deployment.list_endpoint_configs()

    def delete_endpoint_config(self, config_name: str) -> None:
        self.deployment.delete_endpoint_config(config_name)

    def create_endpoint(self, endpoint_name: str, config_name: str) -> str:
        return self.deployment.create_endpoint(endpoint_name, config_name)

    def describe_endpoint(self, endpoint_name: str) -> Endpoint:
        return self.deployment.describe_endpoint(endpoint_name)

    def list_endpoints(self) -> list[Endpoint]:
        return self.deployment.list_endpoints()

    def wait_endpoint(self, endpoint_name: str, timeout: float = 60.0) -> Endpoint:
        return self.deployment.wait_endpoint(endpoint_name, timeout)

    def update_endpoint(self, endpoint_name: str, config_name: str) -> str:
        return self.deployment.update_endpoint(endpoint_name, config_name)

    def start_endpoint(self, endpoint_name: str) -> Endpoint:
        return self.deployment.start_endpoint(endpoint_name)

    def stop_endpoint(self, endpoint_name: str) -> Endpoint:
        return self.deployment.stop_endpoint(endpoint_name)

    def delete_endpoint(self, endpoint_name: str) -> None:
        self.deployment.delete_endpoint(endpoint_name)

    def invoke_endpoint(self, endpoint_name: str, body: bytes, content_type: str = "image/png") -> Prediction:
        return self.deployment.invoke_endpoint(endpoint_name, body, content_type)

    def deploy(self, model_name: str, endpoint_name: str | None = None, capture_percent: int = 100,
               **options: Any) -> Endpoint:
        return self.deployment.deploy(model_name, endpoint_name, capture_percent, **options)

    def endpoint_log(self, endpoint_name: str) -> str:
        return self.deployment.endpoint_log(endpoint_name)
