"""The loops of ``outbox dev`` and what they share: scrapers, relay, watcher, final drain.

Split from :mod:`outbox.devstack` (which starts the emulators, the fixture
server and the live view, and stops them) so that each reads on its own. Every
loop only bumps counters in one :class:`~outbox.devstack_view.DevState` under
a lock; every BigQuery call takes its turn under the emulator lock (see
:mod:`outbox.devstack_service`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1

from outbox.bigquery_sql import Param, Statement, table_ref
from outbox.blobs import LocalBlobs
from outbox.clock import utcnow
from outbox.devstack_service import LocalProcessorService, TurnTakingWriter
from outbox.devstack_view import DevState, RouteState
from outbox.errors import OutboxError
from outbox.routes import PHASE2_COMPLETE, SCRAPER_COMPLETE
from outbox.wiring import Wiring
from relay import Relay, RelayConfig, RunSummary
from scrapers.base import RunReport, ScraperDeps
from scrapers.fixture_server import Faults, Upstream, nba_today
from scrapers.http import RetryPolicy
from scrapers.registry import REGISTRY
from scrapers.run_log import LogWriteFailed

PROCESSORS_SUBSCRIPTION = "nba-processors-sub"
DLQ_TOPIC = f"{SCRAPER_COMPLETE.topic}-dlq"
DLQ_SUBSCRIPTION = f"{DLQ_TOPIC}-sub"
PHASE2_SUBSCRIPTION = f"{PHASE2_COMPLETE.topic}-dev"
MAX_DELIVERY_ATTEMPTS = 5
RETRY_BACKOFF_S = (1, 10)
"""Production (``outbox infra``) backs off 10 s to 10 min; here a retried push shows
within seconds."""
PUSH_ACK_DEADLINE_S = 60
"""A push may wait for its turn on the emulator behind a whole relay run."""
DRAIN_DEADLINE = dt.timedelta(seconds=60)
SETTLE_SECONDS = 20.0
"""How long the drain waits for the pushes of the last published events to be answered."""
RAW_COUNT_EVERY = 3.0
DEV_RETRIES = RetryPolicy(attempts=4, base_wait=0.2, max_wait=1.0, max_retry_after=1.0,
                          timeout=(2.0, 10.0))
"""The scrapers' HTTP retries, shortened so a 429 costs a second, not half a minute."""
DEV_FAULTS = Faults(malformed_every=97, rate_limited_every=23, server_error_every=17)
"""Prime periods, so the three rarely fall on one request: about one request in ten
fails, and one run in a few dozen fails outright (a malformed body is not retried)."""
DEV_KEYS = {"bdl": "dev-bdl-key", "odds": "dev-odds-key"}


@dataclasses.dataclass(frozen=True)
class DevOptions:
    """What ``outbox dev`` is asked to run; the CLI's options, one to one."""

    interval: float = 2.0
    """Seconds between relay runs (each runs both routes)."""
    scrape_interval: float = 5.0
    """Seconds between scraper cycles (each runs every registered scraper once)."""
    days: int = 3
    """A cycle scrapes today, the next one yesterday, ... back this many days, then again."""
    storage: Path = Path(".dev/storage")
    log_file: Path = Path(".dev/dev.log")
    duration: dt.timedelta | None = None
    seed: int = 0
    faults: Faults = DEV_FAULTS

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.scrape_interval <= 0 or self.days < 1:
            raise ValueError("intervals must be positive and days at least 1")


def raw_count_statement(project: str, since: dt.date) -> Statement:
    """One query counting every ``nba_raw`` table's rows from ``since`` on.

    Filtered on the partition column (the tables require it) and run every few
    seconds: a UNION ALL of ``COUNT(*)``, one job, the minimum bill.
    """
    from processors.raw import RAW_TABLES

    selects = [f"SELECT '{t.spec.dataset}.{t.spec.name}' AS name, COUNT(*) AS n "
               f"FROM {table_ref(project, t.spec)} WHERE {t.spec.partition_column} >= @since"
               for t in RAW_TABLES]
    return Statement("\nUNION ALL\n".join(selects), (Param("since", "DATE", since),))


class DevRun:
    """The loops (scrapers, relay, watcher), what they share, and the final drain."""

    def __init__(self, wiring: Wiring, options: DevOptions, blobs: LocalBlobs,
                 upstream: Upstream, session: str) -> None:
        self.wiring, self.options, self.session = wiring, options, session
        self.emulator_lock = threading.RLock()
        self.lock = threading.Lock()
        self.state = DevState(session=session, upstream=upstream.url,
                              storage=blobs.root.as_uri(), log_file=str(options.log_file),
                              phase2_subscription=PHASE2_SUBSCRIPTION)
        self.publisher = wiring.publisher()
        config = RelayConfig(deadline=dt.timedelta(seconds=max(options.interval, 5.0)))
        self.relays = {r.name: Relay(r, wiring.store(r), self.publisher, config)
                       for r in (SCRAPER_COMPLETE, PHASE2_COMPLETE)}
        self.state.routes = {r.name: RouteState(r.topic) for r in (SCRAPER_COMPLETE,
                                                                   PHASE2_COMPLETE)}
        env = {"BDL_BASE_URL": upstream.url, "ODDS_API_BASE_URL": upstream.url,
               "BDL_API_KEY": DEV_KEYS["bdl"], "ODDS_API_KEY": DEV_KEYS["odds"]}
        writer = TurnTakingWriter(wiring.store(SCRAPER_COMPLETE), self.emulator_lock,
                                  self._wrote(SCRAPER_COMPLETE.name))
        self.scraper_deps = ScraperDeps(writer, blobs, env=env, retry=DEV_RETRIES,
                                        triggered_by=f"outbox dev {session}")
        self.service = LocalProcessorService(
            wiring, blobs, TurnTakingWriter(wiring.store(PHASE2_COMPLETE), self.emulator_lock,
                                            self._wrote(PHASE2_COMPLETE.name)),
            self.emulator_lock, self._answered)
        self.state.service = self.service.url
        self.subscriber = pubsub_v1.SubscriberClient()
        project = wiring.settings.project
        self.phase2_path = self.subscriber.subscription_path(project, PHASE2_SUBSCRIPTION)
        self.dlq_path = self.subscriber.subscription_path(project, DLQ_SUBSCRIPTION)
        self.stop = threading.Event()
        self.fatal: BaseException | None = None
        self.started = time.monotonic()

    # -- shared state -------------------------------------------------------------
    def snapshot(self) -> DevState:
        with self.lock:
            copy = dataclasses.replace(
                self.state, elapsed=time.monotonic() - self.started,
                scraper_runs=dict(self.state.scraper_runs),
                deliveries=dict(self.state.deliveries), raw_rows=dict(self.state.raw_rows),
                routes={k: dataclasses.replace(v) for k, v in self.state.routes.items()})
        return copy

    def _wrote(self, route: str) -> Callable[[int], None]:
        def note(rows: int) -> None:
            with self.lock:
                self.state.routes[route].written += rows
        return note

    def _answered(self, outcome: str) -> None:
        with self.lock:
            self.state.deliveries[outcome] = self.state.deliveries.get(outcome, 0) + 1

    def _note_error(self, exc: BaseException) -> None:
        with self.lock:
            self.state.errors += 1
            self.state.last_error = f"{type(exc).__name__}: {exc}"[:160]

    def _guarded(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:  # re-raised by run_dev on the main thread
                self.fatal = exc
                self.stop.set()
        return run

    # -- pub/sub ----------------------------------------------------------------------
    def subscribe(self) -> None:
        """The DLQ's pull subscription (kept), then fresh push and phase-2 subscriptions:
        recreated, so that a reused emulator pushes to this session's port and the
        phase-2 count starts at zero."""
        project = self.wiring.settings.project
        topic = f"projects/{project}/topics/"
        with contextlib.suppress(gexc.AlreadyExists):
            self.subscriber.create_subscription(request={
                "name": self.dlq_path, "topic": topic + DLQ_TOPIC})
        push_path = self.subscriber.subscription_path(project, PROCESSORS_SUBSCRIPTION)
        self.unsubscribe()
        self.subscriber.create_subscription(request={
            "name": push_path, "topic": topic + SCRAPER_COMPLETE.topic,
            "push_config": {"push_endpoint": self.service.url},
            "ack_deadline_seconds": PUSH_ACK_DEADLINE_S,
            "retry_policy": {"minimum_backoff": {"seconds": RETRY_BACKOFF_S[0]},
                             "maximum_backoff": {"seconds": RETRY_BACKOFF_S[1]}},
            "dead_letter_policy": {"dead_letter_topic": topic + DLQ_TOPIC,
                                   "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS}})
        self.subscriber.create_subscription(request={
            "name": self.phase2_path, "topic": topic + PHASE2_COMPLETE.topic})

    def unsubscribe(self) -> None:
        """Delete the push subscription first, so nothing pushes to a closed port."""
        project = self.wiring.settings.project
        for path in (self.subscriber.subscription_path(project, PROCESSORS_SUBSCRIPTION),
                     self.phase2_path):
            with contextlib.suppress(gexc.NotFound):
                self.subscriber.delete_subscription(request={"subscription": path})

    def _pull(self, path: str, timeout: float) -> int:
        try:
            response = self.subscriber.pull(
                request={"subscription": path, "max_messages": 1000}, timeout=timeout)
        except gexc.DeadlineExceeded:
            return 0
        if ack_ids := [m.ack_id for m in response.received_messages]:
            self.subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
        with self.lock:
            if path == self.phase2_path:
                self.state.phase2_received += len(ack_ids)
            else:
                self.state.dead_lettered += len(ack_ids)
        return len(ack_ids)

    # -- the loops ----------------------------------------------------------------------
    def _scrape_loop(self) -> None:
        """Every scraper once per cycle, for a date that steps back a day each cycle:
        today alone would show only what a morning looks like (no box scores yet),
        the days before show finished games, and an off day shows ``no_data``."""
        cycle = 0
        while not self.stop.is_set():
            began = time.monotonic()
            day = nba_today(utcnow()) - dt.timedelta(days=cycle % self.options.days)
            for name in REGISTRY.names:
                if self.stop.is_set():
                    break
                try:
                    report = REGISTRY.run(name, self.scraper_deps,
                                          {"date": day.isoformat(), "workflow": "outbox-dev"})
                except LogWriteFailed as exc:
                    self._note_error(exc)
                    continue
                self._record_scrape(report)
            cycle += 1
            with self.lock:
                self.state.scrape_cycles, self.state.last_scrape_date = cycle, day.isoformat()
            self.stop.wait(max(0.0, self.options.scrape_interval - (time.monotonic() - began)))

    def _record_scrape(self, report: RunReport) -> None:
        stats = (report.row.get("data_summary") or {}).get("scraper_stats") or {}
        with self.lock:
            runs = self.state.scraper_runs
            runs[report.status] = runs.get(report.status, 0) + 1
            self.state.upstream_requests += int(stats.get("http_requests", 0))
            self.state.upstream_retries += int(stats.get("http_retries", 0))

    def _relay(self, name: str, deadline: dt.timedelta | None = None) -> RunSummary:
        with self.emulator_lock:
            summary = self.relays[name].run_once(deadline)
        with self.lock:
            route = self.state.routes[name]
            route.runs += 1
            route.published += summary.published
            route.pending, route.oldest_pending_age = (summary.backlog,
                                                       summary.oldest_pending_age_seconds)
            route.last_stopped = summary.stopped
        return summary

    def _relay_loop(self) -> None:
        """A plain loop, not a scheduler: one run at a time by construction (so no lease
        is needed), and the final drain can only start after it has stopped."""
        while not self.stop.is_set():
            began = time.monotonic()
            for name in self.relays:
                self._relay(name)
            self.stop.wait(max(0.0, self.options.interval - (time.monotonic() - began)))

    def count_raw_rows(self) -> None:
        from processors.dedupe import run_query

        since = nba_today(utcnow()) - dt.timedelta(days=self.options.days + 1)
        stmt = raw_count_statement(self.wiring.settings.project, since)
        with self.emulator_lock:
            rows = run_query(self.wiring.bigquery, stmt, "count nba_raw rows")
        with self.lock:
            self.state.raw_rows = {str(r["name"]): int(r["n"]) for r in rows}

    def _watch_loop(self) -> None:
        """Phase-2 events and dead letters as they arrive; nba_raw counts now and then."""
        next_count = 0.0
        while not self.stop.is_set():
            try:
                got = self._pull(self.phase2_path, 1.0) + self._pull(self.dlq_path, 1.0)
                if time.monotonic() >= next_count:
                    self.count_raw_rows()
                    next_count = time.monotonic() + RAW_COUNT_EVERY
            except (gexc.GoogleAPICallError, OutboxError) as exc:
                self._note_error(exc)
                got = 0
            if not got:
                self.stop.wait(0.3)

    def start(self) -> list[threading.Thread]:
        with self.lock:
            self.started, self.state.phase = time.monotonic(), "running"
        loops = {"scrapers": self._scrape_loop, "relay": self._relay_loop,
                 "watcher": self._watch_loop}
        threads = [threading.Thread(target=self._guarded(loop), name=f"dev-{name}", daemon=True)
                   for name, loop in loops.items()]
        for thread in threads:
            thread.start()
        return threads

    def drain(self) -> None:
        """Relay the scrapers' rows, wait for their pushes to be answered, relay the
        processors' rows, then count what is left and wait for the phase-2 events."""
        with self.lock:
            self.state.phase = "draining"
        self._relay(SCRAPER_COMPLETE.name, DRAIN_DEADLINE)
        give_up = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < give_up:  # a 503 is worth waiting for; a 500 will not heal
            s = self.snapshot()
            answered = s.delivered + s.deliveries.get("500", 0)
            if answered >= s.routes[SCRAPER_COMPLETE.name].published and not self.service.busy:
                break
            time.sleep(0.2)
        self._relay(PHASE2_COMPLETE.name, DRAIN_DEADLINE)
        for name, relay in self.relays.items():
            with self.emulator_lock:
                left = relay.store.poll(utcnow() - relay.config.lookback, 1)
            with self.lock:
                route = self.state.routes[name]
                route.pending = left.backlog
                route.oldest_pending_age = None if left.oldest is None else (
                    utcnow() - left.oldest).total_seconds()
        give_up = time.monotonic() + 10.0
        while time.monotonic() < give_up:
            s = self.snapshot()
            if s.phase2_received >= s.routes[PHASE2_COMPLETE.name].published:
                break
            self._pull(self.phase2_path, 2.0)
        self._pull(self.dlq_path, 1.0)
        self.count_raw_rows()
        with self.lock:
            self.state.phase = "stopped"

    def close(self) -> None:
        self.publisher.close()
        self.subscriber.close()
