"""A small read-only view of the model registry: which version the alias names, and what it is.

MLflow's client is synchronous, so every call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gateway.redact import remember, scrub
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
    # Where the version's files come from (`models:/m-<id>` for a LoggedModel).
    source: str | None = None


class Registry:
    def __init__(self, settings: Settings):
        self.name = settings.model_name
        self.alias = settings.model_alias
        remember(settings.tracking_uri)  # its password is taken out of anything shown
        self._client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
        # Threads of its own: registry calls block, and other blocking work (a flood of
        # labels) must not delay noticing a promotion. One for the alias poll and one for a
        # download or description at a time.
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="registry")

    async def _call(self, function, *args, **kwargs):
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def resolve(self) -> str | None:
        """The version the alias points at, or None while there is none."""
        try:
            found = await self._call(self._client.get_model_version_by_alias, self.name, self.alias)
        except MlflowException as error:
            if error.error_code in _ALIAS_MISSING:
                return None
            raise RegistryUnavailable(_first_line(error)) from None
        except OSError as error:
            raise RegistryUnavailable(_first_line(error)) from None
        return str(found.version)

    async def describe(self, version: str) -> VersionInfo | None:
        """Run id, metric-like tags, other tags, registration time and source.

        None if the registry is unreachable."""
        try:
            found = await self._call(self._client.get_model_version, self.name, version)
        except (MlflowException, OSError):
            return None
        metrics, tags = {}, {}
        for key, value in (found.tags or {}).items():
            try:
                metrics[key] = float(value)
            except ValueError:
                tags[key] = value
        registered = datetime.fromtimestamp(found.creation_timestamp / 1000, UTC)
        return VersionInfo(
            version,
            found.run_id or None,
            metrics,
            tags,
            registered.isoformat(),
            found.source or None,
        )

    async def download(self, version: str, into: Path) -> Path:
        """Copy the version's model files under ``into``; return the directory holding MLmodel."""
        uri = f"models:/{self.name}/{version}"
        try:
            local = await self._call(
                mlflow.artifacts.download_artifacts, artifact_uri=uri, dst_path=str(into)
            )
        except (MlflowException, OSError) as error:
            raise RegistryUnavailable(_first_line(error)) from None
        return Path(local)


def label(version: str) -> str:
    """A version as answers and metrics name it: "v3" for registry version 3; anything else
    (an external server's "unknown") as is."""
    return f"v{version}" if version.isdigit() else version


def _first_line(error: Exception) -> str:
    """The error as the gateway may show it: one line, never with the URI's credentials."""
    text = scrub(str(error)).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]
