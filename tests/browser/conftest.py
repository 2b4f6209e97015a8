"""Real Chromium (Debian's) through Playwright, against a real `streamlit run` of the dashboard."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard import SCREENSHOTS, start_dashboard, stop_dashboard


@pytest.fixture
def dashboard_home(tmp_path) -> Path:
    home = tmp_path / "workspace"
    home.mkdir()
    return home


@pytest.fixture
def dashboard_url(dashboard_home):
    proc, url = start_dashboard(dashboard_home)
    yield url
    stop_dashboard(proc)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
