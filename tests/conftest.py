from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend import get_backend
from backend.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("SCONES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


def _shared_data() -> Path:
    """The shared real data: $SCONES_SHARED_DATA, else a `shared/data` folder beside the checkout."""
    env = os.environ.get("SCONES_SHARED_DATA")
    candidates = [Path(env)] if env else [p / "shared" / "data" for p in REPO.parents]
    for c in candidates:
        if (c / "cifar-100-python.tar.gz").is_file():
            return c
    raise RuntimeError(
        "The shared CIFAR mirror was not found: set SCONES_SHARED_DATA to the folder holding "
        "cifar-100-python.tar.gz, index.csv and samples/."
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _shared_data()


@pytest.fixture(scope="session")
def mirror_archive(shared_data: Path) -> Path:
    return shared_data / "cifar-100-python.tar.gz"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "workspace"
    monkeypatch.setenv("SCONES_HOME", str(ws))
    monkeypatch.delenv("SCONES_BACKEND", raising=False)
    return ws


@pytest.fixture
def backend(home: Path):
    return get_backend(load_settings())


# -- real Chromium (Debian's) for every Playwright test ------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run 'sudo apt-get install -y chromium' "
                    "(make test does this when run as root), or set SCONES_CHROMIUM to its path.")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


@pytest.fixture(scope="session")
def small_archive(tmp_path_factory) -> str:
    """A CIFAR-100 archive with 10 + 5 bicycles and 10 + 5 motorcycles (random pixels): staging it on
    moto takes a tenth of a second where the 1,200-image sample takes four."""
    from tests.archives import synthetic_archive

    path = tmp_path_factory.mktemp("cifar") / "small-cifar-100-python.tar.gz"
    synthetic_archive(path, [8] * 10 + [48] * 10, [8] * 5 + [48] * 5)
    return str(path)
