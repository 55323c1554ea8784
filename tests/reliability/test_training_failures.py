"""Failed or concurrent training runs never damage the registry."""

import contextlib
import os
import signal
import subprocess
import threading

import pytest
from mlflow.tracking import MlflowClient

from model.names import ALIAS, MODEL_NAME
from tests.servers import BIN, ROOT, env, run_training, tracking_server

NAME = MODEL_NAME
REACH_FIT = 300  # seconds a run may take to load and clean 3,000 reviews on a loaded machine


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with tracking_server(tmp_path_factory.mktemp("training-failures")) as uri:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        first = run_training(uri, "max_rows=1200", "preset=seed")
        assert first.returncode == 0, first.stderr[-3000:]
        yield uri, client


def snapshot(client):
    versions = {v.version: v.status for v in client.search_model_versions(f"name='{NAME}'")}
    return versions, client.get_model_version_by_alias(NAME, ALIAS).version


def test_a_run_killed_mid_fit_leaves_alias_and_versions_untouched(registry):
    uri, client = registry
    before = snapshot(client)
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "run",
            ".",
            "--env-manager",
            "local",
            "-P",
            "max_rows=3000",
            "--experiment-name",
            "Sentiment-Analysis",
        ],
        cwd=ROOT,
        env=env(MLFLOW_TRACKING_URI=uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # Bounded: if the run hangs before fitting, the watchdog kills it and the output ends.
    watchdog = threading.Timer(REACH_FIT, kill_group, (proc.pid,))
    watchdog.start()
    try:
        reached = any(line.startswith("[fit]") for line in proc.stdout)
        kill_group(proc.pid)
    finally:
        watchdog.cancel()
        proc.wait(30)
    assert reached, f"the run did not reach the fit phase within {REACH_FIT} s"
    assert snapshot(client) == before


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def test_two_runs_at_once_both_register_and_the_better_on_validation_wins(registry):
    uri, client = registry
    before = {v.version for v in client.search_model_versions(f"name='{NAME}'")}
    results = {}

    def train(preset):
        results[preset] = run_training(uri, "max_rows=1200", f"preset={preset}")

    threads = [threading.Thread(target=train, args=(p,)) for p in ("best", "seed")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for preset, result in results.items():
        assert result.returncode == 0, (preset, result.stderr[-3000:])
    versions = client.search_model_versions(f"name='{NAME}'")
    assert len({v.version for v in versions} - before) == 2
    # Same data, seed and sample for all three, so each was compared on validation F1.
    val_f1 = {v.version: client.get_run(v.run_id).data.metrics["val_f1"] for v in versions}
    production = client.get_model_version_by_alias(NAME, ALIAS)
    assert val_f1[production.version] == max(val_f1.values())
