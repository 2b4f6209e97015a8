"""The loopback gateway process that cannot start says why in one sentence (it said only 'did not start')."""
from __future__ import annotations

import pytest

from backend.api import SconesError
from backend.local import gateway_process
from backend.local.gateway_process import GatewayProcess


def test_a_gateway_that_fails_at_start_names_the_reason(tmp_path, monkeypatch):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "gateway.log").write_text("Traceback (most recent call last):\nOldError: an earlier run\n")
    monkeypatch.setenv("SCONES_THRESHOLD", "abc")  # the gateway process reads the settings and refuses them
    with pytest.raises(SconesError) as err:
        GatewayProcess(tmp_path / "home", tmp_path / "logs")
    message = str(err.value)
    assert message.startswith("The local AWS gateway did not start: ")
    assert "SCONES_THRESHOLD='abc' is not a number; set it to a number or unset it." in message
    assert "OldError" not in message  # only what this start logged
    assert str(tmp_path / "logs" / "gateway.log") in message
    assert not list((tmp_path / "home" / "run").iterdir())  # no ready file left behind


def test_a_gateway_that_fails_on_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    class Usage:
        free = 4096

    monkeypatch.setenv("SCONES_THRESHOLD", "abc")
    monkeypatch.setattr(gateway_process.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(SconesError, match=r"^The local AWS gateway did not start: the disk holding the workspace "
                                          r".*home is full \(4,096 bytes free\); free some space there and try again\.$"):
        GatewayProcess(tmp_path / "home", tmp_path / "logs")
