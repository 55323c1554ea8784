"""What every deployment runs before the tracking server starts: the store's schema, and, with
the registry's permissions on, the user store and its accounts (tracking_server/access.py).

`python -m tracking_server.prepare` is Compose's one-shot and Kubernetes' init container;
`make up` runs the same in the server's own process (stack/tracking.py). It reads
MLFLOW_BACKEND_STORE_URI (the tracking store), MLFLOW_AUTH_CONFIG_PATH (set: the permissions
are on, and its ``database_uri`` is the user store) and REGISTRY_PASSWORDS_DIR (a file per
account; default /run/secrets/registry).
"""

from __future__ import annotations

import os
from pathlib import Path

from tracking_server import access
from tracking_server.store import create_database, shown, upgrade_schema

PASSWORDS_DIR = "/run/secrets/registry"


def main() -> None:
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    upgrade_schema(uri)
    if not os.environ.get("MLFLOW_AUTH_CONFIG_PATH"):
        return
    from mlflow.server.auth.config import read_auth_config

    users = read_auth_config().database_uri
    create_database(users)
    folder = Path(os.environ.get("REGISTRY_PASSWORDS_DIR") or PASSWORDS_DIR)
    done = access.prepare(uri, users, folder)
    what = "; ".join(done) if done else "nothing to create"
    print(f"Registry permissions (users in {shown(users)}): {what}", flush=True)


if __name__ == "__main__":
    main()
