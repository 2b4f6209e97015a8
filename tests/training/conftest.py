from __future__ import annotations

import time

import pytest

from tests.training import synthetic


@pytest.fixture
def staged(backend):
    """A backend whose bucket holds the tiny synthetic task (64 train, 32 test images of 16x16)."""
    synthetic.stage(backend)
    return backend


def wait_for(predicate, timeout: float = 60.0, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")


def wait_done(backend, name: str, timeout: float = 90.0):
    return wait_for(lambda: (j := backend.describe_training_job(name)).status != "InProgress" and j, timeout)
