"""A finished run another stage opens again (the evaluate stage, for MLflow's fluent
``log_model``), closed as it was after, even when the store went away in between."""

from __future__ import annotations

import contextlib
import socket

from study.processes import alive
from study.tracking.naming import process_tags

REOPENED_TAG = "reopened_by"  # a finished run another stage opened again: how to close it as it was


@contextlib.contextmanager
def reopened(client, run):
    """A finished ``run`` opened again for MLflow's fluent API (``mlflow.pytorch.log_model`` writes
    into the active run), then closed with the status and end it had. What that was goes into a
    tag first: a store lost before the close leaves the run RUNNING, and the next evaluate or
    report closes it as it was (``settle_reopened``) instead of taking it for a training that died."""
    import json

    import mlflow

    run_id, status, end_time = run.info.run_id, run.info.status, run.info.end_time
    client.set_tag(run_id, REOPENED_TAG, json.dumps({"status": status, "end_time": end_time, **process_tags()}))
    try:
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            yield
    finally:
        client.set_terminated(run_id, status, end_time=end_time)
        with contextlib.suppress(Exception):  # a tag left on a closed run is read by no one: never hide the error
            client.delete_tag(run_id, REOPENED_TAG)


def reopened_by_live_process(run) -> bool:
    """Whether a stage of this host that is still alive holds ``run`` reopened."""
    import json

    if REOPENED_TAG not in run.data.tags:
        return False
    was = json.loads(run.data.tags[REOPENED_TAG])
    return was.get("host") == socket.gethostname() and alive(int(was.get("pid", 0)), was.get("pid_started", ""))


def settle_reopened(client, run):
    """``run`` as it was before a stage reopened it and lost the store before closing it (its
    process gone); ``run`` itself otherwise, and None for None."""
    import json

    if run is None or run.info.status != "RUNNING" or REOPENED_TAG not in run.data.tags:
        return run
    if reopened_by_live_process(run):
        return run  # still being written by the process that reopened it
    was = json.loads(run.data.tags[REOPENED_TAG])
    client.set_terminated(run.info.run_id, was["status"], end_time=was["end_time"])
    client.delete_tag(run.info.run_id, REOPENED_TAG)
    return client.get_run(run.info.run_id)
