"""End-to-end latency: log row written -> message received by a subscriber.

The relay runs on the in-process scheduler (APScheduler) at a 1 s interval,
as ``outbox relay schedule --interval 1`` would, while a writer appends rows
at a steady rate and a streaming-pull subscriber timestamps each arrival.

bqemulator shares one DuckDB connection between its gRPC write path and its
read sessions, and can hang when an append lands during a read (seen here;
real BigQuery has no such limit), so appends and relay runs take turns on a
lock. The write time is taken after the append returns, so waiting for the
lock is not counted as latency.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
import uuid
from typing import Any

from google.cloud import pubsub_v1

from benchmarks.bq_fill import emulator_settings
from outbox.bigquery_store import BigQueryOutboxStore
from outbox.bigquery_tables import ensure_tables
from outbox.emulators import BigQueryEmulator, PubSubEmulator
from outbox.pubsub_admin import ensure_topics
from outbox.pubsub_publisher import PubSubPublisher
from outbox.routes import SCRAPER_COMPLETE, Route
from outbox.samples import scraper_row
from outbox.schema import OUTBOX_JOURNAL, OUTBOX_RUNS
from outbox.wiring import Wiring
from relay import Relay, RelayConfig
from relay.schedule import run_schedule

PROJECT = "bench-project"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def measure(bq: BigQueryEmulator, ps: PubSubEmulator, rows: int, rate: float,
            interval: float) -> dict[str, Any]:
    wiring = Wiring.build(emulator_settings(bq, ps))
    dataset = f"latency_{uuid.uuid4().hex[:8]}"
    log, journal = (SCRAPER_COMPLETE.table.with_location(dataset),
                    OUTBOX_JOURNAL.with_location(dataset))
    ensure_tables(wiring.bigquery, PROJECT, [log, journal, OUTBOX_RUNS.with_location(dataset)])
    store = BigQueryOutboxStore(wiring.bigquery, wiring.appender, log, "scrapers", journal,
                                columns=SCRAPER_COMPLETE.columns, reader=wiring.reader)
    topic = f"latency-{dataset}"
    route = Route("scrapers", log, topic, SCRAPER_COMPLETE.encoder, SCRAPER_COMPLETE.columns)
    ensure_topics(PROJECT, [topic])
    subscriber = pubsub_v1.SubscriberClient()
    sub = subscriber.subscription_path(PROJECT, f"{topic}-sub")
    subscriber.create_subscription(name=sub, topic=f"projects/{PROJECT}/topics/{topic}")

    written: dict[str, float] = {}
    received: dict[str, float] = {}
    turn = threading.Lock()

    def on_message(message: Any) -> None:
        received.setdefault(message.attributes["execution_id"], time.time())
        message.ack()

    streaming = subscriber.subscribe(sub, callback=on_message)
    publisher = PubSubPublisher(PROJECT)
    relay = Relay(route, store, publisher,
                  RelayConfig(deadline=dt.timedelta(seconds=max(interval, 5))))

    def run_relay() -> None:
        with turn:
            relay.run_once()

    stop = threading.Event()
    scheduler = threading.Thread(target=run_schedule, args=(run_relay, interval, stop))
    scheduler.start()
    try:
        for i in range(rows):
            row = scraper_row(now=dt.datetime.now(dt.UTC), execution_id=f"lat{i:06d}")
            with turn:
                store.append([row])
            written[row["execution_id"]] = time.time()
            time.sleep(1 / rate)
        deadline = time.monotonic() + 30
        while len(received) < rows and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        scheduler.join()
        streaming.cancel()
        publisher.close()
    latencies = [received[k] - written[k] for k in written if k in received]
    return {
        "rows": rows, "rate_per_second": rate, "interval_seconds": interval,
        "received": len(latencies), "lost": rows - len(latencies),
        "p50_seconds": percentile(latencies, 50), "p99_seconds": percentile(latencies, 99),
        "max_seconds": max(latencies), "mean_seconds": statistics.fmean(latencies),
    }


def run(rows: int, rate: float, interval: float) -> dict[str, Any]:
    with BigQueryEmulator(PROJECT) as bq, PubSubEmulator(PROJECT) as ps:
        return measure(bq, ps, rows, rate, interval)
