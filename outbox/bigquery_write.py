"""Appending rows to BigQuery: the Storage Write API, or legacy streaming.

The Storage Write API's default stream writes rows that UPDATE can touch at
once, which is what lets the relay flag a row moments after a scraper logged
it. Legacy streaming (``insertAll``) is kept as an explicit option only: its
rows sit in the streaming buffer for 30-90 minutes, where DML cannot reach
them (the relay's journal copes; see docs/design.md).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient, types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from outbox.bigquery_errors import translate
from outbox.errors import PermanentError, TransientError
from outbox.rows import Row
from outbox.schema import ColumnType, TableSpec, check_project

_EPOCH = dt.date(1970, 1, 1)
_F = descriptor_pb2.FieldDescriptorProto
_PROTO_TYPES: dict[ColumnType, int] = {
    "STRING": _F.TYPE_STRING,
    "JSON": _F.TYPE_STRING,
    "INT64": _F.TYPE_INT64,
    "TIMESTAMP": _F.TYPE_INT64,
    "FLOAT64": _F.TYPE_DOUBLE,
    "BOOL": _F.TYPE_BOOL,
    "DATE": _F.TYPE_INT32,
}


class RowAppender(Protocol):
    def append(self, spec: TableSpec, rows: Sequence[Row]) -> None:
        """Append validated rows in one request; raise a project error on failure."""
        ...


def _proto_value(kind: ColumnType, value: Any) -> Any:
    if kind == "TIMESTAMP":
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if kind == "JSON":
        return json.dumps(value, separators=(",", ":"))
    if kind == "DATE":
        return (value - _EPOCH).days
    return value


class _ProtoSchema:
    """A proto2 message type mirroring one table, built once per table."""

    def __init__(self, spec: TableSpec) -> None:
        fdp = descriptor_pb2.FileDescriptorProto(
            name=f"{spec.dataset}_{spec.name}.proto", package="outbox_rows", syntax="proto2"
        )
        msg = fdp.message_type.add(name=f"{spec.dataset}_{spec.name}")
        for number, col in enumerate(spec.columns, start=1):
            label = _F.LABEL_REPEATED if col.repeated else _F.LABEL_OPTIONAL
            msg.field.add(name=col.name, number=number, type=_PROTO_TYPES[col.type], label=label)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        self.cls = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"outbox_rows.{msg.name}")
        )
        self.schema = types.ProtoSchema()
        self.schema.proto_descriptor.CopyFrom(msg)
        self.spec = spec
        self._kinds = {c.name: c.type for c in spec.columns}
        self._repeated = {c.name for c in spec.columns if c.repeated}

    def serialize(self, row: Row) -> bytes:
        values = {}
        for k, v in row.items():
            if v is None:
                continue
            kind = self._kinds[k]
            values[k] = ([_proto_value(kind, x) for x in v] if k in self._repeated
                         else _proto_value(kind, v))
        data: bytes = self.cls(**values).SerializeToString()
        return data


class StorageWriteAppender:
    """Appends through the default stream: at-least-once, no stream to manage."""

    def __init__(self, client: BigQueryWriteClient, project: str) -> None:
        self.client = client
        self.project = check_project(project)
        self._schemas: dict[tuple[str, str], _ProtoSchema] = {}

    def _schema(self, spec: TableSpec) -> _ProtoSchema:
        key = (spec.dataset, spec.name)
        if key not in self._schemas:
            self._schemas[key] = _ProtoSchema(spec)
        return self._schemas[key]

    def append(self, spec: TableSpec, rows: Sequence[Row]) -> None:
        if not rows:
            return
        proto = self._schema(spec)
        stream = (
            f"projects/{self.project}/datasets/{spec.dataset}/tables/{spec.name}/streams/_default"
        )
        request = types.AppendRowsRequest(
            write_stream=stream,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=proto.schema,
                rows=types.ProtoRows(serialized_rows=[proto.serialize(r) for r in rows]),
            ),
        )
        try:
            responses = list(self.client.append_rows(iter([request])))
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"append to {spec.dataset}.{spec.name}") from exc
        except Exception as exc:  # grpc transport errors surface unwrapped
            raise TransientError(f"append to {spec.dataset}.{spec.name}: {exc}") from exc
        for response in responses:
            if response.row_errors:
                first = response.row_errors[0]
                raise PermanentError(
                    f"append to {spec.dataset}.{spec.name} refused row {first.index}: "
                    f"{first.message}"
                )
            if response.error.code:
                raise TransientError(
                    f"append to {spec.dataset}.{spec.name}: {response.error.message}"
                )


def _json_value(kind: ColumnType, value: Any) -> Any:
    if kind == "TIMESTAMP":
        return value.isoformat()
    if kind == "DATE":
        return value.isoformat()
    if kind == "JSON":
        return json.dumps(value, separators=(",", ":"))
    return value


class LegacyStreamingAppender:
    """``insert_rows_json``. Rows land in the streaming buffer; see module doc."""

    def __init__(self, client: bigquery.Client, project: str) -> None:
        self.client = client
        self.project = check_project(project)

    def append(self, spec: TableSpec, rows: Sequence[Row]) -> None:
        if not rows:
            return
        kinds = {c.name: c.type for c in spec.columns}
        repeated = {c.name for c in spec.columns if c.repeated}
        payload = [
            {k: ([_json_value(kinds[k], x) for x in v] if k in repeated
                 else _json_value(kinds[k], v)) for k, v in r.items()}
            for r in rows
        ]
        table = f"{self.project}.{spec.dataset}.{spec.name}"
        try:
            errors = self.client.insert_rows_json(table, payload)
        except gexc.GoogleAPICallError as exc:
            raise translate(exc, f"insertAll into {table}") from exc
        if errors:
            raise PermanentError(f"insertAll into {table} refused rows: {errors[:3]}")
