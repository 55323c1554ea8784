"""`python -m gateway`: serve the API on the configured host and port."""

from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.server import serve
from gateway.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
