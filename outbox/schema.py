"""Table definitions as data: the platform's log table plus the outbox's own.

Every store, the writer's validation, the proto descriptor for the Storage
Write API and ``outbox init`` read these specs. Nothing else defines a column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from outbox.errors import ConfigError

ColumnType = Literal["STRING", "INT64", "FLOAT64", "BOOL", "TIMESTAMP", "JSON", "DATE"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_PROJECT = re.compile(r"^[a-z][a-z0-9\-]{4,61}[a-z0-9]$|^[a-z][a-z0-9\-]{1,61}[a-z0-9]$")


def check_identifier(value: str, what: str) -> str:
    """Refuse anything that is not a plain BigQuery identifier.

    Identifiers are the only parts of SQL that are not query parameters, so
    they must never carry quotes, dots or spaces.
    """
    if not _IDENT.match(value):
        raise ConfigError(f"{what} {value!r} is not a valid BigQuery identifier")
    return value


def check_project(value: str) -> str:
    if not _PROJECT.match(value):
        raise ConfigError(f"project id {value!r} is not a valid Google Cloud project id")
    return value


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False
    repeated: bool = False
    """An ARRAY of ``type``; ``max_length`` then applies to each element."""
    max_length: int | None = None
    truncate: bool = False
    default_expression: str | None = None
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    dataset: str
    name: str
    columns: tuple[Column, ...]
    partition_field: str | None
    clustering: tuple[str, ...] = ()
    expiration_days: int | None = 90
    require_partition_filter: bool = True
    description: str = ""
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_identifier(self.dataset, "dataset")
        check_identifier(self.name, "table")
        for col in self.columns:
            check_identifier(col.name, "column")
            self._by_name[col.name] = col
        if self.partition_field is not None and self.partition_field not in self._by_name:
            raise ConfigError(f"{self.name}: partition column {self.partition_field!r} missing")
        for name in self.clustering:
            if name not in self._by_name:
                raise ConfigError(f"{self.name}: clustering column {name!r} missing")

    @property
    def partition_column(self) -> str:
        """The partition column of a table the outbox polls; those must have one."""
        if self.partition_field is None:
            raise ConfigError(f"{self.name} is not partitioned")
        return self.partition_field

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def with_location(self, dataset: str, name: str | None = None) -> TableSpec:
        """The same table under another dataset (or name), e.g. for tests."""
        return TableSpec(
            dataset=dataset,
            name=name or self.name,
            columns=self.columns,
            partition_field=self.partition_field,
            clustering=self.clustering,
            expiration_days=self.expiration_days,
            require_partition_filter=self.require_partition_filter,
            description=self.description,
        )


PUBLISHED = "published"
PUBLISHED_AT = "published_at"

# Columns the outbox adds to any log table it relays from.
OUTBOX_COLUMNS: tuple[Column, ...] = (
    Column(PUBLISHED, "BOOL", description="set TRUE once the event is on Pub/Sub"),
    Column(PUBLISHED_AT, "TIMESTAMP"),
)

SCRAPER_EXECUTION_LOG = TableSpec(
    dataset="nba_orchestration",
    name="scraper_execution_log",
    partition_field="triggered_at",
    # `published` first: a poll for unpublished rows reads only that cluster.
    clustering=("published", "scraper_name", "status", "source"),
    description="One row per scraper run; the outbox for nba-scraper-complete.",
    columns=(
        Column("execution_id", "STRING", required=True, max_length=128),
        Column("scraper_name", "STRING", required=True, max_length=128),
        Column("workflow", "STRING", max_length=256),
        Column("status", "STRING", required=True, max_length=32),
        Column("triggered_at", "TIMESTAMP", required=True),
        Column("completed_at", "TIMESTAMP"),
        Column("duration_seconds", "FLOAT64"),
        Column("source", "STRING", required=True, max_length=32),
        Column("environment", "STRING", max_length=64),
        Column("triggered_by", "STRING", max_length=256),
        Column("gcs_path", "STRING", max_length=1024),
        Column("data_summary", "JSON"),
        Column("error_type", "STRING", max_length=256),
        Column("error_message", "STRING", max_length=1000, truncate=True),
        Column("retry_count", "INT64"),
        Column("recovery", "BOOL"),
        Column("run_id", "STRING", max_length=128),
        Column("opts", "JSON"),
        Column("created_at", "TIMESTAMP", default_expression="CURRENT_TIMESTAMP()"),
        *OUTBOX_COLUMNS,
    ),
)

# One row per processor run: the outbox for nba-phase2-complete (Phase 2 -> 3).
PROCESSOR_EXECUTION_LOG = TableSpec(
    dataset="nba_orchestration",
    name="processor_execution_log",
    partition_field="triggered_at",
    clustering=("published", "processor_name", "status"),
    description="One row per processor run; the outbox for nba-phase2-complete.",
    columns=(
        Column("execution_id", "STRING", required=True, max_length=128),
        Column("processor_name", "STRING", required=True, max_length=128),
        Column("source_execution_id", "STRING", max_length=128,
               description="the scraper event that triggered this run"),
        Column("correlation_id", "STRING", max_length=128),
        Column("status", "STRING", required=True, max_length=32),
        Column("triggered_at", "TIMESTAMP", required=True),
        Column("completed_at", "TIMESTAMP"),
        Column("duration_seconds", "FLOAT64"),
        Column("trigger_source", "STRING", max_length=32),
        Column("gcs_path", "STRING", max_length=1024),
        Column("output_dataset", "STRING", max_length=128),
        Column("output_table", "STRING", max_length=128),
        Column("game_date", "DATE"),
        Column("record_count", "INT64"),
        Column("records_failed", "INT64"),
        Column("error_type", "STRING", max_length=256),
        Column("error_message", "STRING", max_length=1000, truncate=True),
        Column("created_at", "TIMESTAMP", default_expression="CURRENT_TIMESTAMP()"),
        *OUTBOX_COLUMNS,
    ),
)

SCRAPER_STATUSES = frozenset({"success", "no_data", "failed", "partial"})
SCRAPER_SOURCES = frozenset({"CONTROLLER", "MANUAL", "LOCAL", "CLOUD_RUN", "SCHEDULER", "RECOVERY"})

# The relay's append-only record of what it did with each row. Appends never
# conflict and are visible at once, which is why the poll trusts it even when
# the `published` flag could not be set yet.
OUTBOX_JOURNAL = TableSpec(
    dataset="nba_orchestration",
    name="outbox_journal",
    partition_field="triggered_at",
    clustering=("route", "outcome"),
    description="Append-only record of relay outcomes per log row.",
    columns=(
        Column("route", "STRING", required=True, max_length=128),
        # One row per published batch (ids in arrays), one per failure: a
        # batch of 5,000 costs one small append, not 5,000 rows.
        Column("execution_ids", "STRING", repeated=True, max_length=128),
        Column("triggered_at", "TIMESTAMP", required=True,
               description="the newest triggered_at among execution_ids"),
        Column("outcome", "STRING", required=True, max_length=16),
        Column("recorded_at", "TIMESTAMP", required=True),
        Column("message_ids", "STRING", repeated=True, max_length=128),
        Column("error", "STRING", max_length=1000, truncate=True),
        Column("relay_run_id", "STRING", max_length=64),
    ),
)

# One row per route: who may relay it until when. Tiny and unpartitioned; it is
# only ever changed by conditional UPDATEs, which BigQuery serialises per table.
OUTBOX_LEASE = TableSpec(
    dataset="nba_orchestration",
    name="outbox_lease",
    partition_field=None,
    expiration_days=None,
    require_partition_filter=False,
    description="Relay leases: at most one relay publishes a route at a time.",
    columns=(
        Column("route", "STRING", required=True, max_length=128),
        Column("holder", "STRING", max_length=128),
        Column("acquired_at", "TIMESTAMP"),
        Column("expires_at", "TIMESTAMP"),
    ),
)

# One row per relay run, appended at its end: what `outbox status` shows as the
# last run, and the history an operator reads when a backlog grows.
OUTBOX_RUNS = TableSpec(
    dataset="nba_orchestration",
    name="outbox_relay_runs",
    partition_field="finished_at",
    clustering=("route",),
    description="Summaries of relay runs.",
    columns=(
        Column("route", "STRING", required=True, max_length=128),
        Column("run_id", "STRING", required=True, max_length=64),
        Column("finished_at", "TIMESTAMP", required=True),
        Column("stopped", "STRING", max_length=1000, truncate=True),
        Column("summary", "JSON"),
    ),
)
