"""Creating datasets and tables from the specs in :mod:`outbox.schema`, idempotently."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from outbox.bigquery_errors import translate
from outbox.schema import TableSpec

_MODES = {True: "REQUIRED", False: "NULLABLE"}


def to_bigquery_table(project: str, spec: TableSpec) -> bigquery.Table:
    schema = [
        bigquery.SchemaField(
            c.name,
            c.type,
            mode="REPEATED" if c.repeated else _MODES[c.required],
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
            ds = bigquery.Dataset(f"{project}.{spec.dataset}")
            ds.location = location
            out.append(Created("dataset", spec.dataset, _create(client.create_dataset, ds)))
        table = to_bigquery_table(project, spec)
        out.append(
            Created("table", f"{spec.dataset}.{spec.name}", _create(client.create_table, table))
        )
    return out


def _create(create: object, resource: object) -> bool:
    try:
        create(resource)  # type: ignore[operator]
    except gexc.Conflict:
        return False
    except gexc.GoogleAPICallError as exc:
        raise translate(exc, f"create {resource}") from exc
    return True
