"""A training's MLflow run from start to end: opened with its params and tags (so a run that
dies still says what it was), each epoch logged as it ends (held in memory while the store
is away), ended FINISHED, KILLED or FAILED; runs left RUNNING by dead processes swept.
``NullRun`` is the no-op twin for ``--no-mlflow``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path

from study.errors import Interrupted, StageError
from study.metrics import EPOCH_METRICS, SUMMARY_METRICS
from study.processes import alive
from study.provenance import now_ms
from study.tracking.content import dataset_input, log_dataset, log_environment
from study.tracking.naming import SEQUENCE_TAG, description, git_commits, process_tags, run_name, run_params, run_tags
from study.tracking.reopen import REOPENED_TAG, reopened_by_live_process, settle_reopened
from study.tracking.store import out_of_space, retry_busy, store_error, store_label, tracking_uri


def owned_by_live_process(run) -> bool:
    """Whether a RUNNING run belongs to a process of this host that is still alive."""
    tags = run.data.tags
    pid = int(tags.get("pid", "0") or 0)
    return tags.get("host") == socket.gethostname() and bool(pid) and alive(pid, tags.get("pid_started", ""))


def sweep_orphans(client, experiment_id: str, keep: str | None = None) -> list[str]:
    """End as KILLED the runs of this experiment left RUNNING by a process of this host that no
    longer exists (SIGKILL, power loss), tagged so. Runs of live processes, of other hosts,
    and ``keep`` (the run being resumed) are left alone."""
    host = socket.gethostname()
    lines = []
    for run in client.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and "
                                  f"tags.host = '{host}'", max_results=1000):
        tags, run_id = run.data.tags, run.info.run_id
        pid = int(tags.get("pid", "0") or 0)
        if run_id == keep or not pid or owned_by_live_process(run) or reopened_by_live_process(run):
            continue  # a live training's, or a finished one a live evaluate holds open to log its model
        if REOPENED_TAG in tags:  # finished, reopened by an evaluate that died: closed as it was, not killed
            settle_reopened(client, run)
            continue
        client.set_tag(run_id, "ended_by", f"sweep at a later start: its process {pid} on {host} had died "
                       "without ending it (killed or power loss)")
        client.set_terminated(run_id, "KILLED")
        lines.append(f"ended MLflow run {run_id} ({tags.get('mlflow.runName', '?')}) as KILLED: its process "
                     f"{pid} on {host} no longer exists")
    return lines



class NullRun:
    """The no-op twin of ``TrainingRun`` (``--no-mlflow``)."""

    run_id = None

    def log_epoch(self, record: dict) -> None:
        pass

    def finish(self, record: dict, artifacts: list[Path]) -> None:
        pass


class TrackingOffline(StageError):
    """The tracking store went away and did not come back before the training ended."""


class TrainingRun:
    """A training's run: epochs are logged as they end; while the store is unreachable
    they wait in memory (and in the saved training state) and go in once it answers."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.pending: list[dict] = []
        self.offline_since: int | None = None
        self.disk_full: str | None = None  # the first failure's line when it was a full disk (store.out_of_space)

    def _flush(self) -> bool:
        from mlflow.entities import Metric

        if not self.pending:
            return True
        now = now_ms()
        metrics = [Metric(k, float(r[k]), now, r["epoch"]) for r in self.pending for k in EPOCH_METRICS]
        try:
            for start in range(0, len(metrics), 1000):  # MLflow's batch limit; a batch sent twice is deduplicated
                retry_busy(lambda start=start: self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000]))
        except Exception as err:
            if self.offline_since is None:
                self.offline_since = self.pending[0]["epoch"]
                self.disk_full = out_of_space(tracking_uri(), err)
                problem = self.disk_full or f"MLflow store {store_label(tracking_uri())} unreachable " \
                                            f"({type(err).__name__})"
                print(f"warning: {problem} at epoch {self.offline_since}; training goes on, its metrics "
                      "wait here", file=sys.stderr)
            return False
        if self.offline_since is not None:
            print(f"MLflow store is back: logged epochs {self.pending[0]['epoch']}-{self.pending[-1]['epoch']}",
                  file=sys.stderr)
            self.offline_since = None
        self.pending.clear()
        return True

    def log_epoch(self, record: dict) -> None:
        self.pending.append(record)
        self._flush()

    def catch_up(self, history: list[dict]) -> None:
        """Log the epochs of ``history`` the run lacks (a resumed run, a store that was down)."""
        try:
            logged = {m.step for m in self.client.get_metric_history(self.run_id, "test_acc")}
        except Exception:
            logged = set()
        self.pending = [h for h in history if h["epoch"] not in logged] + self.pending
        self._flush()

    def finish(self, record: dict, artifacts: list[Path]) -> None:
        from mlflow.entities import Metric, RunTag

        now = now_ms()
        try:
            if not self._flush():
                raise ConnectionError("still unreachable")
            summary = [Metric(k, float(record["summary"][k]), now, 0) for k in SUMMARY_METRICS]
            retry_busy(lambda: self.client.log_batch(self.run_id, metrics=summary,
                                                      tags=[RunTag("mlflow.note.content", description(record))]))
            for path in artifacts:
                retry_busy(lambda path=path: self.client.log_artifact(self.run_id, str(path)))
            log_environment(self.client, self.run_id, record)
        except Exception as err:
            full = out_of_space(tracking_uri(), err) or self.disk_full
            problem = full or f"MLflow store {store_label(tracking_uri())} is unreachable ({type(err).__name__})"
            again = "free space there and rerun `dvc repro`" if full else "rerun `dvc repro` once the store is back"
            raise TrackingOffline(
                f"{problem}, so run {self.run_id} is not complete there; the training is saved locally "
                f"(outputs/{record['recipe']['model']} and its training state): {again} to log it without "
                "training again") from err


def next_sequence(client, experiment_id: str) -> str:
    """The next number of the experiment's runs, one more than the highest yet (zero-padded, so
    the store orders the tag as a number): "the latest run" by the order runs were opened,
    whatever the clocks of the machines that opened them said. Two runs opened at the same
    instant may share one; their start times then decide."""
    from mlflow.entities import ViewType

    newest = client.search_runs([experiment_id], filter_string=f"tags.{SEQUENCE_TAG} LIKE '%'",
                                run_view_type=ViewType.ALL,  # a deleted run's number is never given again
                                order_by=[f"tags.{SEQUENCE_TAG} DESC"], max_results=1)
    last = int(newest[0].data.tags[SEQUENCE_TAG]) if newest else 0
    return f"{last + 1:012d}"


def open_run(client, experiment_id: str, record: dict, start_time: int | None = None, extra_tags=None):
    from mlflow.entities import Param

    tags = {**run_tags(record), **(extra_tags or {}), SEQUENCE_TAG: next_sequence(client, experiment_id)}

    run = client.create_run(experiment_id, start_time=start_time or now_ms(), tags=tags,
                            run_name=run_name(record["recipe"]))
    try:
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in run_params(record).items()])
        log_dataset(client, run.info.run_id, dataset_input(record, "training"))
    except Exception:  # a run that could not be opened whole is not left RUNNING
        with contextlib.suppress(Exception):
            client.set_terminated(run.info.run_id, status="FAILED")
        raise
    return run.info.run_id


def _reopen(client, experiment_id: str, run_id: str, epochs_done: int, record: dict,
            owner: dict[str, str]) -> str | None:
    """Reopen a resumed training's run in this store, or None if the store lacks it; its tags
    then name every commit the training ran under."""
    try:
        run = client.get_run(run_id)
    except Exception:
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return None
    from mlflow.entities import RunTag

    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in
                                   {**owner, "resumed_after_epoch": str(epochs_done),
                                    "git_commits": ",".join(git_commits(record)),
                                    "mlflow.note.content": description(record)}.items()])
    return run_id


def open_training_run(client, experiment_id: str, record: dict, history: list[dict] | None = None,
                      log=print, owner_pid: int | None = None) -> TrainingRun:
    """Open the training's run with its params and tags, or reopen it when the training
    resumes (``record["mlflow_run_id"]``, ``history`` its finished epochs). Runs of dead
    processes are swept first. ``owner_pid``: the training's process, when another one
    (study.tracking.process) keeps its run."""
    resumed = record.get("mlflow_run_id")
    owner = process_tags(owner_pid)
    try:
        for line in sweep_orphans(client, experiment_id, keep=resumed):
            log(line)
        run_id = _reopen(client, experiment_id, resumed, len(history or []), record, owner) if resumed else None
        if resumed and run_id is None:
            log(f"the MLflow store lacks run {resumed} of this training; logging it as a new run")
        run_id = run_id or open_run(client, experiment_id, record, extra_tags=owner)
    except Exception as err:
        raise store_error(tracking_uri(), err) from err
    run = TrainingRun(client, run_id)
    run.catch_up(history or [])
    return run


def end_status(err: BaseException | None) -> tuple[str | None, str | None]:
    """How a training's run ends when ``err`` (None: none) ended the training: (status, why).
    Ctrl-C and SIGTERM end it KILLED; a store gone away leaves it open (status None), for the
    next start to complete; anything else (a diverged loss, a full disk, a bug) FAILED, with why."""
    if err is None:
        return "FINISHED", None
    if isinstance(err, (KeyboardInterrupt, Interrupted)):
        return "KILLED", None
    if isinstance(err, TrackingOffline):
        return None, None
    return "FAILED", f"{type(err).__name__}: {err}"[:4000]


def end_training_run(client, run_id: str, status: str | None, why: str | None = None) -> None:
    """End the run as ``end_status`` says; a failure to do so is a warning, never hiding the
    error that ended the training."""
    if why:
        with contextlib.suppress(Exception):
            client.set_tag(run_id, "failed_because", why)
    if status is None:
        return
    try:
        client.set_terminated(run_id, status, end_time=now_ms())  # this process's clock: never before its start
    except Exception as err:
        print(f"warning: could not mark MLflow run {run_id} {status} ({type(err).__name__})", file=sys.stderr)

