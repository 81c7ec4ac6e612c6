"""DVC and MLflow in step: a training in the workspace whose run the store lacks is logged
again from its record (``restored``), one left unfinished is completed, and an evaluation
the run lacks is added. The report stage calls ``ensure_logged`` before it reads the store.
"""

from __future__ import annotations

import time
from pathlib import Path

from study.errors import StageError
from study.metrics import EPOCH_METRICS, SUMMARY_METRICS
from study.outputs import bound_record
from study.provenance import now_ms
from study.tracking.content import EVAL_MARK, log_environment, log_evaluation, log_evaluation_artifacts
from study.tracking.naming import run_name
from study.tracking.reopen import reopened_by_live_process, settle_reopened
from study.tracking.runs import TrainingRun, open_run, owned_by_live_process
from study.tracking.store import connect, forbidden, store_error, tracking_uri


def find_run(client, experiment_id: str, record_id: str, finished: bool = True):
    """The finished run of this store that logged the training ``record_id``, or None; with
    ``finished=False`` any live run of it, a finished one first."""
    status = " and attributes.status = 'FINISHED'" if finished else ""
    runs = client.search_runs([experiment_id], filter_string=f"tags.record_id = '{record_id}'{status}",
                              max_results=100)
    runs.sort(key=lambda run: run.info.status != "FINISHED")
    return runs[0] if runs else None


def complete_run(client, found, record: dict, artifacts: list[Path]) -> None:
    """Finish from its record the run of a training that completed while its run did not (the
    store went away before the end, or a sweep ended the run of its dead process): the
    missing epochs, the summary, the artifacts, FINISHED at the training's end."""
    from mlflow.entities import RunTag

    run_id = found.info.run_id
    run = TrainingRun(client, run_id)
    run.catch_up(record["history"])
    run.finish(record, artifacts)
    if "ended_by" in found.data.tags:  # the sweep's "killed" no longer holds
        client.delete_tag(run_id, "ended_by")
    client.log_batch(run_id, tags=[RunTag("completed_by", f"the report stage, from the training's record: the "
                                          f"training completed but its run was left {found.info.status}")])
    client.set_terminated(run_id, "FINISHED", end_time=record.get("ended_ms") or now_ms())


def restore_run(client, experiment_id: str, record: dict, artifacts: list[Path]) -> str:
    """Log a finished training to this store from its record, without training: the same
    params, tags, per-epoch metrics and artifacts, tagged as restored."""
    from mlflow.entities import Metric

    run_id = open_run(client, experiment_id, record, start_time=record.get("started_ms"), extra_tags={
        "restored": "true", "restored_from_run_id": str(record.get("mlflow_run_id")),
        "restored_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    ended = record.get("ended_ms") or now_ms()
    metrics = [Metric(k, float(h[k]), ended, h["epoch"]) for h in record["history"] for k in EPOCH_METRICS]
    metrics += [Metric(k, float(record["summary"][k]), ended, 0) for k in SUMMARY_METRICS]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start:start + 1000])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    log_environment(client, run_id, record)
    client.set_terminated(run_id, "FINISHED", end_time=ended)
    return run_id


def relog_lost_artifacts(client, run, record: dict, artifacts: list[Path], eval_dir: Path) -> list[str]:
    """Log again the artifacts a finished run's store lost (its folder deleted, a store copied
    without them) from the workspace's outputs; the names of those logged."""
    held = {Path(info.path).name for info in client.list_artifacts(run.info.run_id)}
    lost = [path for path in artifacts if path.name not in held]
    for path in lost:
        client.log_artifact(run.info.run_id, str(path))
    names = [path.name for path in lost]
    if "environment.txt" not in held and record.get("provenance", {}).get("environment"):
        log_environment(client, run.info.run_id, record)
        names.append("environment.txt")
    if EVAL_MARK in run.data.metrics and "figures" not in held and (eval_dir / "figures").is_dir():
        log_evaluation_artifacts(client, run.info.run_id, record, eval_dir)
        names.append("the evaluation's figures and tables")
    return names


def ensure_logged(record_paths: list[Path], experiment: str, log_model: bool = False,
                  weights: bool = True) -> tuple[list[str], set[str]]:
    """For every training record in the workspace, make sure the current store holds its run,
    and its evaluation where the workspace has one; log what is missing from the record and
    the evaluate stage's outputs, each checked to belong to its training (study.outputs; without
    ``weights``, a results store's, the record is the source). Returns one line per run logged or completed, and the
    records' ids (the trainings DVC has in the workspace)."""
    if not record_paths:
        return [], set()
    client, experiment_id = connect(experiment)
    lines, record_ids = [], set()
    for path in record_paths:
        # its checkpoint, metrics and evaluation checked to be of this training: never log an edited file
        record = bound_record(path.parent.name, path.parent.parent, checkpoint=weights, metrics=weights)
        record_ids.add(record["record_id"])
        eval_dir, checkpoint = path.with_name("eval"), path.with_name("checkpoint.pt")
        try:
            found = settle_reopened(client, find_run(client, experiment_id, record["record_id"], finished=False))
            siblings = [p for p in (path.with_name("history.csv"), path.with_name("metrics.json")) if p.exists()]
            if found is None:
                run_id = restore_run(client, experiment_id, record, [path, *siblings])
                lines.append(f"logged {run_name(record['recipe'])} to MLflow from {path} (run {run_id}, restored "
                             f"from {record.get('mlflow_run_id') or 'an untracked training'})")
            elif found.info.status == "RUNNING" and (owned_by_live_process(found) or reopened_by_live_process(found)):
                lines.append(f"MLflow run {found.info.run_id} of {run_name(record['recipe'])} is still being "
                             f"written by process {found.data.tags['pid']}; left as it is")
                continue
            else:
                run_id = found.info.run_id
                if found.info.status != "FINISHED":  # complete it: a second run would double the training
                    complete_run(client, found, record, [path, *siblings])
                    lines.append(f"completed MLflow run {run_id} ({run_name(record['recipe'])}, left "
                                 f"{found.info.status}) from {path}")
                    found = client.get_run(run_id)
                elif weights and (lost := relog_lost_artifacts(client, found, record, [path, *siblings], eval_dir)):
                    lines.append(f"logged again to MLflow run {run_id} ({run_name(record['recipe'])}) what its "
                                 f"artifact store had lost, from outputs/{path.parent.name}: {', '.join(lost)}")
            if (eval_dir / "metrics.json").exists() and (found is None or EVAL_MARK not in found.data.metrics):
                model_found = log_evaluation(client, run_id, record, eval_dir,
                                             checkpoint if log_model and checkpoint.exists() else None)
                lines.append(f"logged the evaluation of {run_name(record['recipe'])} to MLflow run {run_id}"
                             + (f" (its model was there already: {model_found})" if model_found else ""))
        except StageError:
            raise
        except Exception as err:
            if forbidden(err):  # a READ member: the report shows what the store holds, and says what it lacks
                lines.append(f"warning: {run_name(record['recipe'])} from {path} is not in MLflow, and this user "
                             "may only read the experiment (403): the report leaves it out until a member with "
                             "EDIT builds the report or reruns `dvc repro`")
                continue
            raise store_error(tracking_uri(), err) from err
    return lines, record_ids

