"""Backend jobs that run in worker processes, with their state in SQLite.

A start call inserts the job row and spawns `python -m backend.local.worker` in its own session,
so the job outlives the dashboard or CLI that started it. Whoever reads a job reconciles it with
the real process: a job whose worker is gone is marked Failed at once, never left InProgress.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from backend.api import (
    JOB_COMPLETED, JOB_FAILED, JOB_IN_PROGRESS, JOB_STOPPED, Job, ResourceNotFound,
)
from backend.local.db import Database, dumps, loads


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (guards against a recycled pid); None if it is not alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    if rest[0] in ("Z", "X"):  # a zombie has exited; only its parent has not reaped it yet
        return None
    return rest[19]


def process_alive(pid: int | None, start: str | None) -> bool:
    if not pid:
        return False
    now = process_start_time(pid)
    return now is not None and (start is None or now == start)


def new_job_id(kind: str) -> str:
    return f"{kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class JobRunner:
    def __init__(self, db: Database, home: Path, logs_dir: Path, backend_name: str = "local"):
        self.db, self.home, self.logs_dir, self.backend_name = db, home, logs_dir, backend_name
        self._children: list[subprocess.Popen] = []  # workers this process started, reaped when they end

    # -- lifecycle -------------------------------------------------------------------------

    def create(self, kind: str, params: dict[str, Any], message: str = "Starting") -> str:
        job_id = new_job_id(kind)
        now = utcnow()
        self.db.execute(
            "INSERT INTO jobs(job_id, kind, status, progress, message, params, created, updated, backend) "
            "VALUES(?,?,?,?,?,?,?,?,?)",
            (job_id, kind, JOB_IN_PROGRESS, 0.0, message, dumps(params), now, now, self.backend_name),
        )
        return job_id

    def spawn(self, job_id: str) -> int:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.logs_dir / f"{job_id}.log", "ab")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "backend.local.worker", "--home", str(self.home),
                 "--backend", self.backend_name, job_id],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, close_fds=True,
            )
        finally:
            log.close()
        self._children.append(proc)
        self.set_pid(job_id, proc.pid)
        return proc.pid

    def _reap(self) -> None:
        """Collect ended workers so they do not linger as zombies in a long-running dashboard."""
        self._children = [p for p in self._children if p.poll() is None]

    def start(self, kind: str, params: dict[str, Any]) -> str:
        job_id = self.create(kind, params)
        try:
            self.spawn(job_id)
        except OSError as exc:
            self.fail(job_id, f"The worker process could not start ({exc}).")
        return job_id

    def set_pid(self, job_id: str, pid: int) -> None:
        self.db.execute(
            "UPDATE jobs SET pid=?, pid_start=? WHERE job_id=?", (pid, process_start_time(pid), job_id)
        )

    def progress(self, job_id: str, fraction: float, message: str) -> None:
        self.db.execute(
            "UPDATE jobs SET progress=?, message=?, updated=? WHERE job_id=? AND status=?",
            (max(0.0, min(1.0, fraction)), message, utcnow(), job_id, JOB_IN_PROGRESS),
        )

    def complete(self, job_id: str, result: dict[str, Any], message: str = "Completed") -> None:
        self._finish(job_id, JOB_COMPLETED, message, result=result, progress=1.0)

    def fail(self, job_id: str, reason: str) -> bool:
        return self._finish(job_id, JOB_FAILED, "Failed", failure=reason)

    def stop(self, job_id: str) -> Job:
        job = self.describe(job_id)
        if job.done:
            return job
        row = self.db.query_one("SELECT pid, pid_start FROM jobs WHERE job_id=?", (job_id,))
        if row and process_alive(row["pid"], row["pid_start"]):
            try:
                os.killpg(row["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self._finish(job_id, JOB_STOPPED, "Stopped", failure="Stopped by the operator."):
            self._log_line(job_id, "Stopped by the operator: the worker was sent SIGTERM.")
        return self.describe(job_id)

    def _log_line(self, job_id: str, text: str) -> None:
        """A line in the job's log for an end the worker could not write itself (stopped, or killed)."""
        try:
            with open(self.logs_dir / f"{job_id}.log", "a", encoding="utf-8") as log:
                log.write(f"{utcnow()} {text}\n")
        except OSError:
            pass  # the log is for reading later: the job's status already says it

    def wait_exited(self, job_id: str, timeout: float = 10.0) -> bool:
        """Wait until the job's worker process is gone (after stop(): SIGTERM is not instant); True if it is."""
        row = self.db.query_one("SELECT pid, pid_start FROM jobs WHERE job_id=?", (job_id,))
        deadline = time.monotonic() + timeout
        while row and process_alive(row["pid"], row["pid_start"]):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _finish(self, job_id: str, status: str, message: str, *, result: dict | None = None,
                failure: str = "", progress: float | None = None) -> bool:
        """True when this call ended the job (it was still InProgress)."""
        return 1 == self.db.execute(
            "UPDATE jobs SET status=?, message=?, result=?, failure=?, progress=COALESCE(?, progress), updated=? "
            "WHERE job_id=? AND status=?",
            (status, message, None if result is None else dumps(result), failure, progress, utcnow(),
             job_id, JOB_IN_PROGRESS),
        )

    # -- reading ---------------------------------------------------------------------------

    def describe(self, job_id: str) -> Job:
        self._reap()
        row = self.db.query_one("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        if row is None:
            raise ResourceNotFound(f"No job named {job_id!r}: list jobs to see the names.")
        return self._reconciled(row)

    def describe_many(self, job_ids: list[str]) -> dict[str, Job]:
        """Several jobs by id in one query (a page's job list), each reconciled as `describe` does; ids with
        no row are left out."""
        self._reap()
        rows = []
        with self.db.connect() as conn:
            for i in range(0, len(job_ids), 500):
                chunk = job_ids[i:i + 500]
                rows += conn.execute(f"SELECT * FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return {row["job_id"]: self._reconciled(row) for row in rows}

    def list(self, kind: str | None = None, limit: int = 50) -> list[Job]:
        """This backend's jobs (and those of rows older than the backend column), newest first."""
        if kind:
            rows = self.db.query("SELECT * FROM jobs WHERE kind=? AND backend IN (?, '') ORDER BY created DESC LIMIT ?",
                                 (kind, self.backend_name, limit))
        else:
            rows = self.db.query("SELECT * FROM jobs WHERE backend IN (?, '') ORDER BY created DESC LIMIT ?",
                                 (self.backend_name, limit))
        return [self._reconciled(r) for r in rows]

    def latest(self, kind: str) -> Job | None:
        jobs = self.list(kind, limit=1)
        return jobs[0] if jobs else None

    def running(self, kind: str) -> list[Job]:
        rows = self.db.query("SELECT * FROM jobs WHERE kind=? AND status=? AND backend IN (?, '')",
                             (kind, JOB_IN_PROGRESS, self.backend_name))
        return [j for j in (self._reconciled(r) for r in rows) if not j.done]

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.1) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.describe(job_id)
            if job.done or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(poll)

    def _reconciled(self, row: Any) -> Job:
        if row["status"] == JOB_IN_PROGRESS and row["pid"] and not process_alive(row["pid"], row["pid_start"]):
            reason = "The worker process exited unexpectedly (killed or crashed); start the job again."
            if self.fail(row["job_id"], reason):  # once, whichever reader saw it first
                self._log_line(row["job_id"], f"Failed: {reason}")
            row = self.db.query_one("SELECT * FROM jobs WHERE job_id=?", (row["job_id"],))
        return Job(
            job_id=row["job_id"], kind=row["kind"], status=row["status"], progress=row["progress"],
            message=row["message"], created=row["created"], updated=row["updated"],
            params=loads(row["params"]) or {}, result=loads(row["result"]), failure_reason=row["failure"],
        )
