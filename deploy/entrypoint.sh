#!/bin/sh
# The container's entrypoint: one image, the process chosen by $SERVICE.
# Why one image: it is built and scanned once, and every service runs the
# same code. An unset or unknown SERVICE fails at boot, loudly,
# instead of serving the wrong thing.
set -eu

PORT="${PORT:-8080}"

case "${SERVICE:-}" in
  relay)
    # One worker: runs are serialised per process anyway, and gRPC clients are
    # built after the fork. --timeout exceeds the relay deadline (default 50 s).
    exec gunicorn --bind ":${PORT}" --workers 1 --threads 4 --timeout 120 \
      'relay.service:app_from_env()'
    ;;
  scrapers)
    # Threads: a scrape mostly waits on upstream APIs. --timeout 0: with
    # threads it is only a heartbeat; Cloud Run's request timeout bounds a run.
    exec gunicorn --bind ":${PORT}" --workers 1 --threads 8 --timeout 0 \
      'scrapers.service:app_from_env()'
    ;;
  processors)
    # Pub/Sub push: one delivery per request; the ack deadline (600 s) bounds it.
    exec gunicorn --bind ":${PORT}" --workers 1 --threads 8 --timeout 0 \
      'processors.service:app_from_env()'
    ;;
  "")
    echo "entrypoint: SERVICE is not set; known services: relay, scrapers, processors" >&2
    exit 64
    ;;
  *)
    echo "entrypoint: unknown SERVICE '${SERVICE}'; known services: relay, scrapers, processors" >&2
    exit 64
    ;;
esac
