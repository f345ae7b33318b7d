"""BallDontLie scrapers against the fixture server: statuses, retries, paging, rows and files."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from scraper_fixtures import BDL_KEY, DATE, Rig

from scrapers.fixture_server import Reply, Upstream, bdl_page, box_score, game
from scrapers.http import RetryPolicy

Record = Callable[[int], dict[str, Any]]
BDL = [("bdl_games_scraper", "/v1/games", "ball-dont-lie/games", game),
       ("bdl_player_box_scores_scraper", "/v1/stats", "ball-dont-lie/player-box-scores",
        box_score)]
GAMES = "/v1/games"


@pytest.mark.parametrize(("name", "path", "prefix", "make"), BDL)
def test_success_follows_the_cursor_and_writes_one_file_of_all_pages(
        rig: Rig, name: str, path: str, prefix: str, make: Record) -> None:
    rig.upstream.on(path, Reply(body=bdl_page([make(3)])), cursor="7")
    rig.upstream.on(path, Reply(body=bdl_page([make(1), make(2)], next_cursor=7)))

    report = rig.run(name, date=DATE)

    row = rig.only_row()
    assert report.status == row["status"] == "success"
    assert row["scraper_name"] == name
    assert row["data_summary"]["record_count"] == 3
    assert row["data_summary"]["is_empty_report"] is False
    assert row["data_summary"]["scraper_stats"]["pages"] == 2
    assert re.fullmatch(rf"file://.*/{prefix}/{DATE}/\d{{8}}_\d{{6}}\.json", row["gcs_path"])
    assert rig.file_at(row) == {"data": [make(1), make(2), make(3)],
                                "meta": {"next_cursor": None, "per_page": 100}}
    assert row["completed_at"] >= row["triggered_at"] and row["duration_seconds"] >= 0
    assert row.get("error_type") is None and row.get("error_message") is None
    first, second = rig.upstream.requests_to(path)
    assert first.query == {"dates[]": DATE, "per_page": "100"}
    assert second.query == {"dates[]": DATE, "per_page": "100", "cursor": "7"}
    assert first.headers["Authorization"] == BDL_KEY


@pytest.mark.parametrize(("name", "path", "prefix", "make"), BDL)
def test_an_empty_day_is_no_data_with_an_empty_file(rig: Rig, name: str, path: str,
                                                     prefix: str, make: Record) -> None:
    rig.upstream.on(path, Reply(body=bdl_page([])))
    assert rig.run(name, date=DATE).status == "no_data"
    row = rig.only_row()
    assert row["data_summary"]["record_count"] == 0
    assert row["data_summary"]["is_empty_report"] is True
    assert f"/{prefix}/{DATE}/" in row["gcs_path"]
    assert rig.file_at(row) == {"data": [], "meta": {"next_cursor": None, "per_page": 100}}


@pytest.mark.parametrize(("name", "path", "prefix", "make"), BDL)
def test_an_upstream_that_keeps_failing_is_a_failed_row_without_a_file(
        rig: Rig, name: str, path: str, prefix: str, make: Record) -> None:
    rig.upstream.on(path, Reply(503, b"<html>Service Unavailable</html>"))
    report = rig.run(name, date=DATE)
    row = rig.only_row()
    assert report.status == row["status"] == "failed"
    assert row["error_type"] == "UpstreamHTTPError"
    assert "HTTP 503" in row["error_message"] and "Service Unavailable" in row["error_message"]
    assert row.get("completed_at") is None and row.get("duration_seconds") is None
    assert row.get("gcs_path") is None
    assert row["data_summary"]["record_count"] == 0
    assert len(rig.upstream.requests_to(path)) == RetryPolicy().attempts
    assert list(rig.blobs.root.rglob("*.json")) == []


def test_a_500_then_success_is_retried(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(500, {"error": "boom"}), Reply(body=bdl_page([game(1)])))
    assert rig.run("bdl_games_scraper", date=DATE).status == "success"
    assert len(rig.upstream.requests_to(GAMES)) == 2
    assert rig.only_row()["data_summary"]["scraper_stats"]["http_retries"] == 1


def test_a_404_fails_at_once_without_a_retry(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(404, {"error": "Not Found"}))
    assert rig.run("bdl_games_scraper", date=DATE).status == "failed"
    assert len(rig.upstream.requests_to(GAMES)) == 1
    assert "HTTP 404" in rig.only_row()["error_message"]
    assert rig.sleeps == []


def test_a_429_waits_as_retry_after_says_then_succeeds(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(429, {"error": "Too Many Requests"}, {"Retry-After": "0"}),
                    Reply(body=bdl_page([game(1)])))
    assert rig.run("bdl_games_scraper", date=DATE).status == "success"
    assert rig.sleeps == [0.0]


def test_a_long_retry_after_is_cut_to_the_bound(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(429, {"error": "slow down"}, {"Retry-After": "3600"}))
    assert rig.run("bdl_games_scraper", date=DATE).status == "failed"
    assert rig.sleeps and all(s <= 0.05 for s in rig.sleeps)


def test_malformed_json_fails_and_names_the_problem(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=b'{"data": [{"id": 1,'))
    assert rig.run("bdl_games_scraper", date=DATE).status == "failed"
    row = rig.only_row()
    assert row["error_type"] == "MalformedJSON"
    assert "not JSON" in row["error_message"]
    assert len(rig.upstream.requests_to(GAMES)) == 1, "a bad body is not retried"


def test_json_of_the_wrong_shape_fails(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=[game(1)]))
    assert rig.run("bdl_games_scraper", date=DATE).status == "failed"
    assert rig.only_row()["error_type"] == "UnexpectedResponse"


def test_a_cursor_that_comes_back_fails_instead_of_paging_forever(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)], next_cursor=5)))
    assert rig.run("bdl_games_scraper", date=DATE).status == "failed"
    assert "came back twice" in rig.only_row()["error_message"]
    assert len(rig.upstream.requests_to(GAMES)) == 2


def test_an_unreachable_api_is_retried_then_failed(rig: Rig) -> None:
    dead = Upstream()
    dead.close()  # a port nobody listens on any more
    rig.env["BDL_BASE_URL"] = dead.url
    assert rig.run("bdl_games_scraper", date=DATE).status == "failed"
    row = rig.only_row()
    assert row["error_type"] == "UpstreamUnavailable"
    assert row["data_summary"]["scraper_stats"]["http_requests"] == RetryPolicy().attempts


def test_the_api_key_option_wins_over_the_environment_and_is_not_logged(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    rig.run("bdl_games_scraper", date=DATE, api_key="from-the-request", workflow="morning")
    row = rig.only_row()
    assert rig.upstream.requests_to(GAMES)[0].headers["Authorization"] == "from-the-request"
    assert row["opts"] == {"date": DATE, "workflow": "morning"}
    assert row["workflow"] == "morning"
