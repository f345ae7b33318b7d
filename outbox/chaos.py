"""``outbox chaos``: break the running pipeline on purpose, then prove nothing was lost.

The three services run under gunicorn against the emulators
(:mod:`outbox.chaos_stack`). While a load driver scrapes (``POST /scrape``),
triggers the relay every half second (``POST /relay/run``, as Cloud Scheduler
would) and Pub/Sub pushes to ``/process``, every round injects one fault at a
random moment: ``kill -9`` of the relay, the processors or the scrapers
(restarted after a random outage), or a stop and restart of the Pub/Sub
emulator. Faults come in shuffled blocks of four, so every kind is hit once in
any four rounds; everything random follows from ``--seed``, and ``--round N``
replays round N's fault at the same moment.

At the end the scrapes stop, the relay drains, and the loss audit
(:mod:`outbox.audit`) must find every log row of both routes published and
every scraper event processed. Duplicates are counted on tap subscriptions
(every message on both topics) and must stay within the relay's bound: two
batches per crash, the batch being published and the one being journaled.

The Pub/Sub emulator keeps messages in memory, so a restart drops those it had
accepted but not yet delivered. Real Pub/Sub keeps a message once ``publish``
returned, so this loss belongs to the emulator. It is handled as an operator
would after an outage: events journaled as published since the previous restart
(so, to the instance that died) and absent from the processors' ledger are
re-sent through the replay door (:mod:`outbox.replay`), and reported in their
own column, never as lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from outbox.audit import AuditReport, BigQueryAuditSource, Window, run_audit
from outbox.bigquery_sql import Param, Statement, table_ref
from outbox.chaos_load import Load
from outbox.chaos_stack import CHAOS_PROJECT, ChaosStack
from outbox.clock import utcnow
from outbox.ports import Cursor, PendingRow
from outbox.pubsub_publisher import PubSubPublisher
from outbox.replay import Checkpoint, Replayer, ReplayQuery, ReplaySource
from outbox.replay_bigquery import BigQueryReplaySource
from outbox.routes import PHASE2_COMPLETE, SCRAPER_COMPLETE
from outbox.schema import OUTBOX_JOURNAL
from processors.dedupe import PROCESSED_EVENTS, run_query

log = logging.getLogger("outbox.chaos")

FAULTS = ("kill relay", "kill processors", "kill scrapers", "restart pubsub")
PROCESSORS_SETTLE = 3.0
"""Seconds after a broker restart for the processors to finish what they already hold."""


@dataclass(frozen=True)
class Plan:
    number: int
    fault: str
    at: float
    """Seconds into the round when the fault strikes."""
    down: float
    """Seconds the victim stays down before it is started again."""


def plan(seed: int, number: int, round_seconds: float) -> Plan:
    """Round ``number``'s fault, from ``seed`` alone, so any round can be replayed."""
    block = list(FAULTS)
    random.Random(f"{seed}:block:{(number - 1) // len(FAULTS)}").shuffle(block)
    rng = random.Random(f"{seed}:round:{number}")
    return Plan(number, block[(number - 1) % len(FAULTS)],
                round(rng.uniform(0.5, round_seconds * 0.6), 2), round(rng.uniform(0.2, 2.0), 2))


@dataclass
class RoundResult:
    plan: Plan
    started: dt.datetime
    ended: dt.datetime | None = None
    back_after: float = 0.0
    """Seconds from the fault until the victim answered again."""
    written: int = 0
    duplicates: int = 0
    replayed: int = 0
    lost: int = 0


@dataclass
class ChaosResult:
    seed: int
    rounds: list[RoundResult]
    relay_batch: int
    events: dict[str, int] = field(default_factory=dict)
    """Log rows per route."""
    processed: int = 0
    expected: int = 0
    duplicates: int = 0
    replayed: int = 0
    reprocessed: int = 0
    """(event, processor) pairs recorded more than once: idempotent work repeated."""
    lost: list[str] = field(default_factory=list)
    lost_why: list[str] = field(default_factory=list)
    """The audit's finding for each lost event: route, step, reason."""
    scrapes: dict[str, int] = field(default_factory=dict)
    """Answers to the load's scrape requests, by status ("refused": service down)."""
    relay_runs: dict[str, int] = field(default_factory=dict)
    """Relay runs by how they stopped (or "refused" / "http N" when the trigger failed)."""
    settle_seconds: float = 0.0

    @property
    def crashes(self) -> int:
        """Faults that can make the relay re-send: its own death, or the broker's."""
        return sum(r.plan.fault in ("kill relay", "restart pubsub") for r in self.rounds)

    @property
    def duplicate_bound(self) -> int:
        return 2 * self.relay_batch * self.crashes

    @property
    def worst_crash(self) -> int:
        """The most duplicates any one crash caused."""
        return max((r.duplicates for r in self.rounds), default=0)

    @property
    def ok(self) -> bool:
        return not self.lost and self.duplicates <= self.duplicate_bound

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(crashes=self.crashes, duplicate_bound=self.duplicate_bound,
                    worst_crash=self.worst_crash, ok=self.ok)
        return data


# -- queries -------------------------------------------------------------------------------

def published_between(project: str, lo: dt.datetime, hi: dt.datetime) -> Statement:
    """Scraper events the relay journaled as published in [lo, hi]."""
    part = OUTBOX_JOURNAL.partition_column
    return Statement(f"""SELECT DISTINCT id AS execution_id
FROM {table_ref(project, OUTBOX_JOURNAL)}, UNNEST(execution_ids) AS id
WHERE {part} >= @since AND route = @route AND outcome = 'published'
  AND recorded_at BETWEEN @lo AND @hi""", (
        Param("since", "TIMESTAMP", lo - dt.timedelta(days=3)),
        Param("route", "STRING", SCRAPER_COMPLETE.name),
        Param("lo", "TIMESTAMP", lo), Param("hi", "TIMESTAMP", hi)))


def ledger_records(project: str, window: Window) -> Statement:
    """How often each (event, processor) was recorded as processed."""
    part = PROCESSED_EVENTS.partition_column
    return Statement(f"""SELECT execution_id, processor, COUNT(*) AS records
FROM {table_ref(project, PROCESSED_EVENTS)}
WHERE {part} BETWEEN @lo AND @hi
GROUP BY execution_id, processor""", (
        Param("lo", "DATE", window.since - dt.timedelta(days=3)),
        Param("hi", "DATE", window.until + dt.timedelta(days=3))))


class OnlyThese:
    """A :class:`ReplaySource` narrowed to some execution ids: re-send exactly what a
    broker restart dropped, not the whole window."""

    def __init__(self, inner: ReplaySource, ids: set[str]) -> None:
        self.inner, self.ids = inner, ids

    def count(self, query: ReplayQuery, after: Cursor | None = None) -> int:
        return sum(1 for _ in self.rows(query, after))

    def estimate_bytes(self, query: ReplayQuery) -> int | None:
        return self.inner.estimate_bytes(query)

    def rows(self, query: ReplayQuery, after: Cursor | None = None) -> Iterator[PendingRow]:
        return (r for r in self.inner.rows(query, after) if r.execution_id in self.ids)


# -- the run ---------------------------------------------------------------------------------

class ChaosRun:
    def __init__(self, stack: ChaosStack, seed: int, round_seconds: float = 6.0,
                 scrape_every: float = 1.0) -> None:
        assert stack.wiring is not None
        self.stack, self.seed, self.round_seconds = stack, seed, round_seconds
        self.client = stack.wiring.bigquery
        self.load = Load(stack, seed, scrape_every)
        self.replayed = 0
        self.broker_since = utcnow()
        """Start of the current Pub/Sub emulator instance's journal entries."""

    def window(self) -> Window:
        today = utcnow().date()
        return Window(today - dt.timedelta(days=1), today)

    def play(self, p: Plan) -> RoundResult:
        result = RoundResult(p, utcnow())
        t0 = time.monotonic()
        time.sleep(p.at)
        struck = time.monotonic()
        if p.fault == "restart pubsub":
            result.replayed = self._broker_outage(p.down)
        else:
            service = self.stack.services[p.fault.removeprefix("kill ")]
            service.kill()
            time.sleep(p.down)
            service.start()
            service.wait_healthy()
        result.back_after = round(time.monotonic() - struck, 2)
        time.sleep(max(0.0, t0 + self.round_seconds - time.monotonic()))
        result.ended = utcnow()
        log.info("chaos round done", extra={"json_fields": asdict(p)})
        return result

    def _broker_outage(self, down: float) -> int:
        self.stack.kill_pubsub()
        time.sleep(down)
        self.stack.start_pubsub()
        time.sleep(PROCESSORS_SETTLE)
        # Everything journaled since the last restart went to the instance just killed
        # (or, in the last seconds, to the new one: re-sending those costs a duplicate).
        lo, self.broker_since = self.broker_since, utcnow()
        return self._resend_dropped(lo, self.broker_since)

    def _resend_dropped(self, lo: dt.datetime, hi: dt.datetime) -> int:
        """Re-send events journaled as published in [lo, hi] that no processor recorded."""
        window = self.window()
        sent = run_query(self.client, published_between(CHAOS_PROJECT, lo, hi),
                         "reading what the dead broker held")
        done = run_query(self.client, ledger_records(CHAOS_PROJECT, window), "reading the ledger")
        dropped = {r["execution_id"] for r in sent} - {r["execution_id"] for r in done}
        if not dropped:
            return 0
        query = ReplayQuery(SCRAPER_COMPLETE.name, window.since, window.until)
        source = OnlyThese(BigQueryReplaySource(self.client, SCRAPER_COMPLETE, CHAOS_PROJECT),
                           dropped)
        publisher = PubSubPublisher(CHAOS_PROJECT)
        try:
            summary = Replayer(SCRAPER_COMPLETE, source, publisher).run(
                Checkpoint.new(query), save=lambda c: None)
        finally:
            publisher.close()
        self.replayed += summary.sent
        return summary.sent

    def audit(self) -> AuditReport:
        source = BigQueryAuditSource(self.client, CHAOS_PROJECT)
        return run_audit(source, [SCRAPER_COMPLETE, PHASE2_COMPLETE], self.window(), utcnow(),
                         grace=dt.timedelta(0))

    def settle(self, stall: float) -> AuditReport:
        """Stop scraping; keep relaying until the audit finds nothing missing, or until
        ``stall`` seconds pass with nothing more published or processed. A backlog of
        pushes on the emulator can take minutes; no progress at all means a loss."""
        self.load.stop_scrapes.set()
        best, since = None, time.monotonic()
        while True:
            report = self.audit()
            missing = len(report.missing)
            if not missing:
                return report
            if best is None or missing < best:
                best, since = missing, time.monotonic()
            elif time.monotonic() - since > stall:
                return report
            time.sleep(2.0)


def run_chaos(stack: ChaosStack, seed: int, rounds: Sequence[int], round_seconds: float = 6.0,
              scrape_every: float = 1.0, settle_stall: float = 90.0,
              on_round: Any = lambda r: None) -> ChaosResult:
    """Play ``rounds`` (1-based numbers) on a running stack; audit; count."""
    run = ChaosRun(stack, seed, round_seconds, scrape_every)
    results: list[RoundResult] = []
    run.load.start()
    try:
        for number in rounds:
            results.append(run.play(plan(seed, number, round_seconds)))
            on_round(results[-1])
        t0 = time.monotonic()
        report = run.settle(settle_stall)
        settle_seconds = time.monotonic() - t0
    finally:
        run.load.stop()
    return _tally(run, results, report, settle_seconds)


def _tally(run: ChaosRun, results: list[RoundResult], report: AuditReport,
           settle_seconds: float) -> ChaosResult:
    source = BigQueryAuditSource(run.client, CHAOS_PROJECT)
    window = run.window()
    born = {route.name: {e.execution_id: e.triggered_at for e in source.events(route, window)}
            for route in (SCRAPER_COMPLETE, PHASE2_COMPLETE)}
    records = run_query(run.client, ledger_records(CHAOS_PROJECT, window), "reading the ledger")
    lost_ids = {f.execution_id for f in report.missing}
    lost = sorted(lost_ids)
    why = [f"{f.execution_id} {f.route} {f.step}: {f.reason}" for f in report.missing]
    out = ChaosResult(run.seed, results, run.stack.relay_batch, lost=lost, lost_why=why,
                      scrapes=dict(run.load.scrapes), relay_runs=dict(run.load.relay_runs),
                      settle_seconds=round(settle_seconds, 1), replayed=run.replayed)
    for day in report.days:
        out.events[day.route] = out.events.get(day.route, 0) + day.logged
        out.processed += day.processed or 0
        out.expected += day.expected or 0
    out.reprocessed = sum(r["records"] > 1 for r in records)
    out.duplicates = sum(n - 1 for copies in run.load.copies.values()
                         for n in copies.values() if n > 1)
    for r in results:
        end = r.ended or utcnow()
        scraped = [k for k, t in born[SCRAPER_COMPLETE.name].items() if r.started <= t < end]
        r.written = len(scraped)
        r.lost = sum(k in lost_ids for events in born.values()
                     for k, t in events.items() if r.started <= t < end)
    # An extra copy is blamed on the last crash before it arrived: a killed relay's
    # batch is re-sent only once its lease has expired, often in the next round.
    crashes = [r for r in results if r.plan.fault in ("kill relay", "restart pubsub")]
    for seen in run.load.dupes_at:
        blamed = [r for r in crashes if r.started <= seen] or [
            r for r in results if r.started <= seen] or results[:1]
        if blamed:
            blamed[-1].duplicates += 1
    return out
