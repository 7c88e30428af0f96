# Production image: runtime dependencies only, non-root, health-checked.
# The embedded PostgreSQL/Redis of `make run` (app/db/embedded.py) is left out on purpose.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8002
RUN useradd --system --uid 10001 --no-create-home --home-dir /srv/bookings bookings
WORKDIR /srv/bookings
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root app ./app
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root main.py migrate.py alembic.ini ./
USER bookings
EXPOSE 8002
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/health', timeout=2)"]
# Migrations run as their own one-shot step (`python migrate.py upgrade`, see docker-compose.yml).
CMD ["python", "main.py"]
