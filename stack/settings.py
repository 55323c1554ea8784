"""Settings of the local stack that `make up` runs, read from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from model.names import ALIAS, MODEL_NAME


class StackSettings(BaseSettings):
    mlflow_port: int = 5000
    gateway_port: int = 8000
    scoring_port: int = 5001
    state_dir: Path = Path("mlruns")
    model_name: str = MODEL_NAME
    model_alias: str = ALIAS
    experiment_name: str = "Sentiment-Analysis"
    # Seconds to wait for each server to answer its health check.
    start_timeout: float = 120.0

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"
