"""Typed reading of raw JSON: strict converters, and errors that name the field's path."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from processors.raw.records import (
    BadRecord,
    Node,
    as_date,
    as_float,
    as_int,
    as_minutes,
    as_timestamp,
    file_time,
    nba_game_date,
)


@pytest.mark.parametrize(("raw", "minutes"), [
    ("34:12", 34.2), ("34", 34.0), ("0:00", 0.0), ("5:30", 5.5), ("", None), ("  ", None),
    (33.5, 33.5), (12, 12.0),
])
def test_minutes(raw: Any, minutes: float | None) -> None:
    assert as_minutes(raw) == (None if minutes is None else pytest.approx(minutes))


def test_null_minutes_are_null() -> None:
    assert Node({"min": None}).opt("min", as_minutes) is None


@pytest.mark.parametrize("raw", ["34:75", "abc", "-3", "34:1", "1:02:03", True, [34]])
def test_bad_minutes_are_refused_with_the_path(raw: Any) -> None:
    with pytest.raises(BadRecord) as err:
        Node({"min": raw}, "data[4]").opt("min", as_minutes)
    assert err.value.path == "data[4].min"


@pytest.mark.parametrize(("raw", "value"), [(27, 27), (27.0, 27), (-115, -115)])
def test_integers(raw: Any, value: int) -> None:
    assert as_int(raw) == value and isinstance(as_int(raw), int)


@pytest.mark.parametrize("raw", ["27", "abc", 27.5, True, 2**64])
def test_non_integers_are_refused(raw: Any) -> None:
    with pytest.raises(BadRecord, match=r"^data\[0\]\.pts: ") as err:
        Node({"pts": raw}, "data[0]").req("pts", as_int)
    assert "integer" in err.value.problem


def test_the_message_shows_the_bad_value() -> None:
    with pytest.raises(BadRecord) as err:
        Node({"pts": "abc"}, "data[3]").req("pts", as_int)
    assert str(err.value) == "data[3].pts: expected an integer, got string 'abc'"


@pytest.mark.parametrize("raw", [float("nan"), float("inf"), "25.5", None])
def test_non_finite_or_non_numbers_are_refused(raw: Any) -> None:
    with pytest.raises(BadRecord):
        Node({"point": raw}).req("point", as_float)


def test_missing_and_null_required_fields_are_told_apart() -> None:
    with pytest.raises(BadRecord, match=r"^data\[1\]\.game\.id: is required$"):
        Node({"game": {}}, "data[1]").obj("game").req("id", as_int)
    with pytest.raises(BadRecord, match=r"game\.id: is null$"):
        Node({"game": {"id": None}}).obj("game").req("id", as_int)


def test_shapes_are_checked_on_the_way_down() -> None:
    with pytest.raises(BadRecord, match=r"^data\[0\]\.player: expected an object, got string"):
        Node({"player": "LeBron"}, "data[0]").obj("player")
    with pytest.raises(BadRecord, match=r"^<root>: expected an array, got object"):
        Node({"data": []}).elements()
    assert [n.path for n in Node({"data": [1, 2]}).array("data")] == ["data[0]", "data[1]"]


def test_dates_and_timestamps() -> None:
    assert as_date("2026-11-28") == as_date("2026-11-28T00:00:00.000Z") == dt.date(2026, 11, 28)
    assert as_timestamp("2026-11-29T00:10:00Z") == dt.datetime(2026, 11, 29, 0, 10, tzinfo=dt.UTC)
    assert as_timestamp("2026-11-28T19:10:00-05:00").hour == 0
    for bad in ("2026-11-28T00:10:00", "11/28/2026", 1764375000):
        with pytest.raises((TypeError, ValueError)):
            as_timestamp(bad)
    with pytest.raises(ValueError):
        as_date("28.11.2026")


@pytest.mark.parametrize(("commence", "day"), [
    ("2026-11-29T00:10:00Z", "2026-11-28"),  # 7:10 pm EST
    ("2026-11-28T17:00:00Z", "2026-11-28"),  # noon EST
    ("2026-11-29T04:30:00Z", "2026-11-28"),  # 11:30 pm EST (would be the 29th in EDT)
    ("2026-03-09T04:30:00Z", "2026-03-09"),  # 12:30 am EDT (would be the 8th in EST)
])
def test_the_game_day_is_the_eastern_date(commence: str, day: str) -> None:
    assert nba_game_date(as_timestamp(commence)) == dt.date.fromisoformat(day)


@pytest.mark.parametrize(("path", "stamp"), [
    ("gs://nba-scraped-data/ball-dont-lie/games/2026-11-28/20261128_100000.json",
     dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)),
    ("file:///tmp/x/20261128_235959.json.gz", dt.datetime(2026, 11, 28, 23, 59, 59, tzinfo=dt.UTC)),
    ("gs://b/games/2026-11-28/latest.json", None),
    ("gs://b/20261399_100000.json", None),
    (None, None),
])
def test_file_time_comes_from_the_file_name(path: str | None, stamp: dt.datetime | None) -> None:
    assert file_time(path) == stamp
