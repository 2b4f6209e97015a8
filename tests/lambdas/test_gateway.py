"""The loopback gateway, exercised with real boto3 clients configured the way the workers are:
boto3's standard per-service endpoint variables."""
from __future__ import annotations

import hashlib
import http.client
import json
import socket

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from backend.api import ResourceNotFound, ValidationError
from backend.local.gateway import Gateway
from backend.local.store import LocalStore

BUCKET = "scones-test"


class FakeEndpoints:
    """A stand-in for the local endpoints: records calls, answers probabilities or fails on cue."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, str]] = []

    def __call__(self, name: str, body: bytes, content_type: str) -> bytes:
        self.calls.append((name, body, content_type))
        if name == "missing":
            raise ResourceNotFound("No endpoint named 'missing': deploy a model first.")
        if name == "picky":
            raise ValidationError("Content type text/plain is not supported: send image/png or image/jpeg.")
        if name == "broken":
            raise RuntimeError("the model crashed")
        return json.dumps([0.9971, 0.0029]).encode()


@pytest.fixture
def store(tmp_path, png):
    store = LocalStore(tmp_path / "buckets")
    store.put(BUCKET, "test/bicycle_s_000017.png", png)
    store.put(BUCKET, "test/with space+plus.png", png)
    return store


@pytest.fixture
def endpoints():
    return FakeEndpoints()


@pytest.fixture
def gateway(store, endpoints):
    with Gateway(store, endpoints) as gateway:
        yield gateway


@pytest.fixture
def clients(aws_env, gateway, monkeypatch):
    for name, value in gateway.environment().items():
        monkeypatch.setenv(name, value)
    return boto3.client("s3"), boto3.client("sagemaker-runtime")


def error_of(exc_info) -> tuple[str, int]:
    response = exc_info.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_environment_names_boto3_endpoint_variables(gateway):
    assert gateway.url.startswith("http://127.0.0.1:")
    assert gateway.environment() == {"AWS_ENDPOINT_URL_S3": gateway.url,
                                     "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": gateway.url}


def test_get_object(clients, png):
    s3, _ = clients
    obj = s3.get_object(Bucket=BUCKET, Key="test/bicycle_s_000017.png")
    assert obj["Body"].read() == png
    assert obj["ContentLength"] == len(png)
    assert obj["ContentType"] == "image/png"
    assert obj["ETag"] == f'"{hashlib.md5(png).hexdigest()}"'
    assert obj["LastModified"].year >= 2024


def test_keys_with_spaces_and_plus_signs(clients, png):
    s3, _ = clients
    assert s3.get_object(Bucket=BUCKET, Key="test/with space+plus.png")["Body"].read() == png


def test_head_object(clients, png):
    s3, _ = clients
    assert s3.head_object(Bucket=BUCKET, Key="test/bicycle_s_000017.png")["ContentLength"] == len(png)
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=BUCKET, Key="test/nope.png")
    assert error_of(caught) == ("404", 404)


def test_missing_key_is_no_such_key(clients):
    s3, _ = clients
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=BUCKET, Key="test/nope.png")
    assert error_of(caught) == ("NoSuchKey", 404)
    assert caught.value.response["Error"]["Key"] == "test/nope.png"
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key="test/nope.png")


def test_missing_bucket_is_no_such_bucket(clients):
    s3, _ = clients
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket="other-bucket", Key="test/bicycle_s_000017.png")
    assert error_of(caught) == ("NoSuchBucket", 404)


def test_keys_that_would_leave_the_bucket_are_refused(clients, store):
    s3, _ = clients
    store.put("secret-bucket", "key.txt", b"secret")
    for key in ("../secret-bucket/key.txt", "test/../../secret-bucket/key.txt"):
        with pytest.raises(ClientError) as caught:
            s3.get_object(Bucket=BUCKET, Key=key)
        assert error_of(caught) == ("InvalidArgument", 400)
        assert "'..' segment" in caught.value.response["Error"]["Message"]


def test_other_s3_operations_are_not_implemented(clients):
    s3, _ = clients
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=BUCKET, Key="x.png", Body=b"data")
    assert error_of(caught) == ("NotImplemented", 501)
    assert "GetObject" in caught.value.response["Error"]["Message"]


def test_invoke_endpoint(clients, endpoints, png):
    _, runtime = clients
    answer = runtime.invoke_endpoint(EndpointName="scones-endpoint", ContentType="image/png", Body=png)
    assert json.loads(answer["Body"].read()) == [0.9971, 0.0029]
    assert answer["ContentType"] == "application/json"
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    assert endpoints.calls == [("scones-endpoint", png, "image/png")]


@pytest.mark.parametrize("name, code, status, words", [
    ("missing", "ValidationError", 400, "Endpoint missing of account 123456789012 not found"),
    ("picky", "ValidationError", 400, "Content type text/plain is not supported"),
    ("broken", "ModelError", 424, "Received server error (500) from primary with message \"the model crashed\""),
])
def test_endpoint_errors_have_sagemaker_codes(clients, png, name, code, status, words):
    _, runtime = clients
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName=name, ContentType="image/png", Body=png)
    assert error_of(caught) == (code, status)
    assert words in caught.value.response["Error"]["Message"]
    if name == "missing":  # SageMaker's words alone (the backend's own sentence was appended)
        assert caught.value.response["Error"]["Message"] == f"{words}."
    if code == "ModelError":
        assert caught.value.response["OriginalStatusCode"] == 500
        assert caught.value.response["OriginalMessage"] == "the model crashed"


def test_unsigned_or_foreign_host_requests_are_refused(gateway):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    conn.request("GET", f"/{BUCKET}/test/bicycle_s_000017.png")
    response = conn.getresponse()
    assert response.status == 403 and b"Unsigned request" in response.read()
    conn.request("GET", f"/{BUCKET}/test/bicycle_s_000017.png",
                 headers={"Host": "attacker.example:80", "Authorization": "AWS4-HMAC-SHA256 Credential=x"})
    assert conn.getresponse().status == 403
    conn.close()


def test_keep_alive_and_tcp_nodelay(gateway, png):
    headers = {"Authorization": "AWS4-HMAC-SHA256 Credential=x/20240101/us-east-1/s3/aws4_request"}
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
    conn.request("GET", f"/{BUCKET}/test/bicycle_s_000017.png", headers=headers)
    first = conn.getresponse()
    assert first.read() == png and first.version == 11
    local_port = conn.sock.getsockname()[1]
    conn.request("GET", f"/{BUCKET}/test/bicycle_s_000017.png", headers=headers)
    assert conn.getresponse().read() == png
    assert conn.sock.getsockname()[1] == local_port  # the same connection served both
    server_sockets = list(gateway._server.connections)
    assert server_sockets and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in server_sockets)
    conn.close()


def test_close_ends_idle_connections_and_frees_the_port(store, endpoints):
    gateway = Gateway(store, endpoints).start()
    port = gateway.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /x/y HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 0\r\n\r\n" % port)
    assert sock.recv(100).startswith(b"HTTP/1.1 403")
    gateway.close()
    sock.settimeout(5)
    while sock.recv(65536):  # the rest of the 403, then end of stream
        pass
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.mark.parametrize("service, call", [
    ("lambda", lambda c: c.list_functions()),  # a GET that must not be read as an S3 bucket
    ("dynamodb", lambda c: c.list_tables()),
])
def test_other_services_get_a_readable_not_implemented(aws_env, gateway, monkeypatch, service, call):
    monkeypatch.setenv("AWS_ENDPOINT_URL", gateway.url)
    with pytest.raises(ClientError) as caught:
        call(boto3.client(service, config=Config(retries={"max_attempts": 1})))
    assert error_of(caught) == ("NotImplemented", 501)
    assert "answers only S3 GetObject and SageMaker Runtime InvokeEndpoint" in caught.value.response["Error"]["Message"]
