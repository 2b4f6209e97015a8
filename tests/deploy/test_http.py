"""The endpoint process over real HTTP: GET /ping, POST /invocations, and hostile requests."""
from __future__ import annotations

import http.client
import json
import socket
import threading
from urllib.parse import urlparse

import pytest

from backend.api import ResourceNotFound
from backend.local.serving.capture import complete_lines
from backend.local.serving.client import EndpointClient
from backend.local.serving.service import ModelError
from tests.deploy.images import jpeg_bytes, png_bomb, png_bytes


@pytest.fixture(scope="module")
def port(module_backend) -> int:
    return urlparse(module_backend.describe_endpoint("ep").url).port


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(20000)


def raw(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def good_request_answers(port: int) -> None:
    status, ctype, body = raw(port, "POST", "/invocations", png_bytes(seed=7), {"Content-Type": "image/png"})
    assert (status, ctype) == (200, "application/json")
    assert len(json.loads(body)) == 2


def test_ping_and_unknown_routes(port):
    assert raw(port, "GET", "/ping")[0] == 200
    status, ctype, body = raw(port, "GET", "/nowhere")
    assert (status, ctype) == (404, "application/json") and "/ping" in json.loads(body)["message"]
    assert raw(port, "GET", "/invocations")[0] == 405
    assert raw(port, "DELETE", "/invocations")[0] == 405


def test_real_cifar_pngs_get_the_models_probabilities_in_class_order(port, sample_pngs, artifact_a):
    from backend.local.training import artifact

    model = artifact.load_artifact(artifact_a)
    for path in sample_pngs:
        data = path.read_bytes()
        status, ctype, body = raw(port, "POST", "/invocations", data, {"Content-Type": "image/png"})
        assert (status, ctype) == (200, "application/json"), body
        answer = json.loads(body)
        assert answer == pytest.approx(model.predict_image_bytes(data), abs=1e-5)
        assert sum(answer) == pytest.approx(1.0, abs=1e-5)


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped_to_white(port):
    """Pillow opens a 16-bit grayscale PNG as mode I;16, and convert("RGB") clips it: the model would see white."""
    import io

    import numpy as np
    from PIL import Image

    wide = (np.random.default_rng(0).random((32, 32)) * 65535).astype(np.uint16)
    narrow = np.round(wide / 257).astype(np.uint8)
    sixteen, eight = io.BytesIO(), io.BytesIO()
    Image.fromarray(wide).save(sixteen, format="PNG")
    Image.fromarray(narrow, "L").save(eight, format="PNG")
    white = io.BytesIO()
    Image.fromarray(np.full((32, 32), 255, np.uint8), "L").save(white, format="PNG")
    answers = [json.loads(raw(port, "POST", "/invocations", b.getvalue(), {"Content-Type": "image/png"})[2])
               for b in (sixteen, eight, white)]
    assert answers[0] == pytest.approx(answers[1], abs=1e-3)
    assert answers[1] != pytest.approx(answers[2], abs=1e-3)  # the test can tell scaled from clipped


@pytest.mark.parametrize("body, content_type", [
    (jpeg_bytes(), "image/jpeg"),
    (png_bytes(), "application/x-image"),
    (png_bytes(mode="L"), "image/png"),
    (png_bytes(mode="RGBA"), "image/png; charset=binary"),
    (png_bytes(1000, 700, seed=3), "image/png"),
    (jpeg_bytes(3000, 2000, seed=4), "image/jpeg"),
    (png_bytes(5, 90, seed=5), "image/png"),
    (jpeg_bytes(), "image/png"),  # the bytes decide the format, as the algorithm's container does
])
def test_png_and_jpeg_of_any_size_are_resized_and_answered(port, body, content_type):
    status, ctype, answer = raw(port, "POST", "/invocations", body, {"Content-Type": content_type})
    assert (status, ctype) == (200, "application/json"), answer
    probs = json.loads(answer)
    assert len(probs) == 2 and all(0 <= p <= 1 for p in probs) and sum(probs) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("name, body, headers, status, code, words", [
    ("empty body", b"", {"Content-Type": "image/png"}, 400, "EmptyBody", "body is empty"),
    ("0-byte upload, no length", None, {"Content-Type": "image/png"}, 400, "EmptyBody", "body is empty"),
    ("truncated PNG", png_bytes(64, 64, seed=1)[:300], {"Content-Type": "image/png"}, 400, "UnreadableImage",
     "truncated or corrupt"),
    ("text sent as image/png", b"hello, I am not a picture\n" * 20, {"Content-Type": "image/png"}, 400,
     "UnreadableImage", "not a PNG or JPEG"),
    ("a GIF", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", {"Content-Type": "application/x-image"}, 400,
     "UnreadableImage", "not a PNG or JPEG"),
    ("unsupported type", png_bytes(), {"Content-Type": "text/csv"}, 415, "UnsupportedMediaType", "'text/csv'"),
    ("no content type", png_bytes(), {}, 415, "UnsupportedMediaType", "'none'"),
    ("10 MB body", b"\x89PNG" + bytes(10 * 2**20), {"Content-Type": "image/png"}, 413, "PayloadTooLarge",
     "limit is 6,291,456 bytes"),
])
def test_hostile_requests_get_a_clear_4xx_and_the_server_goes_on(port, name, body, headers, status, code, words):
    got, ctype, answer = raw(port, "POST", "/invocations", body, headers)
    error = json.loads(answer)
    assert (got, ctype, error["error"]) == (status, "application/json", code), name
    assert words in error["message"]
    good_request_answers(port)


def test_a_decompression_bomb_is_refused_before_decoding(port, bomb):
    assert len(bomb) < 2 * 2**20  # small on the wire, 400 megapixels once decoded
    status, _, answer = raw(port, "POST", "/invocations", bomb, {"Content-Type": "image/png"})
    assert status == 413 and json.loads(answer)["error"] == "ImageTooLarge"
    assert "20000x20000" in json.loads(answer)["message"] or "pixels" in json.loads(answer)["message"]
    good_request_answers(port)


def test_chunked_and_malformed_lengths_are_refused(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 411 ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: -4\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # a body that never arrives in full
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\nab")
        s.shutdown(socket.SHUT_WR)
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")
    good_request_answers(port)


def test_keep_alive_one_connection_many_requests_with_nodelay(port):
    client = EndpointClient()
    body = png_bytes(seed=11)
    assert client.invoke(port, body, "image/png")[0] == 200
    conn = client._pool()[port]
    sock = conn.sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    for _ in range(20):
        status, _ = client.invoke(port, body, "image/png")
        assert status == 200
    assert client._pool()[port].sock is sock  # the same TCP connection all along
    assert client.invoke(port, b"", "image/png")[0] == 400  # an error keeps the connection too
    assert client._pool()[port].sock is sock
    client.close()


def test_concurrent_clients_are_all_answered(port):
    client, errors, done = EndpointClient(), [], []

    def worker(seed: int) -> None:
        for i in range(15):
            status, body = client.invoke(port, png_bytes(seed=seed * 100 + i), "image/png")
            (done if status == 200 and len(json.loads(body)) == 2 else errors).append(status)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(done) == 60


def test_invoke_endpoint_maps_answers_and_errors(module_backend, sample_pngs):
    b = module_backend
    for path in sample_pngs:
        p = b.invoke_endpoint("ep", path.read_bytes(), "image/png")
        assert p.classes == ("bicycle", "motorcycle") and len(p.probabilities) == 2
        assert p.label in p.classes and p.confidence == max(p.probabilities)
    with pytest.raises(ModelError, match=r"client error \(415\) from endpoint ep: Content type 'text/plain'") as err:
        b.invoke_endpoint("ep", b"x", "text/plain")
    assert err.value.status == 415 and err.value.error == "UnsupportedMediaType"
    with pytest.raises(ModelError, match=r"\(400\).*body is empty"):
        b.invoke_endpoint("ep", b"", "image/png")
    with pytest.raises(ResourceNotFound, match="Could not find endpoint 'no-such-endpoint'"):
        b.invoke_endpoint("no-such-endpoint", sample_pngs[0].read_bytes(), "image/png")
    assert b.invoke_endpoint("ep", sample_pngs[0].read_bytes()).classes == ("bicycle", "motorcycle")


def test_capture_files_stay_valid_after_hostile_input(module_backend):
    files = [o for o in module_backend.list_objects("data_capture/ep/AllTraffic/") if o.key.endswith(".jsonl")]
    assert files
    records = 0
    for obj in files:
        data = module_backend.get_object(obj.key)
        assert data.endswith(b"\n")  # nothing is being written now: every line is complete
        for line in complete_lines(data):
            record = json.loads(line)
            assert record["captureData"]["endpointInput"]["observedContentType"].startswith(("image/", "application/"))
            records += 1
    assert records > 0
