"""The processors service: Pub/Sub pushes every scraper event to ``POST /process``.

Pipeline per delivery: decode (:mod:`processors.envelope`) -> route
(:mod:`processors.registry`) -> dedupe (:mod:`processors.dedupe`) -> read the
blob -> process -> append the processor execution log row -> record the ledger.

Status codes, one policy (Pub/Sub acks 2xx and redelivers anything else):

==================================================  ====  ==============================
outcome                                             code  recorded
==================================================  ====  ==============================
processed (success or no_data)                      200   log row, then ledger entry
duplicate (ledger has execution_id + processor)     200   nothing
ignored: empty body or probe                        200   nothing
skipped: no gcs_path, failed scraper run, phase-2   200   nothing (INFO log with reason)
event, non-finalize notification, no processor
quarantined: malformed envelope, unknown shape,     200   quarantine row
wrong type, undecodable data
quarantined: missing file, unreadable path,         200   quarantine row, then a
invalid file (any PermanentError of the processor)        ``failed`` log row
transient: TransientError anywhere (blob store,     503   what was written before it
BigQuery, processor)
misconfiguration or a bug (ConfigError, crash)      500   nothing new; DLQ after 5
==================================================  ====  ==============================

Order of record-keeping, for crash safety: process -> log row -> ledger.

* Crash or failure before the log row: nothing says it was done, Pub/Sub
  redelivers, the processor runs again; safe, processors are idempotent.
* Log row written, ledger not: a redelivery processes again and logs a second
  row, so Phase 3 sees the completion twice; at least once, never lost.
* The other order (ledger before log row) would lose the Phase 2 event: after
  a failed log append the redelivery is a "duplicate" and no row is ever
  written. That is why the ledger comes last, and why a ledger append that
  fails after the log row is logged at ERROR and still acked: a 503 would
  only force the duplicate that acking avoids.

Production entry (no ``--preload``: gRPC clients must be built after the fork)::

    gunicorn --workers 1 --threads 8 --timeout 0 -b :$PORT 'processors.service:app_from_env()'
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import threading
import time
import types
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify, request

from outbox.blobs import BlobNotFound, Blobs
from outbox.clock import Clock, utcnow
from outbox.errors import ConfigError, PermanentError, TransientError
from outbox.http_json import json_http_errors
from outbox.oidc import AuthFailure, OidcVerifier
from outbox.ports import LogWriter
from processors.base import Event, InvalidFile, Processor, ProcessResult
from processors.dedupe import LedgerEntry, ProcessedLedger
from processors.envelope import Decoded, Probe, Rejected, decode_push, safe_text
from processors.quarantine import Quarantine, QuarantineRecord
from processors.registry import Registry

if TYPE_CHECKING:
    from outbox.wiring import Wiring

log = logging.getLogger("processors.service")
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Pub/Sub's 10 MB message limit, base64-encoded, plus the envelope."""
DEFAULT_STORAGE = "gs://nba-scraped-data"


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: str
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class Handler:
    """Everything ``/process`` does, without Flask; :meth:`respond` never raises."""

    def __init__(self, processors: Mapping[str, Processor], registry: Registry,
                 ledger: ProcessedLedger, blobs: Blobs, log_writer: LogWriter,
                 quarantine: Quarantine, clock: Clock = utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        registry.check({name: p.name for name, p in processors.items()})
        self.processors, self.registry, self.ledger = dict(processors), registry, ledger
        self.blobs, self.log_writer, self.quarantine = blobs, log_writer, quarantine
        self.clock, self.monotonic = clock, monotonic
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self.failing: dict[str, str | None] = {"ledger": None, "blobs": None,
                                               "log_writer": None, "quarantine": None}

    def respond(self, raw: bytes) -> Answer:
        t0 = self.monotonic()
        try:
            answer = self.handle(raw)
        except TransientError as exc:
            answer = Answer(503, "retry", type(exc).__name__, {"error": safe_text(str(exc), 500)})
        except Exception as exc:  # a bug or misconfiguration: not the input's fault
            log.error("process failed", exc_info=True)
            answer = Answer(500, "error", type(exc).__name__, {"error": safe_text(str(exc), 500)})
        with self._counts_lock:
            self.counts[answer.outcome] += 1
        level = {200: logging.INFO, 503: logging.WARNING}.get(answer.status, logging.ERROR)
        level = logging.WARNING if answer.outcome == "quarantined" else level
        log.log(level, f"process: {answer.outcome}", extra={"json_fields": {
            "outcome": answer.outcome, "reason": answer.reason, "http_status": answer.status,
            "duration_ms": round((self.monotonic() - t0) * 1000, 2), **answer.fields}})
        return answer

    def _dependency(self, name: str, call: Callable[[], Any]) -> Any:
        """Run ``call``, remembering whether ``name`` is failing (for /health)."""
        try:
            value = call()
        except TransientError as exc:
            self.failing[name] = safe_text(str(exc), 200)
            raise
        self.failing[name] = None
        return value

    def handle(self, raw: bytes) -> Answer:
        decoded = decode_push(raw, self.clock)
        if isinstance(decoded, Probe):
            return Answer(200, "ignored", decoded.reason)
        if isinstance(decoded, Rejected):
            d = decoded.delivery
            return self._quarantine(raw, decoded.reason, decoded.detail, {
                "execution_id": decoded.execution_id, "message_id": d.message_id,
                "delivery_attempt": d.delivery_attempt})
        event, ids = decoded.event, self._ids(decoded)
        if decoded.skip:
            return Answer(200, "skipped", decoded.skip, ids)
        match = self.registry.resolve(event)
        if match is None:
            return Answer(200, "skipped", "no_processor", ids)
        ids |= {"processor": match.processor, "routed_by": match.by}
        key = (event.execution_id, match.processor, decoded.event_time.date())
        if event.force:
            log.warning("force: dedupe bypassed", extra={"json_fields": ids})
        elif self._dependency("ledger", lambda: self.ledger.seen(*key)):
            return Answer(200, "duplicate", None, ids)
        return self._process(raw, decoded, self.processors[match.processor], ids)

    @staticmethod
    def _ids(decoded: Decoded) -> dict[str, Any]:
        e, d = decoded.event, decoded.delivery
        return {"execution_id": e.execution_id, "format": e.format, "gcs_path": e.gcs_path,
                "message_id": d.message_id, "delivery_attempt": d.delivery_attempt,
                "replay": e.replay, "force": e.force}

    def _process(self, raw: bytes, decoded: Decoded, processor: Processor,
                 ids: dict[str, Any]) -> Answer:
        event, started, t0 = decoded.event, self.clock(), self.monotonic()
        path = event.gcs_path or ""
        try:
            data: bytes = self._dependency("blobs", lambda: self.blobs.read(path))
        except PermanentError as exc:  # BlobNotFound, or a path this store cannot read
            reason = "blob_not_found" if isinstance(exc, BlobNotFound) else "unreadable_path"
            return self._failed(raw, reason, exc, event, processor, started, t0, ids)
        try:
            result = processor.process(event, data)
        except ConfigError:
            raise
        except PermanentError as exc:  # InvalidFile above all
            reason = "invalid_file" if isinstance(exc, InvalidFile) else "processor_refused"
            return self._failed(raw, reason, exc, event, processor, started, t0, ids)
        run_id = uuid.uuid4().hex
        row = self._log_row(run_id, event, processor, started, t0, result.status, result)
        self._dependency("log_writer", lambda: self.log_writer.append([row]))
        entry = LedgerEntry(event.execution_id, processor.name, decoded.event_time.date(),
                            self.clock(), run_id, result.status, row["trigger_source"],
                            decoded.delivery.message_id, event.gcs_path)
        ids |= {"run_id": run_id, "records": result.record_count, "status": result.status}
        try:
            self._dependency("ledger", lambda: self.ledger.record(entry))
        except (TransientError, PermanentError) as exc:
            log.error("processed and logged, but the ledger append failed; a redelivery "
                      "would process again", extra={"json_fields": {**ids, "error": str(exc)}})
        return Answer(200, "processed", None, ids)

    def _failed(self, raw: bytes, reason: str, exc: Exception, event: Event,
                processor: Processor, started: dt.datetime, t0: float,
                ids: dict[str, Any]) -> Answer:
        """Quarantine first, then the failed log row: if the second append fails, the
        retry duplicates a quarantine row, not a Phase 2 event."""
        answer = self._quarantine(raw, reason, str(exc), ids)
        row = self._log_row(uuid.uuid4().hex, event, processor, started, t0, "failed",
                            error=exc)
        self._dependency("log_writer", lambda: self.log_writer.append([row]))
        return answer

    def _quarantine(self, raw: bytes, reason: str, detail: str,
                    ids: Mapping[str, Any]) -> Answer:
        record = QuarantineRecord.of(
            reason, detail, raw, self.clock(), execution_id=ids.get("execution_id"),
            processor=ids.get("processor"), gcs_path=ids.get("gcs_path"),
            message_id=ids.get("message_id"), delivery_attempt=ids.get("delivery_attempt"))
        self._dependency("quarantine", lambda: self.quarantine.put(record))
        return Answer(200, "quarantined", reason, {**ids, "detail": record.detail})

    def _log_row(self, run_id: str, event: Event, processor: Processor, started: dt.datetime,
                 t0: float, status: str, result: ProcessResult | None = None,
                 error: Exception | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "execution_id": run_id, "processor_name": processor.name,
            "source_execution_id": event.execution_id,
            "correlation_id": event.correlation_id or event.execution_id,
            "status": status, "triggered_at": started, "completed_at": self.clock(),
            "duration_seconds": round(self.monotonic() - t0, 6),
            "trigger_source": "replay" if event.replay else "pubsub",
            "gcs_path": event.gcs_path,
            "output_dataset": result.output_dataset if result else processor.table.dataset,
            "output_table": result.output_table if result else processor.table.name,
            "game_date": result.game_date if result else None,
            "record_count": result.record_count if result else 0,
            "records_failed": result.records_failed if result else 0,
        }
        if error is not None:
            row["error_type"] = type(error).__name__
            row["error_message"] = safe_text(str(error), 1000)
        return row

    def health(self) -> dict[str, Any]:
        deps = {"ledger": self.ledger, "blobs": self.blobs, "log_writer": self.log_writer,
                "quarantine": self.quarantine}
        return {
            "status": "degraded" if any(self.failing.values()) else "ok",
            "processors": {n: f"{p.table.dataset}.{p.table.name}"
                           for n, p in sorted(self.processors.items())},
            "registry": self.registry.describe(),
            "dependencies": {n: {"backend": _describe(d), "failing": self.failing[n]}
                             for n, d in deps.items()},
            "counts": dict(self.counts),  # since this process started
        }


def _describe(dependency: Any) -> str:
    describe = getattr(dependency, "describe", None)
    if callable(describe):
        return str(describe())
    spec = getattr(dependency, "spec", None)
    if spec is not None:
        return f"{type(dependency).__name__}:{spec.dataset}.{spec.name}"
    return type(dependency).__name__


def create_app(processors: Mapping[str, Processor], registry: Registry,
               ledger: ProcessedLedger, blobs: Blobs, log_writer: LogWriter,
               quarantine: Quarantine, auth: OidcVerifier | None = None,
               clock: Clock = utcnow) -> Flask:
    """The Flask app; every dependency is injected (tests pass the in-memory doubles)."""
    handler = Handler(processors, registry, ledger, blobs, log_writer, quarantine, clock)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["processors.handler"] = handler

    @app.post("/process")
    def process() -> Any:
        if auth is not None:
            try:
                auth.verify(request.headers.get("Authorization"))
            except AuthFailure as exc:
                log.warning("push refused", extra={"json_fields": {
                    "reason": exc.reason, "http_status": exc.status}})
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
                return jsonify({"error": exc.reason}), exc.status, headers
        answer = handler.respond(request.get_data(cache=False))
        body = {"outcome": answer.outcome, "reason": answer.reason,
                **{k: answer.fields[k] for k in ("execution_id", "processor", "run_id")
                   if answer.fields.get(k) is not None}}
        return jsonify(body), answer.status

    @app.get("/health")
    def health() -> Any:
        return jsonify({**handler.health(), "auth": "oidc" if auth else "off"})

    json_http_errors(app)

    return app


def raw_processors() -> Callable[[Wiring], Mapping[str, Processor]]:
    """``processors.raw``'s processors on the BigQuery sink, imported only now.

    Returns a factory, so that a missing module is a ConfigError at boot,
    before any client is built.
    """
    raw = _module("processors.raw")
    build = getattr(raw, "build_processors", None)
    sink = getattr(_module("processors.raw.bigquery_sink"), "BigQueryRawSink", None)
    if not callable(build) or sink is None:
        raise ConfigError("processors.raw needs build_processors(sink) and "
                          "bigquery_sink.BigQueryRawSink")

    def factory(wiring: Wiring) -> Mapping[str, Processor]:
        built: Mapping[str, Processor] = build(sink(wiring.bigquery, wiring.settings.project))
        return built

    return factory


def _module(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise  # a dependency of processors.raw is missing: show the real error
        raise ConfigError(f"{name} is not installed: no processors to serve") from None


def app_from_env() -> Flask:
    """The production app from Cloud Run's environment.

    ``OUTBOX_PROJECT`` and the emulator hosts as for the relay
    (``outbox.wiring.Settings.from_env``); ``OUTBOX_STORAGE`` (``gs://bucket``
    or ``file:///dir``, default ``gs://nba-scraped-data``);
    ``PROCESSOR_PUSH_AUDIENCE`` and ``PROCESSOR_PUSH_INVOKER`` turn OIDC on.
    Configuration errors surface here, at boot.
    """
    from outbox import logs
    from outbox.blobs import blobs_for
    from outbox.routes import PHASE2_COMPLETE
    from outbox.wiring import Settings, Wiring
    from processors.dedupe import BigQueryLedger
    from processors.quarantine import BigQueryQuarantine

    logs.configure(os.environ.get("OUTBOX_LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    auth = OidcVerifier.from_env(audience_var="PROCESSOR_PUSH_AUDIENCE",
                                 invoker_var="PROCESSOR_PUSH_INVOKER")
    processors = raw_processors()
    blobs = blobs_for(os.environ.get("OUTBOX_STORAGE") or DEFAULT_STORAGE)
    wiring = Wiring.build(settings)
    return create_app(
        processors(wiring), Registry(),
        BigQueryLedger(wiring.bigquery, wiring.appender, settings.project), blobs,
        wiring.store(PHASE2_COMPLETE),
        BigQueryQuarantine(wiring.bigquery, wiring.appender, settings.project), auth)


if __name__ == "__main__":  # pragma: no cover - local runs only; production uses gunicorn
    app_from_env().run(host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), threaded=True)
