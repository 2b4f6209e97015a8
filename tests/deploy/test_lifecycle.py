"""Endpoints against real processes: kill -9, restarts, blue/green updates under load, failures."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from backend.api import SconesError
from backend.local.db import Database
from backend.local.jobs import process_alive
from backend.local.serving.capture import complete_lines
from backend.local.serving.service import DeploymentService, EndpointUnavailable
from tests.deploy.conftest import FakeModels
from tests.deploy.images import png_bytes


def process_of(service: DeploymentService, name: str) -> tuple[int, str]:
    row = service.db.query_one("SELECT pid, pid_start FROM endpoints WHERE endpoint_name=?", (name,))
    return row["pid"], row["pid_start"]


def deployed(service: DeploymentService, model: str = "model-a", name: str = "ep", percent: int = 100) -> None:
    service.deploy(model, name, percent)
    endpoint = service.wait_endpoint(name, timeout=30)
    assert endpoint.status == "InService", endpoint.failure_reason


def wait_dead(pid: int, start: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_alive(pid, start)


def test_a_stuck_endpoint_times_out_once_with_what_to_do_and_is_not_asked_again(service):
    """A frozen process (SIGSTOP) takes the connection and never answers: one wait of the client's timeout,
    then SageMaker's timed-out ModelError, not a second wait and a message that it is InService (audit)."""
    from backend.local.serving.client import EndpointClient
    from backend.local.serving.service import ModelError

    deployed(service)
    pid, start = process_of(service, "ep")
    service.client = EndpointClient(timeout=1.0)
    os.kill(pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(ModelError) as err:
            service.invoke_endpoint("ep", png_bytes())
        assert time.monotonic() - began < 1.9  # one timeout, not two (2 s)
        assert err.value.status == 408
        # the command names the endpoint: the CLI's --endpoint defaults to scones-endpoint, another one
        assert str(err.value) == ("Your invocation timed out while waiting for a response from container primary of "
                                  "endpoint ep (1 s): its process may be stuck; redeploy it (Deploy on the Deploy page, "
                                  "or scones deploy --model model-a --endpoint ep --wait).")
    finally:
        os.kill(pid, signal.SIGCONT)
    service.client = EndpointClient()  # the thawed process answers the old request first
    assert len(service.invoke_endpoint("ep", png_bytes()).probabilities) == 2  # it answers again once thawed


def test_kill_9_reads_failed_never_in_service_and_start_brings_it_back(service):
    deployed(service)
    pid, start = process_of(service, "ep")
    assert service.invoke_endpoint("ep", png_bytes()).classes == ("bicycle", "motorcycle")
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid, start)
    endpoint = service.describe_endpoint("ep")
    assert endpoint.status == "Failed"
    hint = "start the endpoint again (Start on the Deploy page, or scones deploy --model model-a --endpoint ep --wait)."
    assert endpoint.failure_reason == f"The endpoint process exited unexpectedly (killed or crashed); {hint}"
    assert [e.status for e in service.list_endpoints()] == ["Failed"]
    with pytest.raises(EndpointUnavailable) as err:
        service.invoke_endpoint("ep", png_bytes())
    assert str(err.value) == f"Endpoint ep is Failed: the endpoint process exited unexpectedly (killed or crashed); {hint}"
    assert service.step_status().state == "failed"
    assert service.start_endpoint("ep").status == "Creating"
    assert service.wait_endpoint("ep", timeout=30).status == "InService"
    assert process_of(service, "ep")[0] != pid
    assert len(service.invoke_endpoint("ep", png_bytes()).probabilities) == 2


def test_a_killed_endpoint_loses_at_most_the_record_in_flight(service):
    deployed(service)
    pid, start = process_of(service, "ep")
    ok, stop = [0], threading.Event()

    def hammer() -> None:
        body = png_bytes(seed=3)
        while not stop.is_set():
            try:
                service.invoke_endpoint("ep", body)
            except SconesError:
                return
            ok[0] += 1

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.6)
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid, start)
    stop.set()
    for t in threads:
        t.join(30)
    records = 0
    for obj in service.store.list("scones-unlimited", "data_capture/ep/"):
        for line in complete_lines(service.store.get("scones-unlimited", obj.key)):
            json.loads(line)  # every complete line is a complete record
            records += 1
    assert ok[0] > 20
    assert ok[0] <= records <= ok[0] + len(threads)  # each answered request was captured before its answer


def test_endpoints_outlive_the_service_that_started_them(deploy_backend, service):
    """A dashboard restart: a new backend object over the same workspace sees and uses the endpoint."""
    deployed(service)
    restarted = DeploymentService(Database(service.db.path), service.store, "scones-unlimited",
                                  service.settings, FakeModels(service.store, "scones-unlimited"))
    endpoint = restarted.describe_endpoint("ep")
    assert endpoint.status == "InService" and endpoint.url == service.describe_endpoint("ep").url
    assert restarted.invoke_endpoint("ep", png_bytes()).classes == ("bicycle", "motorcycle")


def test_update_under_load_drops_no_request(deploy_backend, service, artifact_b):
    deploy_backend.fake_models.add("model-b", artifact_b)
    deployed(service, "model-a")
    old_pid, old_start = process_of(service, "ep")
    answers, errors, stop = [], [], threading.Event()

    def client(seed: int) -> None:
        body = png_bytes(seed=seed)
        while not stop.is_set():
            try:
                answers.append(service.invoke_endpoint("ep", body).classes)
            except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        service.deploy("model-b", "ep", 100)
        endpoint = service.wait_endpoint("ep", timeout=30)  # returns once the old process has exited
        switched_at = len(answers)
        time.sleep(0.5)  # the clients go on against the new process
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert endpoint.status == "InService" and endpoint.model_name == "model-b"
    old_order, new_order = ("bicycle", "motorcycle"), ("motorcycle", "bicycle")
    assert answers.count(old_order) > 0 and answers.count(new_order) > 0
    assert len(answers) > switched_at + 10
    assert set(answers[switched_at + len(threads):]) == {new_order}  # nothing answers from the old process now
    assert not process_alive(old_pid, old_start)  # the old process stopped, after the new one was healthy
    assert process_alive(*process_of(service, "ep"))


def test_an_update_whose_process_fails_leaves_the_old_one_serving(deploy_backend, service, artifact_a):
    deployed(service, "model-a")
    broken = deploy_backend.fake_models.add("broken", artifact_a)
    key = broken.model_artifact.split("/", 3)[3]
    deploy_backend.store.put("scones-unlimited", key, b"this is not a model.tar.gz")
    pid, _ = process_of(service, "ep")
    assert service.deploy("broken", "ep", 100).status == "Updating"
    endpoint = service.wait_endpoint("ep", timeout=30)
    assert endpoint.status == "InService" and endpoint.model_name == "model-a"
    assert endpoint.failure_reason.startswith("Update to ep-")
    assert "failed: The model artifact does not load" in endpoint.failure_reason
    assert endpoint.config_name not in endpoint.failure_reason  # it names the new config, not the one serving
    assert process_of(service, "ep")[0] == pid
    assert service.invoke_endpoint("ep", png_bytes()).classes == ("bicycle", "motorcycle")


def test_an_endpoint_whose_model_does_not_load_is_failed_with_the_reason(deploy_backend, service, artifact_a):
    broken = deploy_backend.fake_models.add("broken", artifact_a)
    deploy_backend.store.put("scones-unlimited", broken.model_artifact.split("/", 3)[3], b"\x1f\x8b truncated")
    service.deploy("broken", "ep", 100)
    endpoint = service.wait_endpoint("ep", timeout=30)
    assert endpoint.status == "Failed"
    assert endpoint.failure_reason.startswith("The model artifact does not load (")
    assert "FailureReason" in service.endpoint_log("ep")


def test_an_endpoint_stops_itself_once_its_workspace_folder_is_deleted(service):
    """'rm -rf' of the workspace (the README's reset) left endpoint processes serving, and capturing, for ever."""
    import shutil

    deployed(service)
    pid, start = process_of(service, "ep")
    shutil.rmtree(service._serving_dir)
    wait_dead(pid, start, timeout=15)


def test_an_endpoint_stops_itself_once_its_workspace_database_is_deleted(service):
    """Deleting scones.db alone (the folder kept) lost every record of the running endpoint: nothing could list
    or stop it, and it served and captured for ever."""
    deployed(service)
    pid, start = process_of(service, "ep")
    database = service._serving_dir.parent / "scones.db"
    aside = database.rename(database.with_name("moved-away.db"))  # as gone as deleted, for the endpoint
    try:
        wait_dead(pid, start, timeout=15)
    finally:
        aside.rename(database)  # the fixture's teardown reads it

