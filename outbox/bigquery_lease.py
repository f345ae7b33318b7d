"""The BigQuery implementation of :class:`~outbox.ports.Lease`.

Built on the one guarantee BigQuery gives about concurrent DML on a table:
mutations are serialised, and a statement that would conflict fails with
``Could not serialize access ...`` instead of both applying. A conditional
UPDATE that sets the holder only where the lease is free therefore changes
rows for exactly one of two racing relays. Its clock is BigQuery's
``CURRENT_TIMESTAMP()``, so relays with skewed clocks still agree on expiry.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from outbox import bigquery_sql as sqlgen
from outbox.bigquery_errors import translate
from outbox.bigquery_store import query_params
from outbox.errors import MarkRefused, OutboxError
from outbox.schema import OUTBOX_LEASE, TableSpec

log = logging.getLogger("outbox.lease")


class BigQueryLease:
    def __init__(self, client: bigquery.Client, project: str | None = None,
                 table: TableSpec = OUTBOX_LEASE) -> None:
        self.client = client
        self.project = project or client.project
        self.table = table
        self.jobs = 0
        self._seeded: set[str] = set()

    def _run(self, stmt: sqlgen.Statement, doing: str) -> int:
        config = bigquery.QueryJobConfig(query_parameters=query_params(stmt),
                                         labels={"component": "outbox-lease"})
        self.jobs += 1
        try:
            job = self.client.query(stmt.sql, job_config=config)
            job.result()
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, doing, dml=True) from exc
        return int(job.num_dml_affected_rows or 0)

    def acquire(self, route: str, holder: str, ttl: dt.timedelta) -> bool:
        if ttl < dt.timedelta(0):
            raise ValueError(f"lease ttl must not be negative, got {ttl}")
        seconds = math.ceil(ttl.total_seconds())
        try:
            if route not in self._seeded:
                self._run(sqlgen.lease_seed(self.project, self.table, route), "seed lease")
                self._seeded.add(route)
            stmt = sqlgen.lease_acquire(self.project, self.table, route, holder, seconds)
            return self._run(stmt, f"acquire lease on {route}") > 0
        except MarkRefused as exc:
            log.warning("lease contended; not acquired", extra={"json_fields": {
                "route": route, "holder": holder, "reason": exc.reason}})
            return False

    def release(self, route: str, holder: str) -> None:
        try:
            self._run(sqlgen.lease_release(self.project, self.table, route, holder),
                      f"release lease on {route}")
        except OutboxError as exc:
            log.warning("lease not released; it will expire", extra={"json_fields": {
                "route": route, "holder": holder, "error": str(exc)}})
