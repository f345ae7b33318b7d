# One image for every nba-outbox service; deploy/entrypoint.sh picks the
# process from $SERVICE (today: relay). Build: see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080

WORKDIR /app

# Only what the package needs: no tests, no dev extras, no credentials.
COPY pyproject.toml README.md ./
COPY outbox ./outbox
COPY relay ./relay
COPY processors ./processors
COPY scrapers ./scrapers
COPY deploy/entrypoint.sh /usr/local/bin/nba-outbox-entrypoint

RUN pip install . \
    && chmod 0755 /usr/local/bin/nba-outbox-entrypoint \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app

# Numeric, so Kubernetes-style runAsNonRoot checks can verify it. The home
# directory is writable because recent gunicorn (27.x) puts its control socket
# there; without one it logs an ERROR at every boot.
USER 10001:10001

EXPOSE 8080
CMD ["/usr/local/bin/nba-outbox-entrypoint"]
