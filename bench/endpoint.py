"""Endpoint benchmark (JSON on stdout): a local endpoint over loopback HTTP, as the workflow uses it.

Goals (issue 4), with the model local training produces (ResNet-20, the local CPU preset), 32x32
PNGs, keep-alive connections and data capture at 100%:
  p50 <= 1.5 ms and p99 <= 5 ms for one client; >= 1,000 requests/s with 4 concurrent clients on
  2 cores; InService <= 3 s after create; captured records == requests.
The same figures are taken with capture off. Every client goes through `EndpointClient` (the
helper `invoke_endpoint` uses: keep-alive, TCP_NODELAY); `invoke_endpoint` itself is timed too.

    python bench/endpoint.py [--artifact model.tar.gz] [--requests 2000] [--seconds 4]

Without --artifact the network is a ResNet-20 with random weights (inference costs the same as a
trained one); with it, any model.tar.gz written by local training.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.api import Model, ResourceNotFound  # noqa: E402
from backend.local.db import Database  # noqa: E402
from backend.local.jobs import utcnow  # noqa: E402
from backend.local.serving.capture import complete_lines  # noqa: E402
from backend.local.serving.client import EndpointClient  # noqa: E402
from backend.local.serving.service import DeploymentService  # noqa: E402
from backend.local.store import LocalStore  # noqa: E402
from backend.local.training import artifact  # noqa: E402
from backend.settings import SAMPLE_ARCHIVE, load_settings  # noqa: E402

BUCKET = "scones-unlimited"
GOALS = {"p50_ms": 1.5, "p99_ms": 5.0, "requests_per_s_4_clients": 1000.0, "in_service_s": 3.0}


class BenchModels:
    """A ModelSource holding one model.tar.gz put in the bench's bucket."""

    def __init__(self, store: LocalStore, data: bytes):
        meta, _ = artifact.read_members(data)
        key = "output/bench/output/model.tar.gz"
        store.put(BUCKET, key, data)
        self.model = Model("bench-model", "bench", f"s3://{BUCKET}/{key}", utcnow(), tuple(meta["classes"]),
                           tuple(meta["image_shape"]), dict(meta.get("metrics", {})))

    def describe_model(self, name: str) -> Model:
        if name != self.model.model_name:
            raise ResourceNotFound(f"No model named {name!r}.")
        return self.model


def resnet_artifact(num_layers: int) -> bytes:
    """What local training writes, for the local CPU preset's network (random weights), test_time_flip
    (1: each request runs the image and its mirror image) and int8_serving (1: the graph in 8 bits,
    calibrated on training images)."""
    import numpy as np

    from backend import cifar
    from backend.local.training.hyperparameters import LOCAL_CPU_PRESET
    from backend.local.training.model import build_resnet

    flip = LOCAL_CPU_PRESET.get("test_time_flip") == "1"
    int8 = LOCAL_CPU_PRESET.get("int8_serving") == "1"
    net = build_resnet(num_layers, 2, (3, 32, 32)).eval()
    mean, std = [0.507, 0.487, 0.441], [0.267, 0.256, 0.276]
    onnx_bytes = artifact.export_onnx(net, mean, std, (3, 32, 32), flip)
    if int8:
        train = cifar.load_split_arrays(SAMPLE_ARCHIVE, ["bicycle", "motorcycle"])["train"].images
        calibration = train[:artifact.CALIBRATION_IMAGES].transpose(0, 3, 1, 2).astype(np.float32) / 255
        onnx_bytes = artifact.quantize_onnx(onnx_bytes, calibration)
    return artifact.build_artifact(onnx_bytes, classes=("bicycle", "motorcycle"), image_shape=(3, 32, 32), mean=mean,
                                   std=std, hyperparameters={"num_layers": str(num_layers), "test_time_flip": str(int(flip)),
                                                             "int8_serving": str(int(int8))},
                                   network=f"ResNet-{num_layers}", precision="int8" if int8 else "float32")


def cifar_pngs(n: int = 64) -> list[bytes]:
    """Real 32x32 CIFAR test images of the two classes, PNG-encoded as staging writes them."""
    from backend import cifar

    selection = cifar.load_split_arrays(SAMPLE_ARCHIVE, ["bicycle", "motorcycle"])["test"]
    return [cifar.encode_png(im) for im in selection.images[:n]]


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ms = sorted(s / 1e6 for s in samples_ns)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 3)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "mean_ms": round(statistics.fmean(ms), 3),
            "max_ms": round(ms[-1], 3), "requests": len(ms)}


def one_client(port: int, images: list[bytes], n: int, warmup: int = 200) -> dict:
    client = EndpointClient()
    for i in range(warmup):
        client.invoke(port, images[i % len(images)], "image/png")
    times = []
    for i in range(n):
        body = images[i % len(images)]
        t = time.perf_counter_ns()
        status, _ = client.invoke(port, body, "image/png")
        times.append(time.perf_counter_ns() - t)
        assert status == 200
    client.close()
    return {**percentiles(times), "sent": warmup + n}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (Linux /proc: the endpoint is another process; 0 where
    it cannot be read, such as a process that has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def concurrent_clients(port: int, images: list[bytes], clients: int, seconds: float, server_pid: int) -> dict:
    """`clients` threads, each with its own keep-alive connection, for `seconds` after a common start."""
    start, stop = threading.Barrier(clients + 1), threading.Event()
    results: list[list[int]] = [[] for _ in range(clients)]
    failures = [0]
    client = EndpointClient()

    def worker(k: int) -> None:
        client.invoke(port, images[0], "image/png")  # connect before the clock starts
        start.wait()
        i = k
        while not stop.is_set():
            t = time.perf_counter_ns()
            status, _ = client.invoke(port, images[i % len(images)], "image/png")
            results[k].append(time.perf_counter_ns() - t)
            failures[0] += status != 200
            i += clients

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0, server0, client0 = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server_cpu, client_cpu = cpu_seconds(server_pid) - server0, time.process_time() - client0
    times = [x for r in results for x in r]
    n = max(1, len(times))
    # CPU per request does not depend on what else the machine runs: it bounds what 2 idle cores can do.
    per_request_ms = (server_cpu + client_cpu) * 1000 / n
    return {"clients": clients, "requests_per_s": round(len(times) / wall, 1), "failures": failures[0],
            **percentiles(times), "sent": len(times) + clients,
            "server_cpu_ms_per_request": round(server_cpu * 1000 / n, 3),
            "client_cpu_ms_per_request": round(client_cpu * 1000 / n, 3),
            "cpu_bound_requests_per_s_2_idle_cores": round(2000 / per_request_ms, 0) if times else None}


def backend_path(service: DeploymentService, name: str, images: list[bytes], n: int) -> dict:
    for i in range(100):
        service.invoke_endpoint(name, images[i % len(images)], "image/png")
    times = []
    for i in range(n):
        t = time.perf_counter_ns()
        service.invoke_endpoint(name, images[i % len(images)], "image/png")
        times.append(time.perf_counter_ns() - t)
    return {**percentiles(times), "sent": 100 + n}


def count_records(store: LocalStore, endpoint: str) -> int:
    return sum(len(list(complete_lines(store.get(BUCKET, o.key))))
               for o in store.list(BUCKET, f"data_capture/{endpoint}/") if o.key.endswith(".jsonl"))


def run_case(service: DeploymentService, store: LocalStore, name: str, capture_percent: int | None,
             images: list[bytes], args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()  # from the create call (config + CreateEndpoint) to InService
    service.deploy("bench-model", name, capture_percent or 0, capture_enabled=capture_percent is not None)
    endpoint = service.wait_endpoint(name, timeout=60, poll=0.01)
    in_service_s = time.perf_counter() - t0
    if endpoint.status != "InService":
        raise SystemExit(f"endpoint {name} is {endpoint.status}: {endpoint.failure_reason}")
    port = int(endpoint.url.rsplit(":", 1)[1])
    server_pid = service.db.query_one("SELECT pid FROM endpoints WHERE endpoint_name=?", (name,))["pid"]
    single = one_client(port, images, args.requests)
    four = concurrent_clients(port, images, 4, args.seconds, server_pid)
    via_backend = backend_path(service, name, images, args.requests // 2)
    sent = single["sent"] + four["sent"] + via_backend["sent"]
    service.stop_endpoint(name)
    out = {"in_service_s": round(in_service_s, 3), "one_client": single, "four_clients": four,
           "invoke_endpoint_one_client": via_backend, "requests": sent}
    if capture_percent is not None:
        out["records"] = count_records(store, name)
        out["records_equal_requests"] = out["records"] == sent
    return out


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path, help="a model.tar.gz from local training (default: ResNet-20)")
    parser.add_argument("--layers", type=int, default=20, help="ResNet depth when no --artifact (local preset: 20)")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests for one client")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of the 4-client run")
    args = parser.parse_args()
    data = args.artifact.read_bytes() if args.artifact else resnet_artifact(args.layers)
    images = cifar_pngs()
    load_before = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(load_settings({}), home=Path(tmp))
        store = LocalStore(settings.buckets_dir)
        service = DeploymentService(Database(settings.db_path), store, BUCKET, settings, BenchModels(store, data))
        try:
            on = run_case(service, store, "bench-capture-on", 100, images, args)
            off = run_case(service, store, "bench-capture-off", None, images, args)
        finally:
            for e in service.list_endpoints():
                service.delete_endpoint(e.endpoint_name)
    meta, _ = artifact.read_members(data)
    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": loadavg()},
        "model": {"network": meta.get("network") or meta.get("hyperparameters", {}).get("num_layers"),
                  "bytes": len(data), "image_png_bytes_mean": round(statistics.fmean(len(i) for i in images))},
        "capture_100": on,
        "capture_off": off,
        "goals": GOALS,
        "met": {
            "p50": on["one_client"]["p50_ms"] <= GOALS["p50_ms"],
            "p99": on["one_client"]["p99_ms"] <= GOALS["p99_ms"],
            "throughput_4_clients": on["four_clients"]["requests_per_s"] >= GOALS["requests_per_s_4_clients"],
            "in_service": on["in_service_s"] <= GOALS["in_service_s"],
            "records_equal_requests": on["records_equal_requests"],
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
