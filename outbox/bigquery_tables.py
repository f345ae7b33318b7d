"""Creating datasets and tables from the specs in :mod:`outbox.schema`, idempotently.

``ensure_tables`` creates what is missing. ``table_state`` and
``update_table`` are for ``outbox infra``: reading a table back as the few
properties a plan compares, and changing only the ones BigQuery lets change in
place (adding NULLABLE columns, clustering, partition expiration, the
partition filter requirement).

bqemulator reads back columns (with modes), partitioning with its expiration,
and clustering; it stores no ``require_partition_filter`` (it reads back as
None), no column descriptions and no default value expressions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from outbox.bigquery_errors import translate
from outbox.schema import Column, TableSpec

_MODES = {True: "REQUIRED", False: "NULLABLE"}
_STANDARD_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}
"""The real API answers with legacy type names even for a table created with standard ones."""


def column_mode(column: Column) -> str:
    return "REPEATED" if column.repeated else _MODES[column.required]


def to_bigquery_table(project: str, spec: TableSpec) -> bigquery.Table:
    schema = [
        bigquery.SchemaField(
            c.name,
            c.type,
            mode=column_mode(c),
            description=c.description or None,
            default_value_expression=c.default_expression,
        )
        for c in spec.columns
    ]
    table = bigquery.Table(f"{project}.{spec.dataset}.{spec.name}", schema=schema)
    if spec.partition_field is not None:
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY,
            field=spec.partition_field,
            expiration_ms=spec.expiration_days * 86_400_000 if spec.expiration_days else None,
        )
        table.require_partition_filter = spec.require_partition_filter
    if spec.clustering:
        table.clustering_fields = list(spec.clustering)
    table.description = spec.description or None
    return table


@dataclass(frozen=True)
class Created:
    kind: str
    name: str
    created: bool


def ensure_tables(
    client: bigquery.Client, project: str, specs: Iterable[TableSpec], location: str = "US"
) -> list[Created]:
    """Create what is missing; leave what exists alone. Safe to run again."""
    out: list[Created] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.dataset not in seen:
            seen.add(spec.dataset)
            out.append(Created("dataset", spec.dataset,
                               ensure_dataset(client, project, spec.dataset, location)))
        table = to_bigquery_table(project, spec)
        out.append(
            Created("table", f"{spec.dataset}.{spec.name}", _create(client.create_table, table))
        )
    return out


def ensure_dataset(
    client: bigquery.Client, project: str, dataset: str, location: str = "US"
) -> bool:
    """Create ``dataset`` unless it exists; True if this call created it."""
    ds = bigquery.Dataset(f"{project}.{dataset}")
    ds.location = location
    return _create(client.create_dataset, ds)


def _create(create: object, resource: object) -> bool:
    try:
        create(resource)  # type: ignore[operator]
    except gexc.Conflict:
        return False
    except gexc.GoogleAPICallError as exc:
        raise translate(exc, f"create {resource}") from exc
    return True


@dataclass(frozen=True)
class TableState:
    """The properties of an existing table that ``outbox infra plan`` compares."""

    columns: tuple[tuple[str, str, str], ...]
    """(name, standard SQL type, mode) in table order."""
    partition_field: str | None
    partition_expiration_ms: int | None
    clustering: tuple[str, ...]
    require_partition_filter: bool | None
    """None when the server did not say (bqemulator never does)."""


def dataset_exists(client: bigquery.Client, project: str, dataset: str) -> bool:
    try:
        client.get_dataset(f"{project}.{dataset}")
    except gexc.NotFound:
        return False
    except gexc.GoogleAPICallError as exc:
        raise translate(exc, f"read dataset {dataset}") from exc
    return True


def table_state(client: bigquery.Client, project: str, spec: TableSpec) -> TableState | None:
    """The table of ``spec`` as it is, or None if it does not exist."""
    try:
        table = client.get_table(f"{project}.{spec.dataset}.{spec.name}")
    except gexc.NotFound:
        return None
    except gexc.GoogleAPICallError as exc:
        raise translate(exc, f"read table {spec.dataset}.{spec.name}") from exc
    tp = table.time_partitioning
    return TableState(
        columns=tuple((f.name, _STANDARD_TYPES.get(f.field_type, f.field_type),
                       f.mode or "NULLABLE") for f in table.schema),
        partition_field=(tp.field or "_PARTITIONTIME") if tp is not None else None,
        partition_expiration_ms=int(tp.expiration_ms) if tp and tp.expiration_ms else None,
        clustering=tuple(table.clustering_fields or ()),
        require_partition_filter=table.require_partition_filter,
    )


Difference = tuple[str, str, str, str | None]
"""(field, current, desired, the ``update_table`` field that fixes it or None if none can)."""


def table_differences(spec: TableSpec, actual: TableState,
                      check_partition_filter: bool = True) -> list[Difference]:
    """How an existing table differs from its spec; extra columns are left alone.

    Only NULLABLE/REPEATED columns, clustering, partition expiration and the
    partition filter change in place; a missing REQUIRED column, another type
    or mode, or other partitioning need a migration. ``check_partition_filter``
    is False on bqemulator, which does not store it.
    """
    out: list[Difference] = []
    have = {name: f"{type_} {mode}" for name, type_, mode in actual.columns}
    missing = [c for c in spec.columns if c.name not in have]
    if missing:
        addable = all(column_mode(c) != "REQUIRED" for c in missing)
        out.append(("schema", "-", "add " + ", ".join(c.name for c in missing),
                    "schema" if addable else None))
    for c in spec.columns:
        want = f"{c.type} {column_mode(c)}"
        if c.name in have and have[c.name] != want:
            out.append((f"schema.{c.name}", have[c.name], want, None))
    if actual.partition_field != spec.partition_field:
        out.append(("partitioning", str(actual.partition_field), str(spec.partition_field), None))
    elif spec.partition_field:
        want_ms = spec.expiration_days * 86_400_000 if spec.expiration_days else None
        if actual.partition_expiration_ms != want_ms:
            out.append(("partition_expiration", _days(actual.partition_expiration_ms),
                        _days(want_ms), "time_partitioning"))
        rpf = bool(actual.require_partition_filter)
        if check_partition_filter and rpf != spec.require_partition_filter:
            out.append(("require_partition_filter", str(rpf), str(spec.require_partition_filter),
                        "require_partition_filter"))
    if actual.clustering != spec.clustering:
        out.append(("clustering_fields", ", ".join(actual.clustering) or "none",
                    ", ".join(spec.clustering) or "none", "clustering_fields"))
    return out


def _days(ms: int | None) -> str:
    return "never" if ms is None else f"{ms / 86_400_000:g} d"


def update_table(
    client: bigquery.Client, project: str, spec: TableSpec, fields: Sequence[str]
) -> None:
    """Bring ``fields`` of the existing table to ``spec``, in one PATCH.

    ``schema`` appends the spec's missing columns (BigQuery adds only NULLABLE
    or REPEATED ones in place; the plan blocks the rest), keeping any extra
    columns the table has. Other fields are copied from the spec.
    """
    desired = to_bigquery_table(project, spec)
    try:
        table = client.get_table(desired.reference)
        if "schema" in fields:
            have = {f.name for f in table.schema}
            table.schema = [*table.schema, *(f for f in desired.schema if f.name not in have)]
        if "clustering_fields" in fields:
            table.clustering_fields = desired.clustering_fields
        if "time_partitioning" in fields and table.time_partitioning is not None:
            partitioning = table.time_partitioning
            partitioning.expiration_ms = desired.time_partitioning.expiration_ms
            table.time_partitioning = partitioning
        if "require_partition_filter" in fields:
            table.require_partition_filter = bool(desired.require_partition_filter)
        client.update_table(table, list(fields))
    except gexc.GoogleAPICallError as exc:
        raise translate(exc, f"update table {spec.dataset}.{spec.name}") from exc
