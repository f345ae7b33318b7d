"""The ProcessedLedger contract, run against the in-memory double and BigQuery on bqemulator.

Plus what only the BigQuery ledger has: its cost (one partition-pruned,
parameterised query per lookup, none for a cached repeat) and its cache.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from outbox.errors import InvalidRow
from processors.dedupe import (
    LOOKUP_WINDOW,
    PROCESSED_EVENTS,
    BigQueryLedger,
    LedgerEntry,
    ProcessedLedger,
    RecentlyProcessed,
    seen_statement,
)
from processors.testing import InMemoryLedger

DAY = dt.date(2026, 11, 28)
AT = dt.datetime(2026, 11, 28, 10, 5, tzinfo=dt.UTC)


@dataclass
class Ledgers:
    ledger: ProcessedLedger
    peer: ProcessedLedger
    """Another instance on the same storage (its own cache): what a second
    Cloud Run instance sees."""


def bigquery_ledgers(request: pytest.FixtureRequest) -> Ledgers:
    wiring = request.getfixturevalue("bq_wiring")
    (spec,) = request.getfixturevalue("fresh_tables")(PROCESSED_EVENTS)
    return Ledgers(*(BigQueryLedger(wiring.bigquery, wiring.appender, spec=spec)
                     for _ in range(2)))


@pytest.fixture(params=["memory", pytest.param("bigquery", marks=pytest.mark.emulator)])
def ledgers(request: pytest.FixtureRequest) -> Ledgers:
    if request.param == "memory":
        memory = InMemoryLedger()
        return Ledgers(memory, memory)
    return bigquery_ledgers(request)


def entry(execution_id: str = "a1b2c3d4", processor: str = "bdl_games",
          day: dt.date = DAY, **extra: Any) -> LedgerEntry:
    return LedgerEntry(execution_id, processor, day, AT, **extra)


def test_nothing_is_seen_before_it_is_recorded(ledgers: Ledgers) -> None:
    assert not ledgers.ledger.seen("a1b2c3d4", "bdl_games", DAY)


def test_a_record_is_seen_by_every_instance_for_that_processor_only(ledgers: Ledgers) -> None:
    ledgers.ledger.record(entry(run_id="r1", status="success", trigger_source="pubsub",
                                message_id="m1", gcs_path="gs://b/p.json"))
    for ledger in (ledgers.ledger, ledgers.peer):
        assert ledger.seen("a1b2c3d4", "bdl_games", DAY)
        assert not ledger.seen("a1b2c3d4", "bdl_player_box_scores", DAY)
        assert not ledger.seen("other", "bdl_games", DAY)


def test_the_lookup_window_around_the_event_date(ledgers: Ledgers) -> None:
    ledgers.ledger.record(entry())
    days = LOOKUP_WINDOW.days
    for ledger in (ledgers.ledger, ledgers.peer):
        assert ledger.seen("a1b2c3d4", "bdl_games", DAY + dt.timedelta(days=days))
        assert ledger.seen("a1b2c3d4", "bdl_games", DAY - dt.timedelta(days=days))
        assert not ledger.seen("a1b2c3d4", "bdl_games", DAY + dt.timedelta(days=days + 1))
        assert not ledger.seen("a1b2c3d4", "bdl_games", DAY - dt.timedelta(days=days + 1))


def test_recording_twice_is_harmless(ledgers: Ledgers) -> None:
    ledgers.ledger.record(entry())
    ledgers.ledger.record(entry())
    assert ledgers.peer.seen("a1b2c3d4", "bdl_games", DAY)


def test_a_bad_entry_is_refused_by_field_and_nothing_is_written(ledgers: Ledgers) -> None:
    with pytest.raises(InvalidRow) as err:
        ledgers.ledger.record(entry(execution_id="x" * 200))
    assert err.value.field == "execution_id"
    assert not ledgers.peer.seen("x" * 200, "bdl_games", DAY)


# -- the BigQuery ledger's cost --------------------------------------------------------------


@pytest.mark.emulator
def test_bigquery_lookup_costs_one_query_and_a_repeat_none(request: pytest.FixtureRequest
                                                           ) -> None:
    pair = bigquery_ledgers(request)
    ledger, peer = pair.ledger, pair.peer
    assert isinstance(ledger, BigQueryLedger) and isinstance(peer, BigQueryLedger)
    assert not peer.seen("a1", "bdl_games", DAY) and not peer.seen("a1", "bdl_games", DAY)
    assert peer.queries == 2  # "not processed" is never cached
    ledger.record(entry("a1"))
    assert ledger.seen("a1", "bdl_games", DAY) and ledger.queries == 0  # its own record
    assert peer.seen("a1", "bdl_games", DAY) and peer.queries == 3
    assert peer.seen("a1", "bdl_games", DAY) and peer.queries == 3  # cached


def test_the_lookup_is_parameterised_and_filters_the_partition_column() -> None:
    stmt = seen_statement("test-project", PROCESSED_EVENTS, "a1'; DROP", "bdl_games", DAY)
    assert "a1'" not in stmt.sql and stmt.param("execution_id") == "a1'; DROP"
    tree = sqlglot.parse_one(stmt.sql, read="bigquery")
    (between,) = tree.find_all(exp.Between)
    assert between.this.name == PROCESSED_EVENTS.partition_column == "event_date"
    assert (stmt.param("lo"), stmt.param("hi")) == (DAY - LOOKUP_WINDOW, DAY + LOOKUP_WINDOW)
    assert PROCESSED_EVENTS.require_partition_filter
    assert PROCESSED_EVENTS.clustering == ("processor", "execution_id")


def test_the_cache_is_a_bounded_lru_with_a_ttl() -> None:
    now = [0.0]
    cache = RecentlyProcessed(size=2, ttl=10, monotonic=lambda: now[0])
    cache.put(("a", "p"), DAY)
    cache.put(("b", "p"), DAY)
    assert cache.get(("a", "p"), DAY)  # touches a: b is now the oldest
    cache.put(("c", "p"), DAY)
    assert not cache.get(("b", "p"), DAY) and cache.get(("a", "p"), DAY)
    assert not cache.get(("a", "p"), DAY + LOOKUP_WINDOW + dt.timedelta(days=1))
    now[0] = 11
    assert not cache.get(("a", "p"), DAY) and not cache.get(("c", "p"), DAY)
