"""Fixtures: ``sink`` (the in-memory double) and ``harness`` (the double, then bqemulator)."""

from __future__ import annotations

import pytest

from processors.raw.testing import InMemoryRawSink
from processors_raw.harness import Harness, bigquery_harness, memory_harness


@pytest.fixture
def sink() -> InMemoryRawSink:
    return InMemoryRawSink()


@pytest.fixture(params=["memory", pytest.param("bigquery", marks=pytest.mark.emulator)])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "memory":
        return memory_harness()
    return bigquery_harness(request.getfixturevalue("bq_emulator"))
