"""Every gateway setting, typed, read once from the environment (or a `.env` file)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from tempfile import gettempdir

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.names import ALIAS, CHALLENGER, MODEL_NAME

# Example keys from docs and old compose files: refused, since anyone could guess them.
PLACEHOLDER_KEYS = {"change-me", "changeme", "change_me", "secret", "password", "api-key", "apikey"}


class Settings(BaseSettings):
    """See `.env.example` for what each one does."""

    # Errors name the setting, never its value: the API keys are secrets. `validate_by_name`:
    # the one field with aliases (tracking_uri) is also given by its name in the constructor,
    # which mypy's pydantic plugin needs to type it; its variables stay the two below.
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,
        validate_by_name=True,
    )

    tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "GATEWAY_TRACKING_URI"),
    )
    model_name: str = MODEL_NAME
    model_alias: str = ALIAS
    poll_interval: float = Field(5.0, gt=0)
    registry_timeout: int = Field(5, ge=1)

    host: str = "127.0.0.1"
    port: int = 8000
    # This gateway's name among several behind one address, in /info and the X-Gateway-Replica
    # header of every answer; empty: <host name>:<port>.
    replica: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9._:@/-]*$")
    # Seconds a client has to send a whole request, from connecting or from its last answer.
    request_read_timeout: float = Field(10.0, gt=0)
    # Open client connections; over it, the one waiting longest for a request is closed.
    max_client_connections: int = Field(1000, ge=1)
    log_level: str = "info"
    # Comma-separated; empty turns authentication off. A secret: never shown by repr or logs.
    api_keys: SecretStr = SecretStr("")
    # Comma-separated origins allowed to call the API from a browser; empty: no CORS headers.
    cors_origins: str = ""

    scoring_url: str | None = None
    scoring_host: str = "127.0.0.1"
    scoring_port: int = 0
    scoring_workers: int = Field(1, ge=1)
    # A second server of the live version that takes over at once if the live one dies (a
    # cold restart takes 10-15 s); until then it scores half of each large batch (below).
    # Costs one more model in memory.
    standby: bool = True
    # A batch of at least this many texts is split between the live server and its ready
    # standby, half each, scored on both cores at once; 0: one call to the live server.
    batch_split_rows: int = Field(200, ge=0)
    scoring_log_dir: Path = Path(gettempdir()) / "sentiment-gateway"
    model_cache_dir: Path = Path(gettempdir()) / "sentiment-gateway" / "models"
    start_timeout: float = Field(120.0, gt=0)
    drain_timeout: float = Field(30.0, ge=0)
    restart_backoff: float = Field(1.0, gt=0)
    restart_backoff_max: float = Field(60.0, gt=0)
    # The live server and its standby are pinged this often; after `ping_failures` pings in a
    # row unanswered within `ping_timeout` the server counts as hung: it is killed and replaced.
    ping_interval: float = Field(1.0, gt=0)
    ping_timeout: float = Field(2.0, gt=0)
    ping_failures: int = Field(3, ge=1)
    # The scoring servers' output: one file, rotated at this size, with this many old ones kept.
    scoring_log_max_bytes: int = Field(10_000_000, ge=1000)
    scoring_log_backups: int = Field(3, ge=0)
    smoke_positive: str = "An absolutely wonderful film, brilliant acting and a moving story."
    smoke_negative: str = "Awful, boring and a complete waste of time. The worst film ever."

    request_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(8, ge=1)
    batching: bool = True
    batch_max_rows: int = Field(64, ge=1)
    # Batched calls in flight at once; by default one per scoring worker.
    batch_max_calls: int | None = Field(None, ge=1)
    # Texts waiting for a call slot; past it /predict answers 503 at once.
    max_queue: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_000_000, ge=1)

    # The second alias the gateway follows: its version gets a scoring server of its own that
    # sees a copy of the traffic (the shadow) and answers nobody; empty: no challenger.
    challenger_alias: str = CHALLENGER
    # Share of /predict and /predict/batch requests mirrored to the challenger.
    shadow_fraction: float = Field(1.0, ge=0.0, le=1.0)
    # Texts waiting to be mirrored; past it new ones are shed (and counted), never waited for.
    shadow_queue: int = Field(256, ge=1)
    # Share of /predict and /predict/batch requests the challenger answers (the canary), split
    # by X-Canary-Key or X-Request-ID; a challenger that fails drops out at once.
    canary_fraction: float = Field(0.0, ge=0.0, le=1.0)
    # Seconds the challenger gets to answer a canary request (then production answers it),
    # and how long a challenger that failed or was too slow stays out of the canary.
    canary_timeout: float = Field(2.0, gt=0)
    canary_backoff: float = Field(60.0, ge=0)

    # Monitoring: the prediction log and the feedback labels (monitoring/log_store). By default
    # SQLite files in monitor_dir (predictions/<replica>/*.sqlite and feedback.sqlite), for
    # gateways on one host; with a postgresql:// URI (the password may come from PGPASSWORD)
    # one database that gateways on many hosts share.
    monitor_dir: Path = Path(gettempdir()) / "sentiment-gateway" / "monitoring"
    prediction_log_uri: SecretStr | None = None
    # Off: no answer is recorded anywhere (nor can be labelled); the live gauges still work.
    prediction_log: bool = True
    # Predictions per model version in the live window the sentiment_* gauges describe.
    monitor_window: int = Field(1000, ge=1)
    # Review text in the prediction log: off, so that no file the gateway writes holds any.
    log_texts: bool = False
    # A new log file once the current one reaches this size or age (seconds); files last
    # written more than the retention ago are deleted (feedback can only name what is kept).
    monitor_log_max_bytes: int = Field(50_000_000, ge=10_000)
    monitor_log_max_age: float = Field(86_400.0, gt=0)
    monitor_log_retention_days: float = Field(30.0, gt=0)
    # Answers waiting to be logged; past it they are dropped (and counted), never waited for.
    monitor_queue: int = Field(10_000, ge=1)
    # Answers held in memory while the store refuses writes (a database restart); past it the
    # oldest are dropped (and counted).
    monitor_log_buffer: int = Field(100_000, ge=1)

    # MLflow's usage telemetry (sent to MLflow's servers), in the gateway and its scoring
    # servers: off unless MLFLOW_DISABLE_TELEMETRY=false, MLflow's own variable.
    mlflow_disable_telemetry: bool = Field(
        True, validation_alias=AliasChoices("MLFLOW_DISABLE_TELEMETRY")
    )

    @field_validator("api_keys")
    @classmethod
    def _no_placeholder_key(cls, keys: SecretStr) -> SecretStr:
        if {k.lower() for k in _split(keys.get_secret_value())} & PLACEHOLDER_KEYS:
            raise ValueError("GATEWAY_API_KEYS holds a placeholder key; set your own key(s)")
        return keys

    @model_validator(mode="after")
    def _name_the_replica(self) -> Settings:
        if not self.replica:
            self.replica = f"{socket.gethostname()}:{self.port}"
        return self

    @property
    def batch_calls(self) -> int:
        return self.batch_max_calls or self.scoring_workers

    @property
    def keys(self) -> list[str]:
        return _split(self.api_keys.get_secret_value())

    @property
    def origins(self) -> list[str]:
        return _split(self.cors_origins)

    def export_mlflow_env(self) -> None:
        """Point MLflow (here and in child processes) at the registry, failing fast, with its
        usage telemetry off unless turned on.

        MLflow's client retries a dead tracking server for minutes by default; the
        gateway would rather poll again on its own schedule.
        """
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.registry_timeout)
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        os.environ.update(self.telemetry_env)

    @property
    def telemetry_env(self) -> dict[str, str]:
        """Both variables MLflow 3.17 reads to send no usage telemetry, or, when the operator
        turned it on, MLFLOW_DISABLE_TELEMETRY=false alone (a DO_NOT_TRACK of their own still
        wins, as MLflow decides)."""
        if self.mlflow_disable_telemetry:
            return {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
        return {"MLFLOW_DISABLE_TELEMETRY": "false"}

    def child_env(self) -> dict[str, str]:
        """The scoring server's environment: ours, with this interpreter's bin first on PATH.

        Its per-request access log is off: the gateway logs every request already. MLflow's
        usage telemetry is off there as here (`telemetry_env`). The API keys and the log
        store's login stay here.
        """
        env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=self.tracking_uri,
            UVICORN_ACCESS_LOG="false",
            **self.telemetry_env,
        )
        for secret in ("GATEWAY_API_KEYS", "GATEWAY_PREDICTION_LOG_URI", "PGPASSWORD"):
            env.pop(secret, None)  # the scoring server has no use for them
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
