"""The scraper run lifecycle: validate, fetch, transform, export, log exactly one row.

A scraper writes its raw JSON through the :class:`~outbox.blobs.Blobs` port and
then appends one row through the :class:`~outbox.ports.LogWriter` port. It
never talks to Pub/Sub: the relay publishes the row (the transactional
outbox), so an event cannot be lost between "data written" and "event sent".

Every run that started ends with a row, whatever went wrong in fetch,
transform or export (``failed``, with the exception's class and message).
The only exception is the row itself not being writable; then the run raises
:class:`~scrapers.run_log.LogWriteFailed`, loudly, instead of vanishing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from outbox.blobs import Blobs
from outbox.clock import Clock, utcnow
from outbox.ports import LogWriter
from scrapers.http import HttpClient, RetryPolicy, UpstreamError
from scrapers.options import Option, scrub, validate_options, without_secrets
from scrapers.run_log import (
    Outcome,
    RunMeta,
    build_row,
    new_execution_id,
    retrying_transient,
    status_for,
    write_row,
)

log = logging.getLogger("scrapers.run")

API_KEY_OPTION = Option("api_key", "secret",
                        help="overrides the key from the environment; never logged")
DATE_OPTION = Option("date", "date", required=True, help="the NBA game date, YYYY-MM-DD")


class UnexpectedResponse(UpstreamError):
    """Valid JSON in a shape the scraper cannot read (a list where an object belongs)."""


class AllRecordsFailed(Exception):
    """Every record the scraper tried failed: nothing to call even ``partial``."""


@dataclass(frozen=True)
class ScraperDeps:
    """What a run is given; the doors (service, CLI, tests) build this once."""

    writer: LogWriter
    blobs: Blobs
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    """Base URLs and API keys are read from here, never from ``os.environ`` directly."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Clock = utcnow
    sleep: Callable[[float], None] = time.sleep
    triggered_by: str | None = None
    """The door's default for ``triggered_by`` when the caller gives none."""


@dataclass(frozen=True)
class RunReport:
    """The run's log row as written, and the short view of it the doors print."""

    row: Mapping[str, Any]

    @property
    def status(self) -> str:
        return str(self.row["status"])

    def summary(self) -> dict[str, Any]:
        row, data = self.row, self.row.get("data_summary") or {}
        return {
            "execution_id": row["execution_id"],
            "scraper_name": row["scraper_name"],
            "status": row["status"],
            "gcs_path": row.get("gcs_path"),
            "record_count": data.get("record_count", 0),
            "records_failed": data.get("scraper_stats", {}).get("records_failed", 0),
            "duration_seconds": row.get("duration_seconds"),
            "error_type": row.get("error_type"),
            "error_message": row.get("error_message"),
        }


class Scraper(ABC):
    """One scraper; an instance lives for one run.

    Subclasses declare ``name`` (the stable ``scraper_name``), ``prefix`` (the
    storage path prefix of docs/formats.md), ``options`` (their schema) and
    implement :meth:`fetch` and :meth:`count_records` (the transform step:
    the raw JSON is exported as it came, only counted and shape-checked). A record that cannot
    be fetched while others can is reported with :meth:`record_failure`,
    which makes the run ``partial``.
    """

    name: ClassVar[str]
    prefix: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    base_url_env: ClassVar[str]
    default_base_url: ClassVar[str]
    api_key_env: ClassVar[str]

    def __init__(self, deps: ScraperDeps, opts: Mapping[str, str]) -> None:
        self.deps = deps
        self.opts = dict(opts)
        self.stats: dict[str, Any] = {}
        self.failures: list[str] = []
        self.http = HttpClient(deps.retry, sleep=deps.sleep, secrets=self.secrets())

    @classmethod
    def run(cls, deps: ScraperDeps, raw_opts: Mapping[str, Any]) -> RunReport:
        """Validate ``raw_opts`` (raising :class:`~scrapers.options.InvalidOptions`
        before anything is written), run, and log the one row."""
        scraper = cls(deps, validate_options(cls.options, raw_opts))
        return scraper.execute()

    # -- what a scraper provides ----------------------------------------------
    @abstractmethod
    def fetch(self) -> Any:
        """The raw JSON to export, as the formats doc defines it for this scraper."""

    @abstractmethod
    def count_records(self, payload: Any) -> int:
        """Records in ``payload``; also checks its shape (:class:`UnexpectedResponse`)."""

    # -- helpers for scrapers ---------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.deps.env.get(self.base_url_env, self.default_base_url).rstrip("/")

    @property
    def api_key(self) -> str | None:
        return self.opts.get("api_key") or self.deps.env.get(self.api_key_env) or None

    def secrets(self) -> tuple[str, ...]:
        """Values to mask in any message this run writes."""
        return (self.api_key,) if self.api_key else ()

    def get_json(self, path: str, params: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None) -> Any:
        return self.http.get_json(f"{self.base_url}{path}", params, headers)

    def record_failure(self, what: str, error: Exception) -> None:
        self.failures.append(f"{what}: {type(error).__name__}: {error}")

    # -- the lifecycle ------------------------------------------------------------
    def execute(self) -> RunReport:
        meta = self._meta()
        try:
            outcome = self._scrape()
        except Exception as exc:  # any failure still leaves a `failed` row
            outcome = Outcome("failed", stats=self._stats(),
                              error_type=type(exc).__name__,
                              error_message=scrub(str(exc), self.secrets()) or repr(exc))
        finally:
            self.http.close()
        row = build_row(meta, outcome)
        write_row(self.deps.writer, row, self.deps.sleep)
        report = RunReport(row)
        level = logging.WARNING if outcome.status in ("failed", "partial") else logging.INFO
        log.log(level, "scraper run finished", extra={"json_fields": report.summary()})
        return report

    def _scrape(self) -> Outcome:
        payload = self.fetch()
        records = self.count_records(payload)
        if self.failures and records == 0:
            raise AllRecordsFailed(self._failure_text())
        uri = self.export(payload)
        return Outcome(
            status_for(records, len(self.failures)), records, uri, self.deps.clock(),
            self._stats(),
            error_type="RecordsFailed" if self.failures else None,
            error_message=self._failure_text() if self.failures else None,
        )

    def export(self, payload: Any) -> str:
        """Write ``payload`` at ``{prefix}/{date}/{YYYYMMDD_HHMMSS}.json``; its URI.

        ``date`` is the run's ``date`` option (every scraper here has one). The
        stamp has one-second resolution, as the platform's layout does: two runs
        of one scraper for one date in the same second share a path.
        """
        stamp = self.deps.clock().astimezone(dt.UTC).strftime("%Y%m%d_%H%M%S")
        path = f"{self.prefix}/{self.opts['date']}/{stamp}.json"
        data = json.dumps(payload, ensure_ascii=False).encode()
        uri: str = retrying_transient(self.deps.sleep)(self.deps.blobs.write, path, data)
        return uri

    def _failure_text(self) -> str:
        shown = "; ".join(self.failures[:5])
        more = f" (+{len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        return scrub(f"{len(self.failures)} record(s) failed: {shown}{more}", self.secrets())

    def _stats(self) -> dict[str, Any]:
        return {**self.stats, "records_failed": len(self.failures),
                "http_requests": self.http.requests, "http_retries": self.http.retries}

    def _meta(self) -> RunMeta:
        env, opts = self.deps.env, self.opts
        on_cloud_run = bool(env.get("K_SERVICE"))
        return RunMeta(
            execution_id=new_execution_id(),
            scraper_name=self.name,
            scraper_class=type(self).__name__,
            triggered_at=self.deps.clock(),
            source=opts.get("source") or ("CLOUD_RUN" if on_cloud_run else "LOCAL"),
            workflow=opts.get("workflow") or "MANUAL",
            environment=(opts.get("environment") or env.get("ENVIRONMENT")
                         or ("prod" if on_cloud_run else "local")),
            triggered_by=opts.get("triggered_by") or self.deps.triggered_by,
            opts=without_secrets(opts),
        )
