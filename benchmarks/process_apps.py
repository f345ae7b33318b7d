"""The two apps the ``/process`` benchmarks serve, the pushes they are sent, and
the handler timed alone.

``service_app`` is the real processors service (``create_app``, the shipped
``Registry``) with a **no-op processor** per rule
(``processors.testing.FakeProcessor``), an in-memory blob store, the in-memory
log writer and an in-memory ledger (``processors.testing.InMemoryLedger``)
unless one is given. ``bare_app`` is the baseline: a Flask app whose
``POST /process`` reads the body and answers 204. Both are built the same way
(``Flask``, the same ``MAX_CONTENT_LENGTH``); only the handler differs.

gunicorn imports this module for the apps (``FACTORIES``), so it stays light:
no BigQuery, no emulators.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import cast

from flask import Flask, request

from outbox.blobs import InMemoryBlobs
from outbox.messages import encode_scraper_complete_v1
from outbox.routes import PHASE2_COMPLETE
from outbox.samples import scraper_row
from outbox.testing import InMemoryOutboxStore
from processors.base import Processor
from processors.dedupe import ProcessedLedger
from processors.registry import RULES, Registry
from processors.service import MAX_BODY_BYTES, Handler, create_app
from processors.testing import FakeProcessor, InMemoryLedger, InMemoryQuarantine, push_body

FILE_PATH = "ball-dont-lie/games/2026-11-28/20261128_100000.json"
"""Routed by the second rule of the shipped registry, as a games file is."""
FILE_URI = f"mem://{FILE_PATH}"
PROCESSOR = "bdl_games"


def noop_processors() -> dict[str, Processor]:
    """One no-op processor per rule of the shipped registry, under the real names."""
    return {rule.processor: FakeProcessor(rule.processor) for rule in RULES}


def service_app(ledger: ProcessedLedger | None = None) -> Flask:
    """The real service (``create_app``, the shipped ``Registry``) on in-memory parts."""
    blobs = InMemoryBlobs()
    blobs.write(FILE_PATH, b'{"data": []}')
    return create_app(noop_processors(), Registry(), ledger or InMemoryLedger(), blobs,
                      InMemoryOutboxStore(PHASE2_COMPLETE.table, PHASE2_COMPLETE.name),
                      InMemoryQuarantine())


def bare_app() -> Flask:
    """The baseline: read the body, answer 204."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.post("/process")
    def process() -> tuple[str, int]:
        request.get_data(cache=False)
        return "", 204

    return app


APPS: dict[str, Callable[[], Flask]] = {"bare": bare_app, "process": service_app}
FACTORIES = {"bare": "benchmarks.process_apps:bare_app()",
             "process": "benchmarks.process_apps:service_app()"}
"""What gunicorn imports for each side."""


def event_ids(n: int, seed: str) -> list[str]:
    """``n`` distinct scraper run ids (8 hex characters, then a counter)."""
    prefix = uuid.UUID(int=random.Random(seed).getrandbits(128)).hex[:8]
    return [f"{prefix}{i:06x}" for i in range(n)]


def deliveries(ids: Sequence[str]) -> list[bytes]:
    """One push body per id: a successful games scrape, encoded as the relay does (v1)."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for i, execution_id in enumerate(ids):
        row = scraper_row(random.Random(i), now, execution_id=execution_id,
                          scraper_name="bdl_games_scraper", status="success",
                          gcs_path=FILE_URI, completed_at=now, duration_seconds=1.5,
                          error_type=None, error_message=None)
        message = encode_scraper_complete_v1(row)
        out.append(push_body(message.data, message.attributes, message_id=f"{execution_id}-{i}",
                             delivery_attempt=None))
    return out


def handler_of(ledger: ProcessedLedger) -> Handler:
    """The ``Handler`` of a service app on ``ledger``, to call without Flask or HTTP."""
    return cast(Handler, service_app(ledger).extensions["processors.handler"])


def handler_us(handler: Handler, bodies: Sequence[bytes], outcome: str) -> float:
    """Microseconds per ``Handler.respond`` (no Flask, no HTTP), checking every outcome."""
    before = handler.counts[outcome]
    t0 = time.perf_counter()
    for body in bodies:
        handler.respond(body)
    us = (time.perf_counter() - t0) / len(bodies) * 1e6
    if handler.counts[outcome] - before != len(bodies):
        raise SystemExit(f"expected {len(bodies)} x {outcome}, got {dict(handler.counts)}")
    return us
