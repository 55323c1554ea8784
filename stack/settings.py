"""Settings of the local stack that `make up` runs, read from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from model.names import ALIAS, MODEL_NAME, TRAINING_EXPERIMENT


class StackSettings(BaseSettings):
    mlflow_port: int = 5000
    gateway_port: int = 8000
    scoring_port: int = 5001
    state_dir: Path = Path("mlruns")
    # The tracking server's stores (the variables `mlflow server` reads). Unset: a SQLite file
    # and an artifact folder under state_dir. A database URI may hold a password: it reaches
    # the tracking server through its environment only, and is shown without the password.
    mlflow_backend_store_uri: SecretStr = SecretStr("")
    mlflow_artifacts_destination: str = ""
    model_name: str = MODEL_NAME
    model_alias: str = ALIAS
    experiment_name: str = TRAINING_EXPERIMENT
    # Seconds to wait for each server to answer its health check.
    start_timeout: float = 120.0
    # Gateways behind one nginx on gateway_port (`make up GATEWAY_REPLICAS=3`); 1: the gateway
    # itself listens on gateway_port and nginx is not needed.
    gateway_replicas: int = Field(1, ge=1)
    # With several: replica i listens on replica_port + i - 1 (0: free ports), its scoring
    # servers on scoring_port + 3(i - 1) to + 3(i - 1) + 2.
    replica_port: int = Field(8001, ge=0)
    # The nginx executable, looked up on PATH and then in /usr/sbin.
    nginx_bin: str = "nginx"
    # A replica that exits is started again after this many seconds, doubling up to the
    # maximum while it keeps failing before it is ready.
    replica_restart_backoff: float = Field(1.0, gt=0)
    replica_restart_backoff_max: float = Field(30.0, gt=0)
    # MLflow's usage telemetry (sent to MLflow's servers): off in every process the stack
    # starts unless MLFLOW_DISABLE_TELEMETRY=false (docs/deployment.md#telemetry).
    mlflow_disable_telemetry: bool = True
    # REGISTRY_AUTH=true: the registry's permissions, as in Compose and Kubernetes. The tracking
    # server runs MLflow's basic-auth app: a login for the UI and the API, and an account per
    # job (tracking_server/access.py), whose passwords are made once under passwords_dir.
    registry_auth: bool = False

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def backend_store_uri(self) -> str:
        uri = self.mlflow_backend_store_uri.get_secret_value()
        return uri or f"sqlite:///{self.state_dir.resolve() / 'mlflow.db'}"

    @property
    def artifacts_destination(self) -> str:
        return self.mlflow_artifacts_destination or str(self.state_dir.resolve() / "artifacts")

    @property
    def passwords_dir(self) -> Path:
        return self.state_dir.resolve() / "secrets" / "registry"

    @property
    def telemetry_env(self) -> dict[str, str]:
        """What every child gets: both variables MLflow 3.17 reads to stay silent, or, when the
        operator turned telemetry on, MLFLOW_DISABLE_TELEMETRY=false alone (a DO_NOT_TRACK of
        their own still wins, as MLflow decides)."""
        if self.mlflow_disable_telemetry:
            return {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        return {"MLFLOW_DISABLE_TELEMETRY": "false"}
