"""JSON error answers shared by the three Flask services.

Callers (Cloud Scheduler, Pub/Sub push, operators with curl) read JSON, so a
404 or 405 answers in JSON too, with its headers (``Allow`` on a 405) kept.
"""

from __future__ import annotations

import json

from flask import Flask, Response
from werkzeug.exceptions import HTTPException


def json_http_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = exc.get_response()
        response.set_data(json.dumps({"error": exc.description or exc.name}))
        response.content_type = "application/json"
        return response  # type: ignore[return-value]
