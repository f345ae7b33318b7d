"""The whole pipeline on both emulators (issue 3, "Done when").

log rows -> scrapers relay -> Pub/Sub (emulator) -> push to a running ``/process``
-> ``nba_raw`` rows and processor log rows -> processors relay -> ``nba-phase2-complete``;
then every scraper event once more (re-published as a crashed relay would, with new
message ids) plus one ``outbox replay`` delivery: exactly one ledger record per event,
``nba_raw`` unchanged, every duplicate acked, nothing dead-lettered.

Everything lives in a dataset and topics of its own, so parallel runs never meet.

bqemulator can hang when a Storage Write append lands while a query or a read session
runs (one DuckDB connection; docs/design.md, "Not covered here"). So the server answers
one push at a time and the test's own BigQuery work (relay runs, queries) takes turns
with it on one lock: a stand-in for an emulator limit, not part of the product.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from google.api_core import exceptions as gexc
from google.cloud import bigquery, pubsub_v1
from processors_raw.samples import box_scores_file, games_file, odds_file
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from outbox.bigquery_lease import BigQueryLease
from outbox.bigquery_store import BigQueryOutboxStore
from outbox.bigquery_tables import ensure_tables
from outbox.blobs import Blobs, LocalBlobs
from outbox.errors import TransientError
from outbox.ports import Message, PublishOutcome
from outbox.pubsub_admin import ensure_topics
from outbox.pubsub_publisher import PubSubPublisher
from outbox.replay import Checkpoint, Replayer, ReplayQuery
from outbox.replay_bigquery import BigQueryReplaySource
from outbox.routes import PHASE2_COMPLETE, SCRAPER_COMPLETE, Route
from outbox.schema import OUTBOX_JOURNAL, OUTBOX_LEASE, OUTBOX_RUNS
from outbox.wiring import Settings, Wiring
from processors.base import Processor
from processors.dedupe import PROCESSED_EVENTS, BigQueryLedger
from processors.quarantine import PROCESSOR_QUARANTINE, BigQueryQuarantine
from processors.raw import RAW_TABLES, build_processors
from processors.raw.bigquery_sink import BigQueryRawSink
from processors.registry import Registry
from processors.service import create_app
from relay import Relay, RelayConfig

pytestmark = pytest.mark.emulator

DAY = "2026-11-28"
# scraper_name -> (path in the bucket, the file, the processor that must load it)
FILES: dict[str, tuple[str, Any, str]] = {
    "bdl_games_scraper": (
        f"ball-dont-lie/games/{DAY}/20261128_100000.json", games_file(), "bdl_games"),
    "bdl_player_box_scores_scraper": (
        f"ball-dont-lie/player-box-scores/{DAY}/20261128_100500.json", box_scores_file(),
        "bdl_player_box_scores"),
    "oddsa_player_props": (
        f"odds-api/player-props/{DAY}/20261128_180500.json", odds_file(),
        "oddsa_player_points_props"),
}
FLAKY = "player-box-scores"
"""The first read of this file fails (a storage blip): 503, so the emulator pushes again."""
REPLAYED = "bdl_games_scraper"


def wait_for(what: str, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``done`` every 50 ms; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# -- the service behind a real HTTP server -----------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One push as the server saw it: what came in, what it answered."""

    message_id: str
    attributes: dict[str, str]
    status: int
    outcome: str
    at: float = field(default_factory=time.monotonic)
    """When the answer was sent."""


@dataclass
class TakingTurns:
    """A WSGI app around the service: one request at a time, under ``turn``, recorded.

    ``app`` can be replaced while serving (a fresh instance with a cold ledger
    cache, as after a Cloud Run scale-out).
    """

    app: Flask
    turn: threading.Lock
    deliveries: list[Delivery] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = Request(environ).get_data()
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        statuses: list[str] = []

        def record_status(status: str, *args: Any) -> Any:
            statuses.append(status)
            return start_response(status, *args)

        with self.turn:
            chunks = list(self.app(environ, record_status))
        if environ.get("PATH_INFO") == "/process":
            message = json.loads(body).get("message", {}) if body else {}
            answer = json.loads(b"".join(chunks))
            with self._lock:
                self.deliveries.append(Delivery(
                    str(message.get("messageId")), dict(message.get("attributes") or {}),
                    int(statuses[0].split()[0]), str(answer.get("outcome"))))
        return chunks

    def seen(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)


@contextlib.contextmanager
def serving(app: TakingTurns) -> Iterator[str]:
    """``app`` on a werkzeug server on a free port; yields the ``/process`` URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="e2e-processors", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/process"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


class FailFirstRead:
    """Blobs whose first read of a path containing ``fragment`` fails transiently."""

    def __init__(self, inner: Blobs, fragment: str) -> None:
        self.inner, self.fragment, self.failed = inner, fragment, 0

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> str:
        return self.inner.write(path, data, content_type)

    def read(self, uri: str) -> bytes:
        if self.fragment in uri and not self.failed:
            self.failed += 1
            raise TransientError(f"injected: storage unavailable reading {uri}")
        return self.inner.read(uri)


class Recording:
    """A publisher that keeps what it sent, so the test can send it again."""

    def __init__(self, inner: PubSubPublisher) -> None:
        self.inner = inner
        self.sent: list[tuple[Message, PublishOutcome]] = []

    def publish(self, topic: str, messages: Sequence[Message]) -> list[PublishOutcome]:
        outcomes = self.inner.publish(topic, messages)
        self.sent += zip(messages, outcomes, strict=True)
        return outcomes

    def close(self) -> None:
        self.inner.close()


# -- the test ------------------------------------------------------------------------------


def scraper_log_row(execution_id: str, scraper_name: str, uri: str, records: int,
                    now: dt.datetime) -> dict[str, Any]:
    return {
        "execution_id": execution_id, "scraper_name": scraper_name,
        "workflow": "post_game_collection", "status": "success",
        "triggered_at": now - dt.timedelta(seconds=2), "completed_at": now,
        "duration_seconds": 2.0, "source": "SCHEDULER", "environment": "test",
        "triggered_by": "e2e", "gcs_path": uri, "retry_count": 0, "recovery": False,
        "run_id": execution_id, "opts": {"date": DAY},
        "data_summary": {"record_count": records, "is_empty_report": False,
                         "scraper_class": scraper_name},
    }


def test_log_rows_flow_to_nba_raw_and_phase2_exactly_once(
        bq_emulator: Any, pubsub_emulator: Any, tmp_path: Path) -> None:
    project = bq_emulator.project
    suffix = uuid.uuid4().hex[:10]
    dataset = f"e2e_{suffix}"
    settings = Settings(project=project,
                        bigquery_emulator=bq_emulator.rest_url.removeprefix("http://"),
                        bigquery_emulator_grpc=bq_emulator.grpc_endpoint,
                        pubsub_emulator=pubsub_emulator.host)
    wiring = Wiring.build(settings)
    client, appender = wiring.bigquery, wiring.appender
    turn = threading.Lock()

    def query(sql: str, **params: Any) -> list[dict[str, Any]]:
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(k, "DATE", v) for k, v in params.items()])
        with turn:
            return [dict(r.items()) for r in client.query(sql, job_config=config).result()]

    # BigQuery: every table of the pipeline, moved to this test's dataset.
    scrapers = Route("scrapers", SCRAPER_COMPLETE.table.with_location(dataset),
                     f"nba-scraper-complete-{suffix}", SCRAPER_COMPLETE.encoder,
                     SCRAPER_COMPLETE.columns)
    phase2 = Route("processors", PHASE2_COMPLETE.table.with_location(dataset),
                   f"nba-phase2-complete-{suffix}", PHASE2_COMPLETE.encoder,
                   PHASE2_COMPLETE.columns)
    journal, lease_table = OUTBOX_JOURNAL.with_location(dataset), OUTBOX_LEASE.with_location(
        dataset)
    ledger_spec = PROCESSED_EVENTS.with_location(dataset)
    quarantine_spec = PROCESSOR_QUARANTINE.with_location(dataset)
    ensure_tables(client, project, [
        scrapers.table, phase2.table, journal, lease_table, OUTBOX_RUNS.with_location(dataset),
        ledger_spec, quarantine_spec, *(t.in_dataset(dataset).spec for t in RAW_TABLES)])

    def store(route: Route) -> BigQueryOutboxStore:
        return BigQueryOutboxStore(client, appender, route.table, route.name, journal,
                                   columns=route.columns, reader=wiring.reader)

    publisher = Recording(PubSubPublisher(project))
    config = RelayConfig(batch_size=100, deadline=dt.timedelta(seconds=30))
    lease = BigQueryLease(client, project, lease_table)
    scraper_log = store(scrapers)
    scrapers_relay = Relay(scrapers, scraper_log, publisher, config, lease)
    phase2_relay = Relay(phase2, store(phase2), publisher, config, lease)

    # The processors service: real processors, ledger, quarantine, processor log.
    blobs = LocalBlobs(tmp_path / "nba-scraped-data")
    flaky = FailFirstRead(blobs, FLAKY)
    quarantine = BigQueryQuarantine(client, appender, project, quarantine_spec)
    processor_log = store(phase2)  # the service's log writer; the relay has its own
    processors: dict[str, Processor] = build_processors(BigQueryRawSink(client, project),
                                                        dataset=dataset)

    def instance() -> tuple[Flask, BigQueryLedger]:
        ledger = BigQueryLedger(client, appender, project, ledger_spec)
        return create_app(processors, Registry(), ledger, flaky, processor_log,
                          quarantine), ledger

    first_app, first_ledger = instance()
    server = TakingTurns(first_app, turn)

    # Pub/Sub: the platform's resources under unique names.
    subscriber = pubsub_v1.SubscriberClient()
    dlq = f"nba-scraper-complete-dlq-{suffix}"
    ensure_topics(project, [scrapers.topic, phase2.topic, dlq])

    def subscription(name: str, topic: str, **extra: Any) -> str:
        path = str(subscriber.subscription_path(project, f"{name}-{suffix}"))
        subscriber.create_subscription(request={
            "name": path, "topic": f"projects/{project}/topics/{topic}", **extra})
        return path

    def pull(path: str, want: int, timeout: float = 15.0) -> list[Any]:
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            try:
                response = subscriber.pull(
                    request={"subscription": path, "max_messages": 100}, timeout=1.0)
            except gexc.DeadlineExceeded:
                continue
            if received := list(response.received_messages):
                subscriber.acknowledge(request={"subscription": path,
                                                "ack_ids": [m.ack_id for m in received]})
                got += received
        return got

    dlq_sub = subscription("nba-scraper-complete-dlq-sub", dlq)
    phase2_sub = subscription("nba-analytics-sub", phase2.topic)
    with contextlib.closing(subscriber), serving(server) as endpoint, \
            contextlib.closing(publisher):
        subscription("nba-processors-sub", scrapers.topic, ack_deadline_seconds=60,
                     push_config={"push_endpoint": endpoint},
                     retry_policy={"minimum_backoff": {"seconds": 1},
                                   "maximum_backoff": {"seconds": 2}},
                     dead_letter_policy={"dead_letter_topic": f"projects/{project}/topics/{dlq}",
                                         "max_delivery_attempts": 5})

        # 1. Scrapers write their files and log rows (nothing else).
        now = dt.datetime.now(dt.UTC)
        ids = {name: uuid.uuid4().hex[:8] for name in FILES}
        processor_of = {ids[name]: proc for name, (_, _, proc) in FILES.items()}
        rows = []
        for name, (path, doc, _) in FILES.items():
            uri = blobs.write(path, json.dumps(doc).encode())
            records = len(doc) if isinstance(doc, list) else len(doc["data"])
            rows.append(scraper_log_row(ids[name], name, uri, records, now))
        with turn:
            scraper_log.append(rows)

        # 2. The relay publishes them.
        with turn:
            summary = scrapers_relay.run_once()
        assert (summary.published, summary.failed, summary.set_aside) == (3, 0, 0)

        # 3. The emulator pushes them to the service; the box-score push fails once (503)
        #    and comes back after the retry policy's backoff.
        def outcomes() -> list[tuple[int, str]]:
            return sorted((d.status, d.outcome) for d in server.seen())

        wait_for("3 processed pushes", lambda: outcomes().count((200, "processed")) == 3)
        assert outcomes() == [(200, "processed")] * 3 + [(503, "retry")]
        assert flaky.failed == 1
        nacked = next(d for d in server.seen() if d.status == 503)
        again = next(d for d in server.seen() if d.at > nacked.at
                     and d.attributes["execution_id"] == nacked.attributes["execution_id"])
        assert again.at - nacked.at >= 0.5, "redelivered after the retry policy's 1 s backoff"

        # 4. nba_raw rows are there, one ledger record per event.
        def raw_counts() -> dict[str, int]:
            out = {}
            for name, p in sorted(processors.items()):
                sql = (f"SELECT COUNT(*) AS n FROM `{project}.{p.table.dataset}.{p.table.name}` "
                       "WHERE game_date BETWEEN @lo AND @hi")
                out[name] = query(sql, lo=dt.date(2026, 1, 1), hi=dt.date(2027, 12, 31))[0]["n"]
            return out

        def ledger_keys() -> list[tuple[str, str, int]]:
            sql = (f"SELECT execution_id, processor, COUNT(*) AS n "
                   f"FROM `{project}.{dataset}.{ledger_spec.name}` "
                   "WHERE event_date BETWEEN @lo AND @hi GROUP BY execution_id, processor")
            lo, hi = now.date() - dt.timedelta(days=3), now.date() + dt.timedelta(days=3)
            return sorted((r["execution_id"], r["processor"], r["n"])
                          for r in query(sql, lo=lo, hi=hi))

        loaded = raw_counts()
        assert all(n > 0 for n in loaded.values()), loaded
        expected_keys = sorted((eid, proc, 1) for eid, proc in processor_of.items())
        assert ledger_keys() == expected_keys
        assert first_ledger.queries == 4, "one lookup per uncached delivery (the 503 one twice)"

        # 5. The processors relay publishes the processor log to nba-phase2-complete.
        with turn:
            summary = phase2_relay.run_once()
        assert (summary.published, summary.failed) == (3, 0)
        events = [json.loads(m.message.data) for m in pull(phase2_sub, 3)]
        assert sorted((e["source_execution_id"], e["processor_name"]) for e in events) == \
            sorted(processor_of.items())
        for e in events:
            assert e["success"] is True and e["status"] == "success", e
            assert e["game_date"] == DAY
            assert e["record_count"] == loaded[e["processor_name"]], e
            assert e["source_table"] == f"{dataset}.{processors[e['processor_name']].table.name}"
            assert e["correlation_id"] == e["source_execution_id"]
            assert e["trigger_source"] == "pubsub"

        # 6. Duplicates, into a fresh instance (cold cache: the ledger is asked in BigQuery):
        #    every event re-published as a relay that crashed before journaling would (same
        #    body, new message id), and one replayed on purpose (`outbox replay`).
        second_app, second_ledger = instance()
        server.app = second_app
        first_ids = {d.message_id for d in server.seen()}
        scraper_messages = [m for m, outcome in publisher.sent
                            if outcome.ok and m.key in processor_of]
        assert len(scraper_messages) == 3
        republished = publisher.inner.publish(scrapers.topic, scraper_messages)
        assert all(o.ok for o in republished)
        replay = Replayer(scrapers, BigQueryReplaySource(client, scrapers, project),
                          publisher.inner)
        window = ReplayQuery("scrapers", (now - dt.timedelta(days=1)).date(), now.date(),
                             names=(REPLAYED,))
        with turn:
            replayed = replay.run(Checkpoint.new(window), save=lambda _: None)
        assert (replayed.sent, replayed.failed) == (1, 0)

        def later() -> list[Delivery]:  # the deliveries of step 6
            return server.seen()[4:]

        wait_for("4 duplicate pushes", lambda: len(later()) >= 4)
        settled = len(server.seen())
        # Absence can only be waited for: a nacked duplicate would be back within the
        # retry policy's 1-2 s backoff, so give it that long to show up (it must not).
        time.sleep(2.0)
        assert len(server.seen()) == settled == 8
        dupes = later()
        assert [(d.status, d.outcome) for d in dupes] == [(200, "duplicate")] * 4
        assert not first_ids & {d.message_id for d in dupes}, "re-publishes get new ids"
        assert sorted(d.attributes.get("replay", "") for d in dupes) == ["", "", "", "true"]
        assert second_ledger.queries == 3, "one BigQuery lookup per event, then the cache"

        # Exactly one processing record per event, nba_raw and the processor log unchanged.
        assert ledger_keys() == expected_keys
        assert raw_counts() == loaded
        with turn:
            summary = phase2_relay.run_once()
        assert summary.published == 0, "no second processor run was logged"
        with turn:
            assert quarantine.list_quarantined(now - dt.timedelta(hours=1)) == []
        assert pull(dlq_sub, 1, timeout=2.0) == [], "nothing was dead-lettered"
