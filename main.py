"""Run the service: `python main.py` (settings from the environment, `.env` or Zero)."""

import uvicorn

from app.application import create_app
from app.core.config import load_settings


def main() -> None:
    settings = load_settings()
    # Several workers need an import string: each process builds its own app.
    app = "app.application:create_app" if settings.workers > 1 else create_app(settings)
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
    )


if __name__ == "__main__":
    main()
