"""Prometheus metrics of relay runs, on a registry of their own.

Why a registry per :class:`RelayMetrics` and not the global one: a process
(or a test) can build several apps side by side without "Duplicated
timeseries" errors, and ``/metrics`` shows the relay's series only, not
whatever else happened to register globally.

Why these series: the backlog and the age of the oldest pending row are what
an on-call engineer alerts on (is the relay keeping up?); the counters and
histograms say how much it did and how fast; the BigQuery counters say what it
cost. Gauges about the backlog hold the value measured by the *first poll of
the last run that polled*: a measurement, not an estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from relay.cycle import RunSummary

SECONDS_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
)
"""From a fast publish (10 ms) to an event that waited an hour."""

STOPPED = ("drained", "deadline", "publisher_unavailable", "lease_held", "error")
POLLED = frozenset({"drained", "deadline", "publisher_unavailable"})
"""Runs that stopped for one of these reasons have polled at least once, so their backlog
is a measurement. A ``lease_held`` run (another relay holds the route) or an
``error`` run may not have polled: its zero backlog would be a lie."""


def stopped_label(stopped: str) -> str:
    """Fold ``RunSummary.stopped`` into a bounded label set.

    ``run_once`` reports ``"error: <message>"``; a message in a label would
    make the series' cardinality unbounded.
    """
    return stopped if stopped in STOPPED else "error"


def cost_counters(relay: object) -> tuple[int, int, int]:
    """(BigQuery jobs, bytes processed, read sessions) so far, where the store counts them.

    Duck-typed on purpose: the BigQuery store has ``stats`` and ``reader``,
    the in-memory double only ``jobs``, a fake in a test nothing. The caller
    takes the difference around a run.
    """
    store = getattr(relay, "store", None)
    stats = getattr(store, "stats", None)
    jobs = getattr(stats, "jobs", None) if stats is not None else getattr(store, "jobs", 0)
    processed = getattr(stats, "bytes_processed", 0)
    sessions = getattr(getattr(store, "reader", None), "sessions", 0)
    return (int(jobs or 0), int(processed or 0), int(sessions or 0))


class RelayMetrics:
    """The relay's series; :meth:`observe` is called once per route and run."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._now = wall_clock
        r, route = self.registry, ["route"]
        self.backlog = Gauge(
            "outbox_backlog_rows", "Rows pending at the start of the last run.", route,
            registry=r)
        self.oldest_age = Gauge(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest pending row at the start of the last run (0: none).", route,
            registry=r)
        self.published = Counter(
            "outbox_published", "Messages published.", route, registry=r)
        self.publish_failed = Counter(
            "outbox_publish_failed", "Messages that failed to publish (they stay pending).",
            route, registry=r)
        self.set_aside = Counter(
            "outbox_set_aside", "Rows set aside as poison.", route, registry=r)
        self.latency = Histogram(
            "outbox_publish_latency_seconds", "Time a publish call took, per message.", route,
            buckets=SECONDS_BUCKETS, registry=r)
        self.age_at_publish = Histogram(
            "outbox_event_age_at_publish_seconds",
            "From the row's triggered_at to its publish: the end-to-end delay.", route,
            buckets=SECONDS_BUCKETS, registry=r)
        self.bq_jobs = Counter(
            "outbox_bigquery_jobs", "BigQuery query and DML jobs run.", route, registry=r)
        self.bq_bytes = Counter(
            "outbox_bigquery_bytes_processed", "Bytes BigQuery jobs processed.", route,
            registry=r)
        self.read_sessions = Counter(
            "outbox_read_sessions", "BigQuery Storage Read sessions opened.", route, registry=r)
        self.last_duration = Gauge(
            "outbox_last_run_duration_seconds", "How long the last run took.", route, registry=r)
        self.last_timestamp = Gauge(
            "outbox_last_run_timestamp_seconds", "When the last run ended (Unix time).", route,
            registry=r)
        self.runs = Counter(
            "outbox_runs", "Relay runs, by why they stopped.", ["route", "stopped"], registry=r)

    def observe(self, summary: RunSummary, jobs_delta: int = 0, bytes_delta: int = 0,
                sessions_delta: int = 0) -> None:
        """Record one finished run; the deltas are what the run cost BigQuery."""
        route = summary.route
        if summary.stopped in POLLED:
            self.backlog.labels(route).set(summary.backlog)
            self.oldest_age.labels(route).set(summary.oldest_pending_age_seconds or 0.0)
        self.published.labels(route).inc(summary.published)
        self.publish_failed.labels(route).inc(summary.failed)
        self.set_aside.labels(route).inc(summary.set_aside)
        latency, age = self.latency.labels(route), self.age_at_publish.labels(route)
        for seconds in summary.publish_latencies:
            latency.observe(seconds)
        for seconds in summary.publish_ages:
            age.observe(max(seconds, 0.0))
        self._cost(route, jobs_delta, bytes_delta, sessions_delta)
        self._ended(route, summary.seconds, stopped_label(summary.stopped))

    def observe_error(self, route: str, seconds: float, jobs_delta: int = 0,
                      bytes_delta: int = 0, sessions_delta: int = 0) -> None:
        """Record a run that raised instead of returning a summary."""
        self._cost(route, jobs_delta, bytes_delta, sessions_delta)
        self._ended(route, seconds, "error")

    def _cost(self, route: str, jobs: int, bytes_: int, sessions: int) -> None:
        # Counters only go up; a store that was rebuilt could report a negative delta.
        self.bq_jobs.labels(route).inc(max(jobs, 0))
        self.bq_bytes.labels(route).inc(max(bytes_, 0))
        self.read_sessions.labels(route).inc(max(sessions, 0))

    def _ended(self, route: str, seconds: float, stopped: str) -> None:
        self.last_duration.labels(route).set(seconds)
        self.last_timestamp.labels(route).set(self._now())
        self.runs.labels(route, stopped).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, for ``/metrics``."""
        return generate_latest(self.registry)
