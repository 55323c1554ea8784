"""Who may do what in the registry: the accounts of the tracking server's basic-auth app,
made before its first start and left alone after.

MLflow's basic-auth app (`mlflow server --app-name basic-auth`) keeps users and grants in a
database of its own, named by ``database_uri`` in the file MLFLOW_AUTH_CONFIG_PATH points to.
A request without credentials gets 401. A signed-in user may read everything
(``default_permission = READ``) and write only what a grant allows (403 otherwise), so each
account below holds the grants of its one job and nothing else.

MLflow grants per registered model, not per alias: the EDIT that lets the monitor tag versions
and move ``challenger`` would let it move ``production`` too (its code never does). The
experiments and the model are created here, by no account, so that none becomes their owner
(MANAGE) by creating them first.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from model.names import MODEL_NAME, MONITORING_EXPERIMENT, TRAINING_EXPERIMENT

ADMIN = "admin"
# The Flask session key of the server's login pages (MLFLOW_FLASK_SERVER_SECRET_KEY): one
# more file of the same folder.
SERVER_KEY = "flask-secret-key"


@dataclass(frozen=True)
class Account:
    name: str
    why: str
    experiments: tuple[tuple[str, str], ...] = ()  # (experiment name, permission)
    model: str | None = None  # the permission on MODEL_NAME


ACCOUNTS = (
    Account(
        "trainer",
        "runs training and tuning, registers versions, moves production with promote=if_better",
        experiments=((TRAINING_EXPERIMENT, "EDIT"),),
        model="EDIT",
    ),
    Account(
        "monitor",
        "logs its checks, tags versions, retrains a challenger on feedback",
        experiments=((MONITORING_EXPERIMENT, "EDIT"), (TRAINING_EXPERIMENT, "EDIT")),
        model="EDIT",
    ),
    Account("gateway", "reads the registry and downloads the versions it serves"),
    Account("promoter", "a person who moves production in the UI", model="EDIT"),
)
NAMES = (ADMIN, *(account.name for account in ACCOUNTS))


def read_passwords(folder: Path) -> dict[str, str]:
    """Each account's password, from the file of its name in ``folder`` (a mounted secret)."""
    missing = [name for name in NAMES if not (folder / name).is_file()]
    if missing:
        raise SystemExit(
            f"The registry's passwords are missing from {folder}: {', '.join(missing)} "
            "(one file per account, each holding its password)."
        )
    return {name: (folder / name).read_text().strip() for name in NAMES}


def generate(folder: Path) -> None:
    """The files `make up` keeps under its state folder, made once, readable by their owner
    only: a password per account and the server's session key."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for name in (*NAMES, SERVER_KEY):
        path = folder / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(24))


def prepare(backend_store_uri: str, auth_database_uri: str, folder: Path) -> list[str]:
    """Create what is missing: the experiments and the model, the admin, each account with its
    grants. Existing users keep their passwords, existing grants their level. Returns what was
    created, in words (nothing on later starts)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
    from mlflow.store.model_registry.sqlalchemy_store import (
        SqlAlchemyStore as RegistryStore,
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    passwords = read_passwords(folder)
    done: list[str] = []
    # The server serves artifacts: experiments keep them under its proxy (mlflow-artifacts:/).
    tracking = TrackingStore(backend_store_uri, "mlflow-artifacts:/")
    experiments = {}
    for name in (TRAINING_EXPERIMENT, MONITORING_EXPERIMENT):
        found = tracking.get_experiment_by_name(name)
        if found is None:
            experiments[name] = tracking.create_experiment(name)
            done.append(f"experiment {name}")
        else:
            experiments[name] = found.experiment_id
    registry = RegistryStore(backend_store_uri)
    try:
        registry.get_registered_model(MODEL_NAME)
    except MlflowException:
        registry.create_registered_model(MODEL_NAME)
        done.append(f"registered model {MODEL_NAME}")

    users = AuthStore()
    users.init_db(auth_database_uri)
    if not users.has_user(ADMIN, use_primary=True):
        users.create_user(ADMIN, passwords[ADMIN], is_admin=True)
        done.append(f"user {ADMIN} (admin)")
    for account in ACCOUNTS:
        if not users.has_user(account.name, use_primary=True):
            users.create_user(account.name, passwords[account.name])
            done.append(f"user {account.name}")
        for experiment, permission in account.experiments:
            try:
                users.get_experiment_permission(experiments[experiment], account.name)
            except MlflowException:
                users.create_experiment_permission(
                    experiments[experiment], account.name, permission
                )
                done.append(f"{permission} on experiment {experiment} for {account.name}")
        if account.model:
            try:
                users.get_registered_model_permission(MODEL_NAME, account.name)
            except MlflowException:
                users.create_registered_model_permission(MODEL_NAME, account.name, account.model)
                done.append(f"{account.model} on {MODEL_NAME} for {account.name}")
    return done
