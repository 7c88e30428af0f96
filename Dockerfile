# Production image: runtime dependencies only, installed from the hash-locked requirements.lock
# (`make lock` regenerates it from requirements.txt), run as a numeric non-root user.
# The embedded PostgreSQL/Redis of `make run` (app/db/embedded.py) is left out on purpose.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=8002
RUN groupadd --system --gid 10001 bookings \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /srv/bookings bookings
WORKDIR /srv/bookings
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root app ./app
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root main.py migrate.py alembic.ini ./
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8002
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/health', timeout=2)"]
# Migrations run as their own one-shot step (`python migrate.py upgrade`, see docker-compose.yml).
# Settings come from the environment and from files in /run/secrets (compose and Kubernetes secrets).
CMD ["python", "main.py"]
