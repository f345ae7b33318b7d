"""The pieces ``outbox dev`` runs in-process: the processor service and turn-taking writers.

Why turn-taking: bqemulator shares one DuckDB connection between its gRPC
write path and its query/read path, and an append that lands while a Storage
Read session or a query runs can deadlock it (seen in ``outbox dev``). Real
BigQuery has no such limit. So in the dev stack every BigQuery call (scraper
appends, relay runs, a whole ``/process`` request, the row counts) holds one
re-entrant lock: they take turns, and nothing else changes. Re-entrant
because the processors' log append happens inside a request that already
holds it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from werkzeug.serving import BaseWSGIServer, make_server

from outbox.blobs import Blobs
from outbox.ports import LogWriter
from outbox.schema import TableSpec

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from outbox.wiring import Wiring

Lock = AbstractContextManager[Any]
"""The emulator lock (a ``threading.RLock``), typed by what is done with it."""


class TurnTakingWriter:
    """A :class:`~outbox.ports.LogWriter` that appends under the emulator lock and
    reports how many rows landed (the view's "log rows written")."""

    def __init__(self, inner: LogWriter, lock: Lock, on_rows: Callable[[int], None]) -> None:
        self.inner, self.lock, self.on_rows = inner, lock, on_rows
        self.spec: TableSpec = inner.spec

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self.lock:
            self.inner.append(rows)
        self.on_rows(len(rows))


def outcome_of(status: int, body: Any) -> str:
    """How the view counts a /process answer: ``503`` (Pub/Sub retries), ``500`` for any
    other 5xx, else the service's own ``outcome`` (processed, duplicate, skipped, ...)."""
    if status == 503:
        return "503"
    if status >= 500:
        return "500"
    outcome = body.get("outcome") if isinstance(body, dict) else None
    return str(outcome) if outcome else str(status)


class LocalProcessorService:
    """The processors service on a free port of 127.0.0.1, in a server thread.

    Wired as :func:`processors.service.app_from_env` wires it (the raw
    processors on the BigQuery sink, the BigQuery ledger and quarantine), but
    with the dev stack's blob root, the emulators, no OIDC (the emulator's
    push sends no token) and ``log_writer`` counting the phase-2 rows. Each
    request holds ``lock`` from start to end; ``on_answer`` gets each outcome.
    """

    def __init__(self, wiring: Wiring, blobs: Blobs, log_writer: LogWriter, lock: Lock,
                 on_answer: Callable[[str], None]) -> None:
        from processors.dedupe import BigQueryLedger
        from processors.quarantine import BigQueryQuarantine
        from processors.registry import Registry
        from processors.service import create_app, raw_processors

        project = wiring.settings.project
        self.app: Flask = create_app(
            raw_processors()(wiring), Registry(),
            BigQueryLedger(wiring.bigquery, wiring.appender, project), blobs, log_writer,
            BigQueryQuarantine(wiring.bigquery, wiring.appender, project))
        self.lock = lock
        self._busy = 0
        self._busy_lock = threading.Lock()

        @self.app.after_request
        def count(response: Response) -> Response:
            if response.status_code != 404:
                on_answer(outcome_of(response.status_code, response.get_json(silent=True)))
            return response

        self.app.wsgi_app = self._taking_turns(self.app.wsgi_app)  # type: ignore[method-assign,assignment]
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/process"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={
            "poll_interval": 0.1}, name="dev-processors", daemon=True)
        self.thread.start()

    def _taking_turns(self, inner: WSGIApplication) -> WSGIApplication:
        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            with self._busy_lock:
                self._busy += 1
            try:
                with self.lock:
                    return list(inner(environ, start_response))  # the body is small JSON
            finally:
                with self._busy_lock:
                    self._busy -= 1
        return app

    @property
    def busy(self) -> int:
        """Requests being handled (or waiting for their turn) right now."""
        with self._busy_lock:
            return self._busy

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
