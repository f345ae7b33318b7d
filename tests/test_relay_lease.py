"""Overlap safety: relays sharing a route take turns through the lease."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from outbox.errors import ConfigError
from outbox.routes import SCRAPER_COMPLETE, Route
from outbox.samples import scraper_rows
from outbox.testing import InMemoryLease, InMemoryOutboxStore, InMemoryPublisher, SimulatedCrash
from relay import Relay, RelayConfig


def test_a_run_is_skipped_while_another_relay_holds_the_lease() -> None:
    store, pub, lease = InMemoryOutboxStore(), InMemoryPublisher(), InMemoryLease()
    store.append(scraper_rows(5))
    a = Relay(SCRAPER_COMPLETE, store, pub, RelayConfig(), lease)
    b = Relay(SCRAPER_COMPLETE, store, pub, RelayConfig(), lease)
    assert lease.acquire("scrapers", a.holder, dt.timedelta(minutes=5))
    skipped = b.run_once()
    assert skipped.stopped == "lease_held" and skipped.polled == 0 and pub.sent == []
    assert a.run_once().published == 5, "the holder itself may run"
    assert b.run_once().stopped == "drained", "released after the run"


class DeadHolder:
    """Six pending rows, and a relay with ``config`` that died holding the lease
    (SIGKILL in effect: no release) right after its first publish."""

    def __init__(self, config: RelayConfig) -> None:
        self.now = [dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)]
        self.store = InMemoryOutboxStore(clock=self.clock)
        self.store.append(scraper_rows(6, now=self.now[0]))
        self.pub, self.lease = InMemoryPublisher(), InMemoryLease(clock=self.clock)
        self.config = config
        self.pub.faults.crash_after_publish = 1
        with pytest.raises(SimulatedCrash):
            self.relay().run_once()

    def clock(self) -> dt.datetime:
        return self.now[0]

    def relay(self, **kwargs: Any) -> Relay:
        return Relay(SCRAPER_COMPLETE, self.store, self.pub, self.config, self.lease,
                     clock=self.clock, **kwargs)


def test_a_dead_holder_blocks_the_route_only_until_the_lease_expires() -> None:
    dead = DeadHolder(RelayConfig(batch_size=3, deadline=dt.timedelta(seconds=30)))
    other = dead.relay()
    assert other.run_once().stopped == "lease_held"
    dead.now[0] += dt.timedelta(seconds=91)  # deadline 30 s + 60 s margin
    assert other.run_once().stopped == "drained"
    assert dead.store.published_ids() == {r["execution_id"] for r in dead.store.rows}


def test_a_configured_lease_ttl_bounds_the_block_and_the_drain() -> None:
    dead = DeadHolder(RelayConfig(batch_size=1, lease_ttl=dt.timedelta(seconds=8)))
    ticks = iter(range(0, 1000, 5))  # every look at the monotonic clock: 5 s later
    other = dead.relay(monotonic=lambda: float(next(ticks)))
    assert other.run_once().stopped == "lease_held"
    dead.now[0] += dt.timedelta(seconds=9)
    capped = other.run_once(deadline=dt.timedelta(hours=1))
    assert capped.stopped == "deadline", "an hour asked for, 6 s (TTL less a quarter) given"
    assert 0 < capped.published < 6


def test_a_lease_ttl_under_a_second_is_refused() -> None:
    with pytest.raises(ConfigError, match="lease_ttl"):
        RelayConfig(lease_ttl=dt.timedelta(milliseconds=500))


def test_contended_lease_is_a_skip_not_an_error() -> None:
    store, lease = InMemoryOutboxStore(), InMemoryLease()
    lease.refuse_next = 1
    relay = Relay(SCRAPER_COMPLETE, store, InMemoryPublisher(), RelayConfig(), lease)
    assert relay.run_once().stopped == "lease_held"


# -- on the emulators ------------------------------------------------------------------

def _stack(bq: Any, ps: Any, dataset: str) -> tuple[Any, Any, Route]:
    from outbox.bigquery_lease import BigQueryLease
    from outbox.bigquery_store import BigQueryOutboxStore
    from outbox.bigquery_tables import ensure_tables
    from outbox.schema import OUTBOX_JOURNAL, OUTBOX_LEASE, OUTBOX_RUNS
    from outbox.wiring import Settings, Wiring

    settings = Settings(project=bq.project, bigquery_emulator=bq.rest_url.removeprefix("http://"),
                        bigquery_emulator_grpc=bq.grpc_endpoint, pubsub_emulator=ps.host)
    wiring = Wiring.build(settings)
    log = SCRAPER_COMPLETE.table.with_location(dataset)
    journal, lease_table = (OUTBOX_JOURNAL.with_location(dataset),
                            OUTBOX_LEASE.with_location(dataset))
    ensure_tables(wiring.bigquery, settings.project,
                  [log, journal, lease_table, OUTBOX_RUNS.with_location(dataset)])
    store = BigQueryOutboxStore(wiring.bigquery, wiring.appender, log, "scrapers", journal,
                                columns=SCRAPER_COMPLETE.columns, reader=wiring.reader)
    lease = BigQueryLease(wiring.bigquery, settings.project, lease_table)
    route = Route("scrapers", log, f"lease-{dataset}", SCRAPER_COMPLETE.encoder,
                  SCRAPER_COMPLETE.columns)
    return store, lease, route


@pytest.mark.emulator
def test_relays_started_at_once_publish_each_row_once(bq_emulator: Any,
                                                      pubsub_emulator: Any) -> None:
    from google.cloud import pubsub_v1

    from outbox.pubsub_admin import ensure_topics
    from outbox.pubsub_publisher import PubSubPublisher

    dataset = f"lease_{uuid.uuid4().hex[:8]}"
    relays = []
    for _ in range(4):  # four relays, each with its own clients, as in four processes
        store, lease, route = _stack(bq_emulator, pubsub_emulator, dataset)
        relays.append(Relay(route, store, PubSubPublisher(bq_emulator.project),
                            RelayConfig(batch_size=50), lease))
    ensure_topics(bq_emulator.project, [route.topic])
    sub_client = pubsub_v1.SubscriberClient()
    sub = sub_client.subscription_path(bq_emulator.project, f"{route.topic}-sub")
    sub_client.create_subscription(name=sub, topic=f"projects/{bq_emulator.project}/topics/"
                                   f"{route.topic}")
    relays[0].store.append(scraper_rows(300, seed=11))

    barrier = threading.Barrier(len(relays))
    summaries = []

    def run(relay: Relay) -> None:
        barrier.wait()
        summaries.append(relay.run_once())

    threads = [threading.Thread(target=run, args=(r,)) for r in relays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stopped = sorted(s.stopped for s in summaries)
    assert stopped.count("drained") >= 1 and set(stopped) <= {"drained", "lease_held"}
    if stopped.count("drained") > 1:  # a later relay found nothing left
        assert sum(s.published for s in summaries) == 300

    counts: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while sum(counts.values()) < 300 and time.monotonic() < deadline:
        resp = sub_client.pull(subscription=sub, max_messages=1000, timeout=5)
        for m in resp.received_messages:
            key = m.message.attributes["execution_id"]
            counts[key] = counts.get(key, 0) + 1
        if resp.received_messages:
            sub_client.acknowledge(subscription=sub,
                                   ack_ids=[m.ack_id for m in resp.received_messages])
    extra = sub_client.pull(subscription=sub, max_messages=1000, return_immediately=True)
    for m in extra.received_messages:
        counts[m.message.attributes["execution_id"]] += 1
    assert len(counts) == 300 and set(counts.values()) == {1}
    for r in relays:
        r.publisher.close()


_HOLDER = """
import sys, time, datetime as dt
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from outbox.bigquery_lease import BigQueryLease
from outbox.schema import OUTBOX_LEASE
project, url, dataset = sys.argv[1:4]
client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=url))
lease = BigQueryLease(client, project, OUTBOX_LEASE.with_location(dataset))
assert lease.acquire("scrapers", "doomed", dt.timedelta(seconds=3))
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.emulator
def test_the_lease_of_a_holder_killed_with_sigkill_expires(bq_emulator: Any,
                                                           pubsub_emulator: Any) -> None:
    dataset = f"lease_{uuid.uuid4().hex[:8]}"
    _, lease, _ = _stack(bq_emulator, pubsub_emulator, dataset)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, bq_emulator.project, bq_emulator.rest_url, dataset],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not lease.acquire("scrapers", "survivor", dt.timedelta(minutes=1))
    # BigQuery's own clock decides expiry, so this test has to wait for it.
    deadline = time.monotonic() + 10
    while not lease.acquire("scrapers", "survivor", dt.timedelta(minutes=1)):
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.25)
