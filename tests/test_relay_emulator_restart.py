"""The Pub/Sub emulator dies in the middle of a drain and comes back.

The relay must report the failure, lose nothing, and finish on the next run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from google.cloud import pubsub_v1

from outbox.bigquery_store import BigQueryOutboxStore
from outbox.bigquery_tables import ensure_tables
from outbox.emulators import PubSubEmulator
from outbox.ports import Message, PublishOutcome
from outbox.pubsub_admin import ensure_topics
from outbox.pubsub_publisher import PubSubPublisher
from outbox.routes import SCRAPER_COMPLETE, Route
from outbox.samples import scraper_rows
from outbox.schema import OUTBOX_JOURNAL, OUTBOX_RUNS
from outbox.wiring import Settings, Wiring
from relay import Relay, RelayConfig

pytestmark = pytest.mark.emulator


class KillAfterFirstBatch:
    """Publishes through the real adapter; kills the emulator after batch one."""

    def __init__(self, inner: PubSubPublisher, emulator: PubSubEmulator) -> None:
        self.inner, self.emulator, self.calls = inner, emulator, 0

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        self.calls += 1
        if self.calls == 2:
            self.emulator.kill()
        return self.inner.publish(topic, messages)

    def close(self) -> None:
        self.inner.close()


def _pull_all(sub: str, expected: int) -> dict[str, int]:
    client = pubsub_v1.SubscriberClient()
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while sum(counts.values()) < expected and time.monotonic() < deadline:
        resp = client.pull(subscription=sub, max_messages=1000, timeout=5)
        for m in resp.received_messages:
            key = m.message.attributes["execution_id"]
            counts[key] = counts.get(key, 0) + 1
        if resp.received_messages:
            client.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in resp.received_messages])
    return counts


def _topic_and_subscription(project: str, topic: str) -> str:
    ensure_topics(project, [topic])
    sub_client = pubsub_v1.SubscriberClient()
    sub = sub_client.subscription_path(project, f"{topic}-sub")
    sub_client.create_subscription(name=sub, topic=f"projects/{project}/topics/{topic}")
    return sub


def test_a_drain_survives_the_pubsub_emulator_dying_and_coming_back(
    bq_emulator: Any,
    start_emulator: Callable[[PubSubEmulator], PubSubEmulator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ps = start_emulator(PubSubEmulator(bq_emulator.project))
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", ps.host)
    settings = Settings(project=bq_emulator.project,
                        bigquery_emulator=bq_emulator.rest_url.removeprefix("http://"),
                        bigquery_emulator_grpc=bq_emulator.grpc_endpoint, pubsub_emulator=ps.host)
    wiring = Wiring.build(settings)
    dataset = f"restart_{uuid.uuid4().hex[:8]}"
    log, journal = (SCRAPER_COMPLETE.table.with_location(dataset),
                    OUTBOX_JOURNAL.with_location(dataset))
    ensure_tables(wiring.bigquery, settings.project,
                  [log, journal, OUTBOX_RUNS.with_location(dataset)])
    store = BigQueryOutboxStore(wiring.bigquery, wiring.appender, log, "scrapers", journal,
                                columns=SCRAPER_COMPLETE.columns, reader=wiring.reader)
    rows = scraper_rows(2000, seed=5)
    store.append(rows)
    route = Route("scrapers", log, f"restart-{dataset}", SCRAPER_COMPLETE.encoder,
                  SCRAPER_COMPLETE.columns)
    _topic_and_subscription(settings.project, route.topic)
    config = RelayConfig(batch_size=500, publish_attempts=2, retry_wait=0.05)

    dying = KillAfterFirstBatch(PubSubPublisher(settings.project, timeout=3.0), ps)
    first = Relay(route, store, dying, config).run_once()
    assert first.stopped == "publisher_unavailable", first.as_dict()
    assert first.failed > 0 and first.published < len(rows)
    published_before = first.published
    assert store.poll(first_since := rows[0]["triggered_at"], 0).backlog == (
        len(rows) - published_before)
    dying.close()

    ps.restart()  # same port; the emulator starts empty
    sub = _topic_and_subscription(settings.project, route.topic)
    publisher = PubSubPublisher(settings.project, timeout=10.0)
    second = Relay(route, store, publisher, config).run_once()
    publisher.close()
    assert second.stopped == "drained", second.as_dict()
    assert second.published == len(rows) - published_before

    received = _pull_all(sub, len(rows) - published_before)
    assert sum(received.values()) == len(rows) - published_before
    assert store.poll(first_since, 0).backlog == 0
    assert store.published_count(first_since, first_since) == len(rows)
    all_ids = {r["execution_id"] for r in rows}
    assert set(received) <= all_ids and len(received) == len(rows) - published_before
