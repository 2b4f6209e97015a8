"""Fixtures for deployment: real model artifacts from tiny torch networks, a fake model source,
and a LocalBackend with the deployment service attached as the integration will attach it.

Every endpoint process a test starts is stopped at teardown (the backend fixture deletes every
endpoint, then kills any pid still recorded), so no process outlives the suite.
"""
from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from backend.api import Model, ResourceNotFound
from backend.local.backend import LocalBackend
from backend.local.jobs import process_alive, utcnow
from backend.local.serving.service import DeploymentBackendMixin, DeploymentService
from backend.local.training import artifact
from backend.settings import load_settings

CLASSES = ("bicycle", "motorcycle")


def tiny_artifact(seed: int, classes: tuple[str, ...] = CLASSES, image_shape=(3, 32, 32)) -> bytes:
    """model.tar.gz of a small CNN with random weights: the real format, exported the real way."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(image_shape[0], 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, len(classes)),
    ).eval()
    mean, std = [0.5] * image_shape[0], [0.25] * image_shape[0]
    onnx_bytes = artifact.export_onnx(net, mean, std, image_shape)
    return artifact.build_artifact(onnx_bytes, classes=classes, image_shape=image_shape, mean=mean, std=std,
                                   hyperparameters={"num_layers": "tiny", "seed": str(seed)},
                                   metrics={"validation:accuracy": 0.5}, job_name=f"tiny-{seed}", network="tiny CNN")


class FakeModels:
    """The training service's model records (describe_model / list_models), without training."""

    def __init__(self, store, bucket: str):
        self.store, self.bucket = store, bucket
        self.models: dict[str, Model] = {}

    def add(self, name: str, data: bytes, classes: tuple[str, ...] = CLASSES, metrics: dict | None = None,
            backend: str = "local") -> Model:
        key = f"output/{name}/output/model.tar.gz"
        self.store.put(self.bucket, key, data)
        meta, _ = artifact.read_members(data)
        model = Model(model_name=name, job_name=name, model_artifact=f"s3://{self.bucket}/{key}", created=utcnow(),
                      classes=tuple(meta["classes"]), image_shape=tuple(meta["image_shape"]),
                      metrics=metrics if metrics is not None else {"train:accuracy": 0.91, "validation:accuracy": 0.87},
                      backend=backend)
        self.models[name] = model
        return model

    def describe_model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise ResourceNotFound(f"No model named {name!r}: create one from a Completed training job.") from None

    def list_models(self) -> list[Model]:
        return sorted(self.models.values(), key=lambda m: m.created, reverse=True)


# LocalBackend inherits DeploymentBackendMixin once integrated; before that the tests add it themselves.
_BASES = (LocalBackend,) if issubclass(LocalBackend, DeploymentBackendMixin) else (DeploymentBackendMixin, LocalBackend)


class DeployBackend(*_BASES):
    """LocalBackend as the integration makes it (the mixin, `self.deployment`), with fake models."""

    def __init__(self, settings, models: FakeModels | None = None):
        super().__init__(settings)
        self.fake_models = models or FakeModels(self.store, self.objects.bucket)
        self.deployment = DeploymentService(self.db, self.store, self.objects.bucket, settings, self.fake_models)

    def list_models(self):
        return self.fake_models.list_models()

    def describe_model(self, name: str):
        return self.fake_models.describe_model(name)


def stop_everything(b: DeployBackend) -> None:
    """Delete every endpoint (stopping its processes), then kill any recorded process still alive."""
    for e in b.deployment.list_endpoints():
        try:
            b.deployment.delete_endpoint(e.endpoint_name)
        except ResourceNotFound:
            pass
    for row in b.db.query("SELECT pid, pid_start, pending_pid, pending_pid_start FROM endpoints"):
        for pid, start in ((row["pid"], row["pid_start"]), (row["pending_pid"], row["pending_pid_start"])):
            if process_alive(pid, start):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def artifact_a() -> bytes:
    return tiny_artifact(1)


@pytest.fixture(scope="session")
def artifact_b() -> bytes:
    """A second model, classes in the other order: an update is visible in every answer."""
    return tiny_artifact(2, classes=("motorcycle", "bicycle"))


@pytest.fixture
def deploy_backend(home: Path, artifact_a: bytes):
    b = DeployBackend(load_settings())
    b.fake_models.add("model-a", artifact_a)
    yield b
    stop_everything(b)


@pytest.fixture
def service(deploy_backend: DeployBackend) -> DeploymentService:
    return deploy_backend.deployment


@pytest.fixture(scope="module")
def module_backend(tmp_path_factory, artifact_a: bytes):
    """One workspace and one InService endpoint 'ep' (capture 100%) shared by a module's tests."""
    settings = replace(load_settings({}), home=tmp_path_factory.mktemp("deploy-module") / "workspace")
    b = DeployBackend(settings)
    b.fake_models.add("model-a", artifact_a)
    try:
        endpoint = b.deploy("model-a", "ep", 100)
        assert b.wait_endpoint(endpoint.endpoint_name, timeout=30).status == "InService"
        yield b
    finally:
        stop_everything(b)


@pytest.fixture(scope="session")
def sample_pngs(shared_data: Path) -> list[Path]:
    """The six real CIFAR test PNGs of the shared mirror (RGBA, 32x32)."""
    files = sorted((shared_data / "samples").glob("*.png"))
    assert len(files) == 6, f"the shared samples are missing from {shared_data / 'samples'}"
    return files


def expected_probabilities(data: bytes, image: bytes) -> list[float]:
    """What the artifact gives for an image, computed in this process with onnxruntime."""
    model = artifact.load_artifact(data)
    return model.predict_image_bytes(image)
