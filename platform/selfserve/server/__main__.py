"""``python -m selfserve.server``: run the API with uvicorn on the configured address."""

from __future__ import annotations

import uvicorn

from selfserve.server import create_app
from selfserve.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.api_port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
