"""The history a drained outbox leaves behind, built column-wise for
:mod:`benchmarks.poll_cost`: published log rows spread evenly over the last 90
days, the journal rows the relay appended when it published them (one row per
relay tick of :data:`RELAY_TICK` holding that tick's ids), and the pending
rows a publishing run drains.

Columnar (Arrow, NumPy) because a million rows then take seconds, not minutes;
in each table's column order, because bqemulator loads Parquet by position.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from outbox.samples import SCRAPERS, WORKFLOWS, scraper_row
from outbox.schema import OUTBOX_JOURNAL, SCRAPER_EXECUTION_LOG

HISTORY = dt.timedelta(days=90)
"""The log's partition expiry: all the history a table can hold."""
RECENT = dt.timedelta(hours=1)
"""Pending rows fall in the last hour; history stops before it."""
RELAY_TICK = dt.timedelta(minutes=1)
"""Cadence of the relay that drained the history: one journal row per tick."""
_TS = pa.timestamp("us", tz="UTC")


def _pick(rng: np.random.Generator, values: Sequence[str], n: int,
          weights: Sequence[float] | None = None) -> pa.Array:
    p = None if weights is None else np.asarray(weights, float) / sum(weights)
    return pa.array(np.asarray(values)[rng.choice(len(values), n, p=p)])


def history_log(size: int, now: dt.datetime, seed: int = 7) -> pa.Table:
    """``size`` published log rows spread evenly over ``(now - 90 d, now - 1 h)``,
    built column-wise (a million rows in seconds, not minutes), in the table's
    column order because bqemulator loads Parquet by position."""
    rng = np.random.default_rng(seed)
    start = int((now - HISTORY).timestamp() * 1e6) + 1
    span = int((HISTORY - RECENT).total_seconds() * 1e6)
    micros = start + (np.arange(size, dtype=np.int64) * span) // max(size, 1)
    triggered = pa.array(micros, _TS)
    which = rng.choice(len(SCRAPERS), size)
    names = pa.array(np.asarray(list(SCRAPERS))[which])
    prefix = pa.array(np.asarray(list(SCRAPERS.values()))[which])
    status = _pick(rng, ["success", "no_data", "failed"], size, [8, 1, 1])
    failed = pc.equal(status, "failed")
    duration = np.round(rng.uniform(0.4, 25.0, size), 3)
    completed = pa.array(micros + (duration * 1e6).astype(np.int64), _TS)
    count = np.where(np.asarray(status) == "success", rng.integers(1, 451, size), 0)
    gcs = pc.binary_join_element_wise(
        "gs://nba-scraped-data", prefix, pc.strftime(triggered, "%Y-%m-%d"),
        pc.binary_join_element_wise(pc.strftime(triggered, "%Y%m%d_%H%M%S"), "json", "."),
        "/")
    summary = pc.binary_join_element_wise(
        '{"record_count":', pc.cast(pa.array(count), pa.string()),
        ',"is_empty_report":', pc.if_else(pa.array(count == 0), "true", "false"),
        ',"scraper_class":"', names, '"}', "")
    ids = pa.array([f"h{i:08x}" for i in range(size)])
    none = pa.nulls(size, pa.string())
    columns: dict[str, pa.Array] = {
        "execution_id": ids,
        "scraper_name": names,
        "workflow": _pick(rng, WORKFLOWS, size),
        "status": status,
        "triggered_at": triggered,
        "completed_at": pc.if_else(failed, pa.nulls(size, _TS), completed),
        "duration_seconds": pc.if_else(failed, pa.nulls(size, pa.float64()),
                                       pa.array(duration)),
        "source": _pick(rng, ["CONTROLLER", "SCHEDULER", "CLOUD_RUN"], size),
        "environment": pa.array(np.full(size, "prod")),
        "triggered_by": pa.array(np.full(size, "cloud-scheduler")),
        "gcs_path": pc.if_else(failed, none, gcs),
        "data_summary": summary,
        "error_type": pc.if_else(failed, "HTTPError", none),
        "error_message": pc.if_else(failed, "502 Bad Gateway from upstream API", none),
        "retry_count": pa.array(np.zeros(size, np.int64)),
        "recovery": pa.array(np.zeros(size, bool)),
        "run_id": ids,
        "opts": pc.binary_join_element_wise(
            '{"date":"', pc.strftime(triggered, "%Y-%m-%d"), '","group":"prod"}', ""),
        "created_at": completed,
        "published": pa.array(np.ones(size, bool)),
        "published_at": pa.array(micros + 90_000_000, _TS),
    }
    assert list(columns) == list(SCRAPER_EXECUTION_LOG.column_names)
    return pa.table(columns)


def history_journal(log: pa.Table, route: str) -> pa.Table:
    """The journal a relay ticking every ``RELAY_TICK`` left while draining
    ``log``: per tick, one ``published`` row holding that tick's ids."""
    micros = pc.cast(log.column("triggered_at"), pa.int64()).to_numpy()
    tick = int(RELAY_TICK.total_seconds() * 1e6)
    if not len(micros):
        bounds = np.array([0], np.int64)
    else:
        groups = micros // tick  # history is sorted by triggered_at
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(groups)) + 1, [len(micros)]))
    ids = log.column("execution_id").combine_chunks()
    offsets = pa.array(bounds.astype(np.int32))
    newest = micros[bounds[1:] - 1] if len(micros) else np.array([], np.int64)
    n = len(bounds) - 1
    message_ids = pa.array([str(i) for i in range(len(micros))])
    columns: dict[str, pa.Array] = {
        "route": pa.array(np.full(n, route)),
        "execution_ids": pa.ListArray.from_arrays(offsets, ids),
        "triggered_at": pa.array(newest, _TS),
        "outcome": pa.array(np.full(n, "published")),
        "recorded_at": pa.array(newest + 30_000_000, _TS),
        "message_ids": pa.ListArray.from_arrays(offsets, message_ids),
        "error": pa.nulls(n, pa.string()),
        "relay_run_id": pa.array([f"hist{i:08x}" for i in range(n)]),
    }
    assert list(columns) == list(OUTBOX_JOURNAL.column_names)
    return pa.table(columns)


def pending_rows(n: int, now: dt.datetime, tag: str) -> list[dict[str, Any]]:
    """``n`` unpublished scraper rows in the last hour, as scrapers write them."""
    rng = random.Random(tag)
    rows = []
    for i in range(n):
        at = now - RECENT + (RECENT - dt.timedelta(minutes=1)) * (i + 1) / (n + 1)
        rows.append(scraper_row(rng, at, execution_id=f"{tag}{i:06d}"))
    return rows
