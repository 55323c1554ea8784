"""Each model version's files, downloaded from the registry once and served from local disk.

A scoring server started from a local directory needs nothing from the registry, so one that
crashes while the registry is down can be restarted all the same. Directories are named
`<version>-<digest of registry and source>`: a registry rebuilt from scratch reuses version
numbers, never sources.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from gateway.serving.registry import Registry, RegistryUnavailable, VersionInfo
from gateway.settings import Settings

log = logging.getLogger("gateway.cache")


class ModelCache:
    def __init__(self, settings: Settings, registry: Registry):
        self.root = settings.model_cache_dir / re.sub(r"[^\w.-]", "_", settings.model_name)
        self._registry = registry
        self._tracking_uri = settings.tracking_uri
        # What this process has on disk, by version: all that counts while the registry is down.
        self._known: dict[str, Path] = {}

    async def local_copy(self, version: str, info: VersionInfo | None) -> Path:
        """The directory holding the version's MLmodel, downloading it first if need be.

        ``info`` is the version as the registry describes it now (None: unreachable).
        Raises RegistryUnavailable when the files are neither here nor downloadable.
        """
        if info is None or not info.source:
            known = self.known(version)
            if known is not None:
                return known
            raise RegistryUnavailable(f"v{version} is not cached and the registry is unreachable")
        digest = hashlib.sha256(f"{self._tracking_uri}\n{info.source}".encode()).hexdigest()
        final = self.root / f"{version}-{digest[:16]}"
        if not (final / "MLmodel").is_file():
            await self._download(version, final)
        self._known[version] = final
        return final

    def known(self, version: str) -> Path | None:
        """The copy of the version this process brought up, if it is still on disk."""
        path = self._known.get(version)
        return path if path is not None and (path / "MLmodel").is_file() else None

    async def _download(self, version: str, final: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        try:
            local = await self._registry.download(version, staging)
            if not (local / "MLmodel").is_file():
                raise RegistryUnavailable(f"v{version} has no MLmodel file")
            shutil.rmtree(final, ignore_errors=True)  # a copy left incomplete
            try:
                os.rename(local, final)
            except OSError:
                # Another gateway sharing this directory got there first.
                if not (final / "MLmodel").is_file():
                    raise
            log.info("v%s downloaded to %s", version, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def prune(self, keep: set[str]) -> list[Path]:
        """Delete every copy but those of the versions in ``keep`` (the live and the previous
        one), so the cache does not grow with each promotion. Returns what was deleted."""
        deleted = []
        for path in self.root.glob("*-*"):
            version = path.name.split("-", 1)[0]
            if path.name.startswith(".") or not path.is_dir():
                continue  # a download under way
            if version in keep and self._known.get(version) == path:
                continue
            shutil.rmtree(path, ignore_errors=True)
            if self._known.get(version) == path:
                del self._known[version]
            deleted.append(path)
        if deleted:
            log.info("model cache: deleted %s", ", ".join(p.name for p in deleted))
        return deleted
