"""The in-worker route (backend/local/direct_route.py): a boto3 call to the gateway's address is
answered inside the calling process with the gateway's own bytes, and whatever that route cannot
answer alone goes on over HTTP to the gateway."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from backend.api import ResourceNotFound
from backend.local.db import Database, dumps
from backend.local.direct_route import DirectRoute
from backend.local.gateway import Gateway, probabilities_json
from backend.local.lambda_runtime import LAMBDAS_DIR, REPO_ROOT, FunctionConfig, LambdaRuntime
from backend.local.serving.client import EndpointClient
from backend.local.serving.service import SERVING_MIGRATIONS, TARGET_TTL_SECONDS, prediction
from backend.local.store import LocalStore

from .conftest import FUNCTIONS_DIR, image_bytes

BUCKET = "scones-test"
PNG = image_bytes("PNG", (200, 40, 30))
CLASSES = ["bicycle", "motorcycle"]


class FakeModel(BaseHTTPRequestHandler):
    """An endpoint's /invocations: 500 for a body that is not a PNG, a slow answer to b"slow", else two
    probabilities. Each request's content type is kept."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(self.headers["Content-Type"])  # type: ignore[attr-defined]
        if body == b"slow":
            time.sleep(1.0)
        status, answer = (200, b"[0.25, 0.75]") if body.startswith(b"\x89PNG") else (
            500, json.dumps({"message": "cannot identify image file", "error": "NotAnImage"}).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, model):
    """A store, a database with three endpoints (serving, killed, Failed), and the gateway process's
    stand-in: an HTTP gateway whose invoke function answers as the deployment service would."""
    root = tmp_path_factory.mktemp("ws")
    store = LocalStore(root / "buckets")
    store.put(BUCKET, "test/bike.png", PNG)
    store.put(BUCKET, "test/notes.txt", b"not an image")
    db = Database(root / "scones.db")
    db.migrate("serving", SERVING_MIGRATIONS)
    with db.transaction() as conn:
        for name, status, port in (("ep", "InService", model.server_address[1]),
                                   ("updating", "Updating", model.server_address[1]),
                                   ("killed", "InService", closed_port()), ("broken", "Failed", None),
                                   ("moved", "InService", closed_port())):
            conn.execute("INSERT INTO endpoints(endpoint_name, status, config_name, created, updated, port, classes) "
                         "VALUES(?,?,?,?,?,?,?)", (name, status, name, "2026-11-30T00:00:00Z",
                                                     "2026-11-30T00:00:00Z", port, dumps(CLASSES)))
    calls: list[str] = []

    def service_invoke(name: str, body: bytes, content_type: str) -> bytes:
        calls.append(name)
        if name in ("ep", "moved"):
            from backend.local.serving.client import EndpointClient
            status, data = EndpointClient().invoke(model.server_address[1], body, content_type)
            return probabilities_json(prediction(name, tuple(CLASSES), status, data))
        raise ResourceNotFound(f"No endpoint {name}")

    with Gateway(store, service_invoke) as gateway:
        yield {"store": store, "db": db, "gateway": gateway, "gateway_calls": calls}


def clients(url: str, route: DirectRoute | None = None) -> tuple:
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="ASIALOCAL",
              aws_secret_access_key="fake", aws_session_token="fake")
    s3, runtime = boto3.client("s3", **kw), boto3.client("sagemaker-runtime", **kw)
    if route is not None:
        for c in (s3, runtime):
            c.meta.events.register("before-send", route.before_send)
    return s3, runtime


def error_of(call) -> dict:
    with pytest.raises(ClientError) as info:
        call()
    err = info.value.response["Error"]
    return {"Code": err["Code"], "Message": err["Message"],
            "HTTPStatusCode": info.value.response["ResponseMetadata"]["HTTPStatusCode"]}


def test_s3_answers_are_made_in_process_and_equal_the_gateways(workspace):
    # Nothing listens at the direct clients' address: every answer they get was made in process.
    dead = f"http://127.0.0.1:{closed_port()}"
    route = DirectRoute(dead, workspace["store"].root, workspace["db"].path)
    direct_s3, _ = clients(dead, route)
    http_s3, _ = clients(workspace["gateway"].url)

    def fields(obj: dict) -> dict:
        return {k: obj[k] for k in ("ContentType", "ETag", "ContentLength", "LastModified")}

    got, want = direct_s3.get_object(Bucket=BUCKET, Key="test/bike.png"), http_s3.get_object(Bucket=BUCKET, Key="test/bike.png")
    assert got["Body"].read() == want["Body"].read() == PNG
    assert fields(got) == fields(want) and got["ContentType"] == "image/png"
    head = direct_s3.head_object(Bucket=BUCKET, Key="test/notes.txt")
    assert head["ContentLength"] == len(b"not an image") and head["ContentType"] == "text/plain"

    for call in (lambda c: c.get_object(Bucket=BUCKET, Key="test/missing.png"),
                 lambda c: c.get_object(Bucket="no-such-bucket", Key="test/bike.png"),
                 lambda c: c.get_object(Bucket=BUCKET, Key="test/../../escape.png")):
        assert error_of(lambda: call(direct_s3)) == error_of(lambda: call(http_s3))
    assert error_of(lambda: direct_s3.get_object(Bucket=BUCKET, Key="test/missing.png"))["Code"] == "NoSuchKey"


def test_an_upload_goes_over_http_and_is_refused_as_the_gateway_refuses_it(workspace):
    """botocore streams an upload's body; the route leaves streams to HTTP (the gateway serves no PutObject)."""
    dead = f"http://127.0.0.1:{closed_port()}"
    s3, _ = clients(dead, DirectRoute(dead, workspace["store"].root, workspace["db"].path))
    with pytest.raises(EndpointConnectionError):  # not answered in process: sent to the (absent) gateway
        s3.put_object(Bucket=BUCKET, Key="test/new.png", Body=b"x")
    route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
    s3, _ = clients(workspace["gateway"].url, route)
    error = error_of(lambda: s3.put_object(Bucket=BUCKET, Key="test/new.png", Body=b"x"))
    assert (error["Code"], error["HTTPStatusCode"]) == ("NotImplemented", 501)
    assert not workspace["store"].exists(BUCKET, "test/new.png")


def test_errors_to_head_requests_are_answered_in_process_without_a_body(workspace):
    dead = f"http://127.0.0.1:{closed_port()}"
    s3, _ = clients(dead, DirectRoute(dead, workspace["store"].root, workspace["db"].path))
    error = error_of(lambda: s3.head_object(Bucket=BUCKET, Key="test/missing.png"))
    assert (error["Code"], error["HTTPStatusCode"]) == ("404", 404)  # botocore names a bodiless 404 by its status
    answer = s3.get_object(Bucket=BUCKET, Key="test/bike.png")
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    assert headers["server"] == "SconesLocalGateway" and headers["date"].endswith("GMT")


@pytest.mark.parametrize("name", ["ep", "updating"])  # an update keeps the old process serving
def test_invoke_goes_straight_to_the_endpoint(workspace, model, name):
    route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
    _, runtime = clients(workspace["gateway"].url, route)
    before = len(workspace["gateway_calls"])
    answer = runtime.invoke_endpoint(EndpointName=name, ContentType="image/png", Body=PNG)
    assert json.loads(answer["Body"].read()) == [0.25, 0.75]
    assert answer["ContentType"] == "application/json" and answer["InvokedProductionVariant"] == "AllTraffic"
    assert model.seen[-1] == "image/png"
    assert len(workspace["gateway_calls"]) == before  # the gateway was not asked


def test_a_model_error_reads_as_it_does_through_the_gateway(workspace):
    route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
    _, direct = clients(workspace["gateway"].url, route)
    _, http = clients(workspace["gateway"].url)
    calls = workspace["gateway_calls"]
    before = len(calls)
    got = error_of(lambda: direct.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=b"junk"))
    assert len(calls) == before  # made in process, not by the gateway
    want = error_of(lambda: http.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=b"junk"))
    assert calls[before:] == ["ep"]
    assert got == want
    assert got["Code"] == "ModelError" and "cannot identify image file" in got["Message"]


@pytest.mark.parametrize("name", ["killed", "broken", "never-deployed"])
def test_what_the_route_cannot_answer_goes_to_the_gateway(workspace, name):
    """A refused connection (a killed endpoint), an endpoint not serving, an unknown one: the gateway
    process, with the deployment service behind it, answers."""
    route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
    _, runtime = clients(workspace["gateway"].url, route)
    calls = workspace["gateway_calls"]
    before = len(calls)
    error = error_of(lambda: runtime.invoke_endpoint(EndpointName=name, ContentType="image/png", Body=PNG))
    assert calls[before:] == [name]
    assert error["Code"] == "ValidationError" and f"Endpoint {name} of account" in error["Message"]


def test_without_a_gateway_behind_it_a_fallback_fails_as_a_connection_error(workspace):
    dead = f"http://127.0.0.1:{closed_port()}"
    route = DirectRoute(dead, workspace["store"].root, workspace["db"].path)
    _, runtime = clients(dead, route)
    with pytest.raises(EndpointConnectionError):
        runtime.invoke_endpoint(EndpointName="killed", ContentType="image/png", Body=PNG)


def test_other_addresses_are_left_to_http(workspace):
    route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
    elsewhere, _ = clients(f"http://127.0.0.1:{closed_port()}", route)
    with pytest.raises(EndpointConnectionError):
        elsewhere.get_object(Bucket=BUCKET, Key="test/bike.png")


def test_workers_answer_in_process_and_the_handler_still_cannot_import_the_project(workspace):
    """With the route, the real serialize handler reads its image with no gateway listening at all,
    and the project stays hidden from handler code."""
    dead = f"http://127.0.0.1:{closed_port()}"
    with LambdaRuntime([
        FunctionConfig("serializeImageData", "serialize_image_data.lambda_handler", LAMBDAS_DIR,
                       environment={"S3_BUCKET": BUCKET}),
        FunctionConfig("describe", "probes.describe", FUNCTIONS_DIR),
    ], gateway_url=dead, direct_route=(workspace["store"].root, workspace["db"].path)) as rt:
        result = rt.invoke("serializeImageData", {"s3_key": "test/bike.png"})
        assert result.function_error is None, result.payload
        assert result.payload["body"]["s3_key"] == "test/bike.png" and result.payload["body"]["image_data"]
        missing = rt.invoke("serializeImageData", {"s3_key": "test/missing.png"})
        assert missing.payload["errorType"] == "ImageNotFound"
        assert rt.invoke("describe", {}).payload["project_importable"] is False
    with LambdaRuntime([FunctionConfig("serializeImageData", "serialize_image_data.lambda_handler", LAMBDAS_DIR,
                                       environment={"S3_BUCKET": BUCKET})], gateway_url=dead) as rt:
        # without the route the same call needs the gateway, and there is none
        assert rt.invoke("serializeImageData", {"s3_key": "test/bike.png"}).function_error == "Unhandled"


def test_a_moved_endpoint_is_found_at_its_new_port_once_the_record_is_read_again(workspace, model):
    route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
    _, runtime = clients(workspace["gateway"].url, route)
    calls = workspace["gateway_calls"]
    before = len(calls)
    runtime.invoke_endpoint(EndpointName="moved", ContentType="image/png", Body=PNG)  # its old port refuses
    assert calls[before:] == ["moved"]
    workspace["db"].execute("UPDATE endpoints SET port=? WHERE endpoint_name='moved'", (model.server_address[1],))
    time.sleep(TARGET_TTL_SECONDS + 0.1)
    runtime.invoke_endpoint(EndpointName="moved", ContentType="image/png", Body=PNG)
    assert calls[before:] == ["moved"]  # the second call went straight to the new port


def test_an_unreadable_database_or_record_leaves_the_call_to_the_gateway(workspace, tmp_path):
    for db_path in (tmp_path / "missing.db", tmp_path):  # no file; a folder
        route = DirectRoute(workspace["gateway"].url, workspace["store"].root, db_path)
        _, runtime = clients(workspace["gateway"].url, route)
        before = len(workspace["gateway_calls"])
        answer = runtime.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=PNG)
        assert json.loads(answer["Body"].read()) == [0.25, 0.75]
        assert workspace["gateway_calls"][before:] == ["ep"]
    workspace["db"].execute("UPDATE endpoints SET classes='not json' WHERE endpoint_name='updating'")
    try:
        route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
        _, runtime = clients(workspace["gateway"].url, route)
        before = len(workspace["gateway_calls"])
        error = error_of(lambda: runtime.invoke_endpoint(EndpointName="updating", ContentType="image/png", Body=PNG))
        assert workspace["gateway_calls"][before:] == ["updating"] and error["Code"] == "ValidationError"
    finally:
        workspace["db"].execute("UPDATE endpoints SET classes=? WHERE endpoint_name='updating'", (dumps(CLASSES),))


def test_an_endpoint_that_does_not_answer_in_time_is_not_asked_twice(workspace, model):
    route = DirectRoute(workspace["gateway"].url, workspace["store"].root, workspace["db"].path)
    route.client = EndpointClient(timeout=0.3)
    _, runtime = clients(workspace["gateway"].url, route)
    calls, seen = workspace["gateway_calls"], len(model.seen)
    before = len(calls)
    error = error_of(lambda: runtime.invoke_endpoint(EndpointName="ep", ContentType="image/png", Body=b"slow"))
    assert error["Code"] == "ModelError" and "timed out" in error["Message"]
    assert calls[before:] == [] and len(model.seen) == seen + 1


def test_a_route_that_cannot_be_installed_leaves_calls_to_http():
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from backend.local.direct_route import install; "
             "from botocore import handlers; n = len(handlers.BUILTIN_HANDLERS); install('{not json'); "
             "print(len(handlers.BUILTIN_HANDLERS) - n)")
    done = subprocess.run([sys.executable, "-c", probe, str(REPO_ROOT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "0"
    assert "the in-worker route is off, calls go over HTTP (JSONDecodeError" in done.stderr
