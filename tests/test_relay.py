"""The relay cycle against the in-memory doubles: every failure path."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from outbox.errors import ConfigError
from outbox.routes import SCRAPER_COMPLETE
from outbox.samples import scraper_rows
from outbox.testing import (
    InMemoryOutboxStore,
    InMemoryPublisher,
    PublisherFaults,
    SimulatedCrash,
    StoreFaults,
)
from relay import Relay, RelayConfig


def make(n: int = 10, batch: int = 4, store_faults: StoreFaults | None = None,
         pub_faults: PublisherFaults | None = None, **cfg: object):
    store = InMemoryOutboxStore(faults=store_faults, columns=SCRAPER_COMPLETE.columns)
    store.append(scraper_rows(n))
    pub = InMemoryPublisher(faults=pub_faults)
    relay = Relay(SCRAPER_COMPLETE, store, pub, RelayConfig(batch_size=batch, **cfg),
                  sleep=lambda s: None)
    return store, pub, relay


def all_ids(store: InMemoryOutboxStore) -> set[str]:
    return {r["execution_id"] for r in store.rows}


def test_drains_publishes_each_row_once_and_flags_it() -> None:
    store, pub, relay = make(10, batch=4)
    s = relay.run_once()
    assert (s.polled, s.published, s.marked, s.batches, s.stopped) == (10, 10, 10, 3, "drained")
    assert pub.counts() == {i: 1 for i in all_ids(store)}
    assert store.published_ids() == all_ids(store)
    again = relay.run_once()
    assert again.polled == 0 and len(pub.sent) == 10


def test_message_is_v1_body_with_identity_attribute() -> None:
    store, pub, relay = make(1)
    relay.run_once()
    sent = pub.sent[0]
    body = json.loads(sent.message.data)
    row = store.rows[0]
    assert body["execution_id"] == row["execution_id"] == sent.message.attributes["execution_id"]
    assert body["name"] == body["scraper_name"] == row["scraper_name"]
    assert set(sent.message.attributes) == {"scraper_name", "status", "execution_id", "workflow"}


def test_transient_publish_failure_is_retried_within_the_run() -> None:
    store, _pub, relay = make(5, batch=5, pub_faults=PublisherFaults(fail_publishes={2, 4}))
    s = relay.run_once()
    assert s.published == 5 and s.failed == 0
    assert store.published_ids() == all_ids(store)


def test_publisher_outage_stops_the_run_and_leaves_rows_pending() -> None:
    store, _pub, relay = make(5, batch=5, pub_faults=PublisherFaults(unavailable=3))
    s = relay.run_once()
    assert s.stopped == "publisher_unavailable" and s.failed == 5 and s.published == 0
    assert store.published_ids() == set()
    assert store.set_aside(store.clock() - dt.timedelta(days=1)) == []
    assert relay.run_once().published == 5
    assert store.published_ids() == all_ids(store)


def test_rejected_row_is_set_aside_after_max_attempts_without_blocking_others() -> None:
    store, pub, relay = make(6, batch=6, max_attempts=3)
    bad = store.rows[0]["execution_id"]
    pub.faults.reject_keys = {bad}
    first = relay.run_once()
    assert first.published == 5 and first.failed == 1 and first.set_aside == 0
    relay.run_once()
    third = relay.run_once()
    assert third.set_aside == 1
    aside = store.set_aside(store.clock() - dt.timedelta(days=1))
    assert [a.execution_id for a in aside] == [bad]
    assert aside[0].attempts == 3 and "rejected" in (aside[0].last_error or "")
    assert relay.run_once().polled == 0


def test_unencodable_row_is_set_aside_at_once() -> None:
    store, _pub, relay = make(3, batch=3)
    store.rows[1]["workflow"] = "w" * 2000  # attribute over 1024 bytes
    s = relay.run_once()
    assert s.published == 2 and s.set_aside == 1
    aside = store.set_aside(store.clock() - dt.timedelta(days=1))
    assert "attribute 'workflow'" in (aside[0].last_error or "")


def test_refused_fold_does_not_republish_and_a_later_fold_sets_the_flag() -> None:
    store, pub, relay = make(8, batch=4, store_faults=StoreFaults(refuse_marks=1))
    s = relay.run_once()
    assert s.published == 8 and s.fold_refused == 1 and s.marked == 0
    assert store.published_ids() == set()
    again = relay.run_once()
    assert again.polled == 0 and again.folded == 8
    assert store.published_ids() == all_ids(store)
    assert max(pub.counts().values()) == 1


def test_streaming_buffer_rows_are_published_once_and_flagged_later() -> None:
    now = [dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)]
    store = InMemoryOutboxStore(clock=lambda: now[0],
                                faults=StoreFaults(streaming_buffer=dt.timedelta(minutes=30)))
    store.append(scraper_rows(6, now=now[0]))
    pub = InMemoryPublisher()
    relay = Relay(SCRAPER_COMPLETE, store, pub, RelayConfig(batch_size=4), clock=lambda: now[0])
    s = relay.run_once()
    assert s.published == 6 and s.fold_refused == 1 and s.folded == 0
    for _ in range(3):
        assert relay.run_once().polled == 0
    assert len(pub.sent) == 6 and store.published_ids() == set()
    now[0] += dt.timedelta(minutes=31)
    assert relay.run_once().folded == 6
    assert store.published_ids() == all_ids(store)


def test_crash_after_publish_republishes_only_the_batch_in_flight() -> None:
    store, pub, relay = make(12, batch=4, pub_faults=PublisherFaults(crash_after_publish=0))
    relay.run_once(deadline=dt.timedelta(seconds=60))
    pub.faults.crash_after_publish = 1
    store.append(scraper_rows(8, seed=7))
    with pytest.raises(SimulatedCrash):
        relay.run_once()
    s = relay.run_once()
    counts = pub.counts()
    assert set(counts) == all_ids(store)
    dupes = [k for k, v in counts.items() if v > 1]
    assert len(dupes) <= 4
    assert store.published_ids() == all_ids(store) and s.stopped == "drained"


def test_crash_after_fold_loses_nothing() -> None:
    store, pub, relay = make(6, batch=3, store_faults=StoreFaults(crash_after_flag=1))
    with pytest.raises(SimulatedCrash):
        relay.run_once()
    relay.run_once()
    assert pub.counts() == {i: 1 for i in all_ids(store)}
    assert store.published_ids() == all_ids(store)


def test_journal_failure_falls_back_to_flagging_the_batch() -> None:
    store, pub, relay = make(6, batch=3, store_faults=StoreFaults(fail_records=1))
    s = relay.run_once()
    assert s.journal_failed == 3 and s.unsettled == 0
    relay.run_once()
    assert pub.counts() == {i: 1 for i in all_ids(store)}
    assert store.published_ids() == all_ids(store)


def test_crash_while_journaling_repeats_at_most_the_batches_in_flight() -> None:
    store, pub, relay = make(12, batch=3)
    real = store.record
    calls = [0]

    def crashing(entries):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 2:
            raise SimulatedCrash("while journaling")
        real(entries)

    store.record = crashing  # type: ignore[method-assign]
    with pytest.raises(SimulatedCrash):
        relay.run_once()
    store.record = real  # type: ignore[method-assign]
    relay.run_once()
    counts = pub.counts()
    assert set(counts) == all_ids(store)
    assert sum(v - 1 for v in counts.values()) <= 2 * 3
    assert store.published_ids() == all_ids(store)


def test_journal_failure_with_refused_mark_duplicates_at_most_that_batch() -> None:
    store, pub, relay = make(
        6, batch=3, store_faults=StoreFaults(fail_records=1, refuse_marks=1)
    )
    relay.run_once()
    relay.run_once()
    counts = pub.counts()
    assert set(counts) == all_ids(store)
    assert sum(v - 1 for v in counts.values()) <= 3
    assert store.published_ids() == all_ids(store)


def test_deadline_stops_between_batches() -> None:
    ticks = iter(range(1000))
    store = InMemoryOutboxStore()
    store.append(scraper_rows(10))
    relay = Relay(SCRAPER_COMPLETE, store, InMemoryPublisher(),
                  RelayConfig(batch_size=2, deadline=dt.timedelta(seconds=3)),
                  monotonic=lambda: float(next(ticks)))
    s = relay.run_once()
    assert s.stopped == "deadline" and 0 < s.published < 10


def test_poll_is_bounded_by_lookback_and_sweep_finds_old_rows() -> None:
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    store = InMemoryOutboxStore(clock=lambda: now)
    store.append(scraper_rows(2, now=now - dt.timedelta(days=10)))
    relay = Relay(SCRAPER_COMPLETE, store, InMemoryPublisher(),
                  RelayConfig(lookback=dt.timedelta(days=1)), clock=lambda: now)
    assert relay.run_once().published == 2  # the first run is a sweep


def test_unknown_topic_is_a_config_error_not_a_set_aside() -> None:
    store = InMemoryOutboxStore()
    store.append(scraper_rows(2))
    relay = Relay(SCRAPER_COMPLETE, store, InMemoryPublisher(topics=()), RelayConfig())
    with pytest.raises(ConfigError):
        relay.run_once()
    assert store.journal == []


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"deadline": dt.timedelta(0)},
                                 {"max_attempts": 0}, {"lookback": dt.timedelta(days=-1)}])
def test_config_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RelayConfig(**bad)  # type: ignore[arg-type]
