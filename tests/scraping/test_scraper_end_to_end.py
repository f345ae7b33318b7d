"""Issue 4's "done when": a ``/scrape`` request becomes an event on the topic, via the outbox.

fixture API -> scraper service -> file + one row in BigQuery (bqemulator)
-> ``Relay.run_once()`` -> Pub/Sub emulator -> a pull subscription.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from scraper_fixtures import DATE, FAST_RETRIES, Rig

from outbox.routes import SCRAPER_COMPLETE, Route
from scrapers.fixture_server import Reply, bdl_page, game
from scrapers.registry import REGISTRY
from scrapers.service import create_app


def _bigquery_store(bq: Any, ps: Any, dataset: str) -> Any:
    from outbox.bigquery_store import BigQueryOutboxStore
    from outbox.bigquery_tables import ensure_tables
    from outbox.schema import OUTBOX_JOURNAL, OUTBOX_RUNS
    from outbox.wiring import Settings, Wiring

    settings = Settings(project=bq.project, bigquery_emulator=bq.rest_url.removeprefix("http://"),
                        bigquery_emulator_grpc=bq.grpc_endpoint, pubsub_emulator=ps.host)
    wiring = Wiring.build(settings)
    log_table = SCRAPER_COMPLETE.table.with_location(dataset)
    journal, runs = OUTBOX_JOURNAL.with_location(dataset), OUTBOX_RUNS.with_location(dataset)
    ensure_tables(wiring.bigquery, settings.project, [log_table, journal, runs])
    return BigQueryOutboxStore(wiring.bigquery, wiring.appender, log_table, "scrapers", journal,
                               runs, columns=SCRAPER_COMPLETE.columns, reader=wiring.reader)


@pytest.mark.emulator
def test_a_scrape_request_ends_as_a_v1_event_on_the_topic(rig: Rig, bq_emulator: Any,
                                                          pubsub_emulator: Any) -> None:
    from google.cloud import pubsub_v1

    from outbox.pubsub_admin import ensure_topics
    from outbox.pubsub_publisher import PubSubPublisher
    from relay import Relay, RelayConfig

    suffix = uuid.uuid4().hex[:8]
    store = _bigquery_store(bq_emulator, pubsub_emulator, f"scrapers_{suffix}")
    route = Route("scrapers", store.spec, f"scraper-complete-{suffix}",
                  SCRAPER_COMPLETE.encoder, SCRAPER_COMPLETE.columns)
    ensure_topics(bq_emulator.project, [route.topic])
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(bq_emulator.project, f"{route.topic}-sub")
    subscriber.create_subscription(
        name=subscription, topic=f"projects/{bq_emulator.project}/topics/{route.topic}")
    rig.upstream.on("/v1/games", Reply(body=bdl_page([game(1), game(2)])))

    app = create_app(REGISTRY, store, rig.blobs, env=rig.env, retry=FAST_RETRIES,
                     sleep=rig.sleeps.append)
    response = app.test_client().post(
        "/scrape", json={"scraper": "bdl_games_scraper", "date": DATE,
                         "workflow": "post_game_collection"})
    assert response.status_code == 200, response.get_json()
    ran = response.get_json()

    publisher = PubSubPublisher(bq_emulator.project)
    try:
        summary = Relay(route, store, publisher, RelayConfig(batch_size=10)).run_once()
    finally:
        publisher.close()
    assert summary.published == 1, summary.as_dict()

    received: list[Any] = []
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        received = list(subscriber.pull(subscription=subscription, max_messages=10,
                                        timeout=5).received_messages)
    subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in received])
    [message] = received
    body = json.loads(message.message.data)
    assert message.message.attributes["execution_id"] == ran["execution_id"]
    assert body["name"] == body["scraper_name"] == "bdl_games_scraper"
    assert body["execution_id"] == ran["execution_id"] and body["status"] == "success"
    assert body["record_count"] == 2 and body["workflow"] == "post_game_collection"
    assert body["gcs_path"] == ran["gcs_path"]
    assert body["metadata"] == {"scraper_class": "BdlGamesScraper",
                                "opts": {"date": DATE, "workflow": "post_game_collection"}}
    assert json.loads(rig.blobs.read(body["gcs_path"]))["data"] == [game(1), game(2)]
