from __future__ import annotations

import pytest

from backend.local.db import Database
from backend.local.states import FakeClock, StatesEngine

from .support import lambda_resolver


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory) -> Database:
    return Database(tmp_path_factory.mktemp("states") / "scones.db")


@pytest.fixture
def db(tmp_path) -> Database:
    return Database(tmp_path / "scones.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(db, clock):
    eng = StatesEngine(db, lambda_resolver, clock=clock)
    yield eng
    eng.close()
