"""A small read-only view of the model registry: which version the alias names, and what it is.

MLflow's client is synchronous, so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gateway.settings import Settings

_ALIAS_MISSING = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (down, unreachable, or answered with an error)."""


@dataclass(frozen=True)
class VersionInfo:
    version: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    registered_at: str | None = None


class Registry:
    def __init__(self, settings: Settings):
        self.name = settings.model_name
        self.alias = settings.model_alias
        self._client = MlflowClient(settings.tracking_uri, settings.tracking_uri)

    async def resolve(self) -> str | None:
        """The version the alias points at, or None while there is none."""
        try:
            found = await asyncio.to_thread(
                self._client.get_model_version_by_alias, self.name, self.alias
            )
        except MlflowException as error:
            if error.error_code in _ALIAS_MISSING:
                return None
            raise RegistryUnavailable(_first_line(error)) from None
        except OSError as error:
            raise RegistryUnavailable(_first_line(error)) from None
        return str(found.version)

    async def describe(self, version: str) -> VersionInfo:
        """Run id, metric-like tags, other tags and registration time; bare if unreachable."""
        try:
            found = await asyncio.to_thread(self._client.get_model_version, self.name, version)
        except (MlflowException, OSError):
            return VersionInfo(version)
        metrics, tags = {}, {}
        for key, value in (found.tags or {}).items():
            try:
                metrics[key] = float(value)
            except ValueError:
                tags[key] = value
        registered = datetime.fromtimestamp(found.creation_timestamp / 1000, UTC)
        return VersionInfo(version, found.run_id or None, metrics, tags, registered.isoformat())

    async def input_example(self, version: str) -> dict[str, Any] | None:
        """The version's `serving_input_example.json`, or None if it has none."""
        uri = f"models:/{self.name}/{version}/serving_input_example.json"
        try:
            return await asyncio.to_thread(_download_json, uri)
        except (MlflowException, OSError, ValueError):
            return None


def _download_json(uri: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp)).read_text())


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
