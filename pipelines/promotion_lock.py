"""One promotion at a time, from any machine: the registry's unique model names as a lock.

The registry has no compare-and-set on aliases: two runs that each read `production`, decide
and move it can leave the worse model serving. Creating a registered model is atomic (a
second create of the same name fails), so `<model>.promotion-lock`, held while a run reads the
champion, decides and moves the alias, serialises them. A lock older than STALE seconds (its
holder died) is broken.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines.errors import LockTimeout

STALE = 600.0
WAIT = 300.0


def lock_name(model_name: str) -> str:
    return f"{model_name}.promotion-lock"


@contextmanager
def held(
    model_name: str,
    client: MlflowClient | None = None,
    wait: float = WAIT,
    stale: float = STALE,
    poll: float = 0.5,
) -> Iterator[None]:
    client = client or MlflowClient()
    name = lock_name(model_name)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            client.create_registered_model(
                name,
                tags={"holder": holder, "since": f"{time.time():.3f}"},
                description=f"Held while a promotion of {model_name} decides; deleted after.",
            )
            break
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        since, other = _holder(client, name)
        if since is not None and time.time() - since > stale:
            with suppress(MlflowException):  # another waiter may break it first
                client.delete_registered_model(name)
            continue
        if time.monotonic() > deadline:
            raise LockTimeout(
                f"another promotion ({other}) has held {name} for longer than {wait:.0f} s; "
                f"if it died, delete the registered model {name}"
            )
        if not announced:
            print(f"  waiting for another promotion of {model_name} ({other}) to finish")
            announced = True
        time.sleep(poll)
    try:
        yield
    finally:
        with suppress(MlflowException):
            client.delete_registered_model(name)


def _holder(client: MlflowClient, name: str) -> tuple[float | None, str]:
    try:
        tags = client.get_registered_model(name).tags or {}
    except MlflowException:
        return None, "gone"  # released meanwhile: try again
    try:
        return float(tags.get("since", "")), tags.get("holder", "unknown")
    except ValueError:
        return 0.0, tags.get("holder", "unknown")  # unreadable: treat as stale
