"""A short chaos run on every ``make test``: each fault kind at least once, nothing lost.

The full run is ``make chaos`` (30 rounds); this one plays rounds 1..5 of a fixed
seed, which covers the four fault kinds (they come in shuffled blocks of four),
against the real services under gunicorn and both emulators.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from outbox.chaos import FAULTS, OnlyThese, plan, published_between, run_chaos
from outbox.chaos_stack import ChaosStack
from outbox.emulators import EmulatorUnavailable
from outbox.ports import PendingRow
from outbox.replay import ReplayQuery
from outbox.routes import SCRAPER_COMPLETE
from outbox.samples import scraper_rows
from outbox.testing import InMemoryReplaySource

SEED = 7


def test_plans_cover_every_fault_in_each_block_of_four_and_replay_exactly() -> None:
    for block in range(3):
        faults = {plan(SEED, block * 4 + i, 6.0).fault for i in range(1, 5)}
        assert faults == set(FAULTS)
    assert plan(SEED, 9, 6.0) == plan(SEED, 9, 6.0)
    assert [plan(1, n, 6.0) for n in range(1, 9)] != [plan(2, n, 6.0) for n in range(1, 9)]
    assert all(0.5 <= plan(SEED, n, 6.0).at <= 3.6 for n in range(1, 50))


def test_the_broker_loss_query_bounds_the_journal_partition_and_takes_parameters() -> None:
    lo = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
    stmt = published_between("p-proj", lo, lo + dt.timedelta(minutes=1))
    assert "triggered_at >= @since" in stmt.sql and "recorded_at BETWEEN @lo AND @hi" in stmt.sql
    assert stmt.param("since") == lo - dt.timedelta(days=3)


def test_only_these_narrows_a_replay_to_the_dropped_ids() -> None:
    rows = scraper_rows(6)
    keep = {rows[1]["execution_id"], rows[4]["execution_id"]}
    source = OnlyThese(InMemoryReplaySource(rows, SCRAPER_COMPLETE), keep)
    today = dt.datetime.now(dt.UTC).date()
    query = ReplayQuery(SCRAPER_COMPLETE.name, today - dt.timedelta(days=7), today)
    got: list[PendingRow] = list(source.rows(query))
    assert {r.execution_id for r in got} == keep and source.count(query) == 2


@pytest.mark.emulator
@pytest.mark.timeout(600)
def test_five_rounds_of_chaos_lose_nothing(tmp_path: Path,
                                           emulator_missing: Callable[[str], NoReturn]) -> None:
    stack = ChaosStack(tmp_path, SEED)
    try:
        stack.start()
    except EmulatorUnavailable as exc:
        emulator_missing(str(exc))
    with stack:
        result = run_chaos(stack, SEED, range(1, 6))
    assert {r.plan.fault for r in result.rounds} == set(FAULTS)
    assert result.lost == [], f"lost: {result.lost}"
    assert result.events[SCRAPER_COMPLETE.name] > 0
    assert result.processed == result.expected > 0
    assert result.duplicates <= result.duplicate_bound, result.as_json()
    assert sum(result.scrapes.values()) > 0 and result.relay_runs.get("drained", 0) > 0
