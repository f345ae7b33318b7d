"""Validation of log rows against a :class:`~outbox.schema.TableSpec`.

Every store runs rows through :func:`validate_row` before writing, so a bad
row is refused with the field named, the same way by every implementation.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

from outbox.errors import InvalidRow
from outbox.schema import Column, TableSpec

Row = dict[str, Any]

MAX_JSON_BYTES = 1_000_000
MAX_JSON_DEPTH = 500
"""BigQuery's limit on nesting in a JSON value."""


def _timestamp(col: Column, value: Any) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidRow(col.name, f"not an ISO-8601 timestamp: {value[:40]!r}") from exc
    if not isinstance(value, dt.datetime):
        raise InvalidRow(col.name, f"expected a timestamp, got {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidRow(col.name, "timestamp has no time zone; use UTC")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidRow(col.name, "timestamp is outside years 1-9999 in UTC") from None


def _unicode(col: Column, text: str) -> None:
    """A lone surrogate survives Python but not the wire: refuse it here, named."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidRow(col.name, "not valid Unicode text (a lone surrogate)") from None


def _json_depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                   else item))
    return deepest


def _coerce(col: Column, value: Any) -> Any:
    kind = col.type
    if kind == "STRING":
        if not isinstance(value, str):
            raise InvalidRow(col.name, f"expected a string, got {type(value).__name__}")
        if col.max_length is not None and len(value) > col.max_length:
            if not col.truncate:
                raise InvalidRow(col.name, f"longer than {col.max_length} characters")
            value = value[: col.max_length]
        _unicode(col, value)
        return value
    if kind == "INT64":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRow(col.name, f"expected an integer, got {type(value).__name__}")
        if not -(2**63) <= value < 2**63:
            raise InvalidRow(col.name, "integer out of INT64 range")
        return value
    if kind == "FLOAT64":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRow(col.name, f"expected a number, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:
            raise InvalidRow(col.name, "number is beyond the FLOAT64 range") from None
        if not math.isfinite(number):
            raise InvalidRow(col.name, "number is not finite")
        return number
    if kind == "BOOL":
        if not isinstance(value, bool):
            raise InvalidRow(col.name, f"expected a boolean, got {type(value).__name__}")
        return value
    if kind == "TIMESTAMP":
        return _timestamp(col, value)
    if kind == "DATE":
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError as exc:
                raise InvalidRow(col.name, f"not an ISO date: {value[:40]!r}") from exc
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise InvalidRow(col.name, f"expected a date, got {type(value).__name__}")
        return value
    if kind == "JSON":
        if _json_depth(value) > MAX_JSON_DEPTH:
            raise InvalidRow(col.name, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            encoded = json.dumps(value, allow_nan=False, default=_reject, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRow(col.name, f"not JSON-serialisable: {exc}") from exc
        _unicode(col, encoded)
        if len(encoded.encode()) > MAX_JSON_BYTES:
            raise InvalidRow(col.name, f"JSON larger than {MAX_JSON_BYTES} bytes")
        return json.loads(encoded)
    raise InvalidRow(col.name, f"unsupported column type {kind}")  # pragma: no cover


def _reject(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def validate_row(spec: TableSpec, row: Mapping[str, Any]) -> Row:
    """Return a normalised copy of ``row`` or raise :class:`InvalidRow`.

    Unknown fields are refused rather than dropped: a typo in a column name
    would otherwise lose data silently.
    """
    if not isinstance(row, Mapping):
        raise InvalidRow("<row>", f"expected a mapping, got {type(row).__name__}")
    for key in row:
        if not isinstance(key, str) or spec.column(key) is None:
            raise InvalidRow(str(key), f"not a column of {spec.dataset}.{spec.name}")
    out: Row = {}
    for col in spec.columns:
        value = row.get(col.name)
        if value is None:
            if col.required:
                raise InvalidRow(col.name, "is required")
            continue
        if col.repeated:
            if not isinstance(value, list | tuple):
                raise InvalidRow(col.name, f"expected a list, got {type(value).__name__}")
            out[col.name] = [_coerce(col, v) for v in value]
        else:
            out[col.name] = _coerce(col, value)
    return out
