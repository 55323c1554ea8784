"""`python -m gateway`: serve the API with uvicorn on the configured host and port."""

import uvicorn

from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
