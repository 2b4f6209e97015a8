"""Store, database, settings and worker jobs of the local workspace."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from backend.api import JOB_COMPLETED, JOB_FAILED, ResourceInUse, ResourceNotFound, StepStatus, ValidationError
from backend.local.db import Database
from backend.local.store import LocalStore
from backend.settings import OFFICIAL_CIFAR_MD5, OFFICIAL_CIFAR_URL, load_settings


def test_store_roundtrip_listing_and_atomic_writes(tmp_path):
    store = LocalStore(tmp_path)
    store.put("scones-unlimited", "train/a.png", b"1")
    store.put_many("scones-unlimited", {"train/b.png": b"22", "test/c.png": b"333", "train.lst": b"x"})
    assert [o.key for o in store.list("scones-unlimited", "train/")] == ["train/a.png", "train/b.png"]
    assert [o.key for o in store.list("scones-unlimited", "train")] == ["train.lst", "train/a.png", "train/b.png"]
    assert store.get("scones-unlimited", "test/c.png") == b"333"
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    assert store.delete_prefix("scones-unlimited", "train/") == 2
    assert not (tmp_path / "scones-unlimited" / "train").exists()  # empty folders pruned
    with pytest.raises(ResourceNotFound, match="No object s3://scones-unlimited/train/a.png"):
        store.get("scones-unlimited", "train/a.png")
    with pytest.raises(ValidationError, match="Bucket name"):
        store.put("../x", "k", b"")


def test_store_refuses_symlink_escape_planted_by_hand(tmp_path):
    store = LocalStore(tmp_path / "b")
    store.put("scones-unlimited", "ok", b"1")
    (tmp_path / "b" / "scones-unlimited" / "link").symlink_to(tmp_path)
    with pytest.raises(ValidationError, match="outside bucket"):
        store.put("scones-unlimited", "link/escaped", b"1")


def test_database_wal_and_versioned_schema(tmp_path):
    db = Database(tmp_path / "s.db")
    assert db.query_one("PRAGMA journal_mode")[0] == "wal"
    from backend.local.db import CORE_MIGRATIONS
    assert db.query_one("SELECT version FROM schema_versions WHERE component='core'")["version"] == len(CORE_MIGRATIONS)
    assert db.migrate("extra", ("CREATE TABLE t1(x INTEGER)", "ALTER TABLE t1 ADD COLUMN y TEXT")) == 2
    Database(tmp_path / "s.db").migrate("extra", ("CREATE TABLE t1(x INTEGER)", "ALTER TABLE t1 ADD COLUMN y TEXT"))
    db.execute("INSERT INTO t1(x, y) VALUES(1, 'a')")
    with pytest.raises(RuntimeError, match="newer version"):
        Database(tmp_path / "s.db").migrate("extra", ("CREATE TABLE t1(x INTEGER)",))


def test_database_rolls_back_a_failed_transaction(tmp_path):
    db = Database(tmp_path / "s.db")
    with pytest.raises(sqlite3.IntegrityError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO datasets(bucket, state, updated) VALUES('b', 'staged', 'now')")
            conn.execute("INSERT INTO datasets(bucket, state, updated) VALUES('b', 'staged', 'now')")
    assert db.query("SELECT * FROM datasets") == []


def test_compact_gives_deleted_rows_pages_back_and_never_waits_on_a_writer(tmp_path):
    db = Database(tmp_path / "scones.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE blobs (b BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(4096),) for _ in range(1000)])
    db.execute("DELETE FROM blobs")
    size = lambda: sum(p.stat().st_size for p in tmp_path.glob("scones.db*"))  # noqa: E731
    before = size()
    assert before > 4_000_000
    writer = sqlite3.connect(tmp_path / "scones.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        assert db.compact(busy_seconds=0.1) is False  # another connection writes: left as it is, no error
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert db.compact() is True
    assert size() < before / 10
    assert db.query("SELECT count(*) AS n FROM blobs")[0]["n"] == 0
    # A small deletion from a big database is not worth rewriting all of it
    with db.transaction() as conn:
        conn.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(4096),) for _ in range(1000)])
    db.execute("DELETE FROM blobs WHERE rowid IN (SELECT rowid FROM blobs LIMIT 100)")
    free = db.query("PRAGMA freelist_count")[0][0]
    assert free > 0 and db.compact() is False and db.query("PRAGMA freelist_count")[0][0] == free


def test_settings_precedence_flag_env_default(tmp_path):
    default = load_settings({})
    assert default.home == Path("~/.scones").expanduser().resolve() and default.backend == "local"
    assert default.cifar_url == OFFICIAL_CIFAR_URL and default.cifar_md5 == OFFICIAL_CIFAR_MD5
    env = load_settings({"SCONES_HOME": str(tmp_path / "env"), "SCONES_BACKEND": "aws", "SCONES_CIFAR_MD5": "ABC"})
    assert env.home == tmp_path / "env" and env.backend == "aws" and env.cifar_md5 == "abc"
    flagged = env.with_overrides(home=str(tmp_path / "flag"), backend="local")
    assert flagged.home == tmp_path / "flag" and flagged.backend == "local"
    with pytest.raises(ValidationError, match="Unknown backend 'gcp'"):
        load_settings({"SCONES_BACKEND": "gcp"})
    # boto3 reads only AWS_DEFAULT_REGION: AWS_REGION (what the AWS CLI and an operator set) is honoured here
    assert load_settings({"AWS_REGION": "eu-west-1"}).aws_region == "eu-west-1"
    assert load_settings({"AWS_REGION": "eu-west-1", "SCONES_AWS_REGION": "us-west-2"}).aws_region == "us-west-2"
    assert load_settings({}).aws_region == ""
    with pytest.raises(ValidationError, match="SCONES_THRESHOLD"):
        load_settings({"SCONES_THRESHOLD": "high"})


def test_staging_job_runs_in_a_worker_process(backend):
    job_id = backend.start_staging("sample")
    job = backend.wait_job(job_id, timeout=60)
    assert job.status == JOB_COMPLETED, job.failure_reason
    assert job.result["counts"]["train"] == {"bicycle": 500, "motorcycle": 500}
    assert job.progress == 1.0
    assert backend.step_statuses()["stage"].state == "done"


def test_a_failed_job_keeps_its_reason_and_status_shows_failed(backend, tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"nope")
    job = backend.wait_job(backend.start_staging(str(bad)), timeout=60)
    assert job.status == JOB_FAILED
    assert "not a tar archive" in job.failure_reason
    status = backend.step_statuses()["stage"]
    assert status.state == "failed" and "not a tar archive" in status.detail


def test_an_uploaded_archive_refused_for_what_it_holds_is_not_kept(backend, tmp_path):
    """Every refused upload stayed under uploads/, a hostile one included, and Clean up later listed them (audit)."""
    saved = Path(backend.save_upload("evil.tar.gz", b"not an archive at all"))
    job = backend.wait_job(backend.start_staging(str(saved)), timeout=60)
    assert job.status == JOB_FAILED and job.failure_reason.endswith("The uploaded copy was deleted.")
    assert not saved.exists() and not saved.parent.exists()
    elsewhere = tmp_path / "mine.tar.gz"  # a path of the operator's own is never touched
    elsewhere.write_bytes(b"nope")
    job = backend.wait_job(backend.start_staging(str(elsewhere)), timeout=60)
    assert job.status == JOB_FAILED and "deleted" not in job.failure_reason and elsewhere.exists()
    assert backend.discard_upload(str(elsewhere)) is False and elsewhere.exists()


def test_a_staging_failure_from_before_a_clean_up_is_not_the_steps_state(backend, tmp_path):
    """Staged, a later attempt failed (the data kept), then everything deleted: the step read 'failed' with the
    old attempt's reason, not 'not started' (audit)."""
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"nope")
    assert backend.wait_job(backend.start_staging(str(bad)), timeout=60).status == JOB_FAILED
    backend.record_cleanup([("endpoint", "e")], [])  # a clean up that deleted no data hides no failure (review)
    assert backend.step_statuses()["stage"].state == "failed"
    backend.stage_data("sample")
    assert backend.wait_job(backend.start_staging(str(bad)), timeout=60).status == JOB_FAILED
    assert backend.step_statuses()["stage"].state == "done"
    report = backend.cleanup(None, include_data=True)
    assert any(kind == "data" for kind, _ in report.deleted)
    assert backend.step_statuses()["stage"].state == "not_started"
    assert backend.wait_job(backend.start_staging(str(bad)), timeout=60).status == JOB_FAILED  # a new failure is
    assert backend.step_statuses()["stage"].state == "failed"


def test_killed_worker_is_failed_as_soon_as_anyone_looks(backend):
    job_id = backend.jobs.create("stage", {"source": "sample", "classes": ["bicycle", "motorcycle"]})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    backend.jobs.set_pid(job_id, proc.pid)
    assert backend.describe_job(job_id).status == "InProgress"
    with pytest.raises(ResourceInUse, match="still running"):
        backend.start_staging("sample")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    job = backend.describe_job(job_id)
    assert job.status == JOB_FAILED
    assert "exited unexpectedly" in job.failure_reason


def test_stop_ends_a_running_job(backend):
    job_id = backend.jobs.create("stage", {})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    backend.jobs.set_pid(job_id, proc.pid)
    job = backend.stop_job(job_id)
    assert job.status == "Stopped"
    proc.wait(timeout=10)
    assert backend.describe_job(job_id).status == "Stopped"


def test_unknown_job_is_a_named_error(backend):
    with pytest.raises(ResourceNotFound, match="No job named 'nope'"):
        backend.describe_job("nope")


def test_the_cleanup_step_shows_the_last_cleanup_that_deleted_something(backend):
    first = backend.step_statuses()["cleanup"]
    assert first.state == "not_started" and "Nothing cleaned up yet" in first.detail
    assert first.detail.endswith("lists what the project created and its size.")  # locally nothing bills an hour
    backend.record_cleanup([], [])  # nothing to do: not a cleanup
    assert backend.last_cleanup() is None
    backend.record_cleanup([("endpoint", "a")], [])
    assert backend.step_statuses()["cleanup"].detail.endswith("UTC: deleted 1 resource.")
    backend.record_cleanup([("endpoint", "b"), ("model", "b")], [("model", "m", "Endpoint e serves model m.")])
    last = backend.step_statuses()["cleanup"]
    assert last.state == "done"
    assert last.detail.endswith("deleted 2 resources; 1 left, with the reason on the Clean up page.")
    # One that every resource refused does not replace it, and is named.
    backend.record_cleanup([], [("model", "m", "Endpoint e serves model m.")])
    refused = backend.step_statuses()["cleanup"]
    assert refused.state == "done" and "deleted 2 resources" in refused.detail
    assert "deleted nothing: 1 left" in refused.detail


def test_the_cleanup_step_is_in_progress_while_steps_hold_resources(backend, monkeypatch):
    backend.record_cleanup([("endpoint", "a")], [])
    monkeypatch.setattr(backend, "resource_step_statuses",
                        lambda: {"train": StepStatus("train", "done", "a model"),
                                 "deploy": StepStatus("deploy", "not_started")})
    step = backend.step_statuses()["cleanup"]
    assert step.state == "in_progress" and "Made since or left: training jobs;" in step.detail
    # no endpoint, but a model or an endpoint config left: not 'done' (audit: 'done' while a config stayed)
    monkeypatch.setattr(backend, "resource_step_statuses", lambda: {"deploy": StepStatus("deploy", "not_started")})
    monkeypatch.setattr(backend, "list_endpoint_configs", lambda: ["cfg"], raising=False)
    step = backend.step_statuses()["cleanup"]
    assert step.state == "in_progress" and "Made since or left: endpoint configs;" in step.detail
    deploy = backend.step_statuses()["deploy"]
    assert deploy.detail == "No endpoint now; 1 endpoint config is left (the Clean up page lists it)."
    monkeypatch.setattr(backend, "list_endpoint_configs", lambda: [], raising=False)
    assert backend.step_statuses()["cleanup"].state == "done"


def test_the_workflow_step_fails_while_its_endpoint_cannot_answer_but_not_while_it_updates(backend, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(backend, "resource_step_statuses",
                        lambda: {"workflow": StepStatus("workflow", "done", "3 executions.")})
    monkeypatch.setattr(backend, "workflow_targets", lambda: {"flow": "ep"})
    for status, state in (("InService", "done"), ("Updating", "done"), ("Failed", "failed"), (None, "failed")):
        endpoints = [SimpleNamespace(endpoint_name="ep", status=status)] if status else []
        monkeypatch.setattr(backend, "list_endpoints", lambda endpoints=endpoints: endpoints)
        step = backend.step_statuses()["workflow"]
        assert step.state == state, status
        if state == "failed":
            assert step.detail.startswith(f"The endpoint ep that flow calls {'no longer exists' if status is None else 'is Failed'}")
            assert step.detail.endswith("3 executions.")  # what ran is still said


def test_a_resource_gone_during_a_cleanup_and_another_workspaces_are_not_left_by_this_one(backend, monkeypatch):
    from backend.api import Resource
    from backend.inventory import NOT_CREATED_HERE, NOT_FOUND

    resources = [Resource("endpoint", "gone-meanwhile", "Deleting"),
                 Resource("endpoint", "theirs", "InService", created_here=False)]
    monkeypatch.setattr(backend, "inventory", lambda: resources)
    monkeypatch.setattr(backend, "_users", lambda: {})

    def delete(kind, name):  # its deletion finished between the plan and this call
        raise ResourceNotFound(f"Could not find endpoint {name}.")

    monkeypatch.setattr(backend, "_delete", delete)
    report = backend.cleanup()
    assert report.deleted == ()
    assert ("endpoint", "gone-meanwhile", NOT_FOUND) in report.left  # not refused: it is gone, as asked
    assert any(n == "theirs" and r.startswith(NOT_CREATED_HERE) for _, n, r in report.left)
    assert backend.last_cleanup() is None  # nothing this workspace had to do: not a cleanup Home reports
