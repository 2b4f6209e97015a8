"""The dashboard's .streamlit/config.toml, as Streamlit itself reads it."""
from __future__ import annotations

from pathlib import Path

import streamlit.config as config

from backend.workspace import MAX_UPLOAD_BYTES

REPO = Path(__file__).resolve().parents[2]


def test_streamlit_reads_the_shipped_options(monkeypatch):
    monkeypatch.chdir(REPO)
    config.get_config_options(force_reparse=True)
    assert config.get_option("server.address") == "127.0.0.1"  # never on another interface
    assert config.get_option("server.headless") is True
    assert config.get_option("browser.gatherUsageStats") is False
    # Streamlit's full collection after every run was 70% of the server's CPU while a page polled, and
    # its bursts slowed a training beside it; a misspelt option would be ignored without a word.
    assert config.get_option("runner.postScriptGC") is False
    # The upload box rounds a limit over 500 MB to whole GB (512 read "1GB"); the backend refuses the same size.
    assert config.get_option("server.maxUploadSize") * 2**20 == MAX_UPLOAD_BYTES
    assert config.get_option("server.maxUploadSize") <= 500
