"""The scraper service (Flask test client) and ``outbox scrape``, with the in-memory store."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from scraper_fixtures import DATE, FAST_RETRIES, Rig

from outbox import cli
from outbox.testing import InMemoryOutboxStore, StoreFaults
from scrapers.fixture_server import Reply, bdl_page, game
from scrapers.registry import REGISTRY
from scrapers.service import app_from_env, create_app

GAMES = "/v1/games"


def client(rig: Rig) -> FlaskClient:
    app = create_app(REGISTRY, rig.store, rig.blobs, env=rig.env, retry=FAST_RETRIES,
                     sleep=rig.sleeps.append)
    return app.test_client()


def test_scrape_runs_the_named_scraper_and_answers_with_its_row(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1), game(2)])))
    response = client(rig).post("/scrape", json={"scraper": "bdl_games_scraper", "date": DATE,
                                                 "api_key": "k", "workflow": "morning"})
    assert response.status_code == 200
    body = response.get_json()
    row = rig.only_row()
    assert body["status"] == "success" and body["record_count"] == 2
    assert body["execution_id"] == row["execution_id"] and body["gcs_path"] == row["gcs_path"]
    assert row["opts"] == {"date": DATE, "workflow": "morning"}
    assert row["triggered_by"] == "scraper-service"


def test_the_old_route_shape_takes_options_from_the_query_or_the_body(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    http = client(rig)
    by_query = http.post(f"/scraper/bdl_games_scraper?date={DATE}")
    by_body = http.post("/scraper/bdl_games_scraper", data=json.dumps({"date": DATE}),
                        content_type="application/octet-stream",
                        headers={"X-CloudScheduler-JobName": "bdl-games-morning"})
    assert (by_query.status_code, by_body.status_code) == (200, 200)
    assert [r["status"] for r in rig.store.rows] == ["success", "success"]
    assert rig.store.rows[1]["triggered_by"] == "scheduler:bdl-games-morning"


@pytest.mark.parametrize(("path", "payload", "said"), [
    ("/scrape", {"scraper": "nope", "date": DATE}, "unknown scraper 'nope'"),
    ("/scrape", {"date": DATE}, "name the scraper"),
    ("/scrape", {"scraper": "bdl_games_scraper", "date": "28-11-2026"}, "YYYY-MM-DD"),
    ("/scrape", {"scraper": "bdl_games_scraper"}, "'date' is required"),
    ("/scrape", {"scraper": "bdl_games_scraper", "date": DATE, "dayte": "x"}, "dayte"),
    ("/scrape", ["bdl_games_scraper"], "JSON object"),
    ("/scraper/nope", {"date": DATE}, "unknown scraper"),
    ("/scraper/bdl_games_scraper", {"scraper": "oddsa_player_props", "date": DATE},
     "the path names"),
])
def test_a_bad_request_is_400_and_writes_no_row(rig: Rig, path: str, payload: Any,
                                                said: str) -> None:
    response = client(rig).post(path, json=payload)
    assert response.status_code == 400
    assert said in response.get_json()["error"]
    assert rig.store.rows == [] and rig.upstream.seen == []
    assert list(rig.blobs.root.rglob("*")) == []


def test_a_body_that_is_not_json_is_400(rig: Rig) -> None:
    response = client(rig).post("/scrape", data=b"date=2026-11-28")
    assert response.status_code == 400 and rig.store.rows == []


def test_a_failed_scrape_is_a_completed_run_200_with_status_failed(rig: Rig) -> None:
    rig.upstream.on(GAMES, Reply(500, {"error": "down"}))
    response = client(rig).post("/scrape", json={"scraper": "bdl_games_scraper", "date": DATE})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "failed" and body["error_type"] == "UpstreamHTTPError"
    assert rig.only_row()["status"] == "failed"


def test_a_log_write_failure_is_500_naming_the_execution_and_the_file(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    rig.store.faults = StoreFaults(fail_appends=10)
    with caplog.at_level(logging.ERROR, "scrapers"):
        response = client(rig).post("/scrape",
                                    json={"scraper": "bdl_games_scraper", "date": DATE})
    assert response.status_code == 500
    body = response.get_json()
    assert body["execution_id"] in body["error"] and body["gcs_path"] in body["error"]
    assert rig.blobs.read(body["gcs_path"]), "the data is there, only the row is missing"
    assert rig.store.rows == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and body["execution_id"] in errors[0].getMessage()


def test_listing_health_and_unknown_routes(rig: Rig) -> None:
    http = client(rig)
    listed = http.get("/scrapers").get_json()["scrapers"]
    assert [s["name"] for s in listed] == REGISTRY.names
    assert http.get("/health").get_json() == {"status": "ok"}
    missing = http.get("/nowhere")
    assert missing.status_code == 404 and "error" in missing.get_json()
    assert http.get("/scrape").status_code == 405


def test_app_from_env_wires_the_bigquery_store_and_the_output(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTBOX_PROJECT", "test-project")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:1")  # never contacted here
    monkeypatch.setenv("OUTBOX_STORAGE", tmp_path.as_uri())
    app = app_from_env()
    assert app.test_client().get("/health").status_code == 200


# -- outbox scrape ----------------------------------------------------------------------


class _Wiring:
    def __init__(self, store: InMemoryOutboxStore) -> None:
        self._store = store

    def store(self, route: Any) -> InMemoryOutboxStore:
        return self._store


def _cli(rig: Rig, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    for key, value in rig.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OUTBOX_PROJECT", "test-project")
    monkeypatch.setattr(cli.Wiring, "build", lambda settings: _Wiring(rig.store))
    return CliRunner().invoke(cli.main, ["scrape", *args], catch_exceptions=False)


def test_outbox_scrape_runs_one_scraper_and_prints_its_row(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.upstream.on(GAMES, Reply(body=bdl_page([game(1)])))
    out = rig.blobs.root.as_uri()
    result = _cli(rig, monkeypatch, "bdl_games_scraper", "--opt", f"date={DATE}",
                  "--output", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    row = rig.only_row()
    assert summary["execution_id"] == row["execution_id"] and summary["status"] == "success"
    assert row["gcs_path"].startswith(out) and row["triggered_by"] == "outbox scrape"
    table = _cli(rig, monkeypatch, "bdl_games_scraper", "--opt", f"date={DATE}",
                 "--output", out)
    assert table.exit_code == 0 and "success" in table.output


def test_outbox_scrape_refuses_bad_options_before_writing(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (["bdl_games_scraper", "--opt", "date=tomorrow"], ["nope"],
                 ["bdl_games_scraper", "--opt", "date"]):
        result = _cli(rig, monkeypatch, *args)
        assert result.exit_code == 2, result.output
    assert rig.store.rows == []


def test_outbox_scrape_exits_1_for_a_failed_run(rig: Rig,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rig.upstream.on(GAMES, Reply(404, {"error": "Not Found"}))
    result = _cli(rig, monkeypatch, "bdl_games_scraper", "--opt", f"date={DATE}",
                  "--output", rig.blobs.root.as_uri(), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"
