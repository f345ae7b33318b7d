"""Typed reading of raw JSON, with the path of every value kept for errors.

A processor reads a record through a :class:`Node`; every failure is a
:class:`BadRecord` naming the exact place (``data[3].pts``,
``[0].bookmakers[1].markets[0].outcomes[2].price``) and the problem, because
that line is all an operator gets when a source changes its format.
Converters are strict: a wrong type is an error, never a silent NULL.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

T = TypeVar("T")
NBA_TIME_ZONE = ZoneInfo("America/New_York")


class BadRecord(Exception):
    """One record (or the file's top level) is not what the format says."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or '<root>'}: {problem}")
        self.path = path or "<root>"
        self.problem = problem


def _kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return names.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    return f"{_kind(value)} {value!r:.40}" if isinstance(value, str | int | float) else _kind(value)


@dataclass(frozen=True)
class Node:
    """A JSON value and where it sits in the file."""

    value: Any
    path: str = ""

    def at(self, key: str) -> Node:
        if not isinstance(self.value, Mapping):
            raise BadRecord(self.path, f"expected an object, got {_kind(self.value)}")
        return Node(self.value.get(key), f"{self.path}.{key}" if self.path else key)

    def elements(self) -> list[Node]:
        if not isinstance(self.value, list):
            raise BadRecord(self.path, f"expected an array, got {_kind(self.value)}")
        return [Node(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def obj(self, key: str) -> Node:
        node = self.at(key)
        if not isinstance(node.value, Mapping):
            raise BadRecord(node.path, f"expected an object, got {_kind(node.value)}")
        return node

    def array(self, key: str) -> list[Node]:
        return self.at(key).elements()

    def opt(self, key: str, convert: Callable[[Any], T]) -> T | None:
        """The field converted, or None when it is missing or null."""
        node = self.at(key)
        return None if node.value is None else node.convert(convert)

    def req(self, key: str, convert: Callable[[Any], T]) -> T:
        node = self.at(key)
        if node.value is None:
            raise BadRecord(node.path, "is required" if key not in self.value else "is null")
        return node.convert(convert)

    def convert(self, convert: Callable[[Any], T]) -> T:
        try:
            return convert(self.value)
        except (TypeError, ValueError) as exc:
            raise BadRecord(self.path, f"{exc}, got {_shown(self.value)}") from None


# -- converters: value (never None) -> typed value; TypeError/ValueError say what was expected


def as_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 27.0 from a JSON encoder that writes floats
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    if not -(2**63) <= value < 2**63:
        raise ValueError("integer out of INT64 range")
    return value


def as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return float(value)


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return value


def as_date(value: Any) -> dt.date:
    """``YYYY-MM-DD``, or the date part of BallDontLie's older ``YYYY-MM-DDT00:00:00Z``."""
    text = as_str(value)
    try:
        return dt.date.fromisoformat(text[:10] if len(text) > 10 and text[10] == "T" else text)
    except ValueError:
        raise ValueError("expected a date YYYY-MM-DD") from None


def as_timestamp(value: Any) -> dt.datetime:
    """An ISO-8601 time with a zone (``Z`` or an offset); naive times are refused."""
    try:
        stamp = dt.datetime.fromisoformat(as_str(value))
    except ValueError:
        raise ValueError("expected an ISO-8601 timestamp") from None
    if stamp.tzinfo is None:
        raise ValueError("expected a timestamp with a time zone")
    return stamp.astimezone(dt.UTC)


_MINUTES = re.compile(r"^(\d{1,3})(?::([0-5]\d))?$")


def as_minutes(value: Any) -> float | None:
    """BallDontLie's ``min``: ``"34:12"`` -> 34.2, ``"34"`` -> 34.0, ``""`` -> None (DNP)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return as_float(value)
    text = as_str(value).strip()
    if not text:
        return None
    match = _MINUTES.match(text)
    if match is None:
        raise ValueError('expected minutes as "MM:SS" or "MM"')
    return int(match[1]) + int(match[2] or 0) / 60


def nba_game_date(commence: dt.datetime) -> dt.date:
    """The NBA game day of a start time: its date in America/New_York.

    A 7:10 pm ET tip-off is 00:10 UTC the next day; the league, the box
    scores and BallDontLie all call it the earlier (Eastern) date.
    """
    return commence.astimezone(NBA_TIME_ZONE).date()


_FILE_STAMP = re.compile(r"(\d{8}_\d{6})(?:\.[A-Za-z0-9]+)*$")


def file_time(path: str | None) -> dt.datetime | None:
    """The UTC time in a scraper file's name (``.../20261128_100000.json``), if any."""
    match = _FILE_STAMP.search(path or "")
    if match is None:
        return None
    try:
        return dt.datetime.strptime(match[1], "%Y%m%d_%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
