"""No work lost: real training processes killed (SIGKILL, SIGINT, SIGTERM) and resumed, runs of
dead processes swept, and a real `mlflow server` that goes away mid-run and comes back."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import psutil
import pytest
import torch
import yaml
from conftest import (
    TINY,
    free_port,
    prepared_images,
    project_params,
    start_server,
    stop_server,
    subprocess_env,
)

from study.tracking.naming import process_tags

EPOCHS = 3
# 150 training images: an AlexNet epoch lasts about two seconds on one core of the 2-core EPYC
# VM (bf16, fused SGD), long enough to be killed in the middle of
PARAMS = project_params(**{**TINY, "epochs": EPOCHS, "data": {"source": "tiny", "train_subset": 0, "test_subset": 0}})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_images(tmp_path_factory, "resume", 15, 4)


def make_project(root: Path, prepared: Path, epochs: int = EPOCHS, experiment: str = "test-exp") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    os.symlink(prepared, root / "data" / "cifar10")
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "epochs": epochs,
                                                      "mlflow": {**PARAMS["mlflow"], "experiment": experiment}}))
    return root


def start_training(project: Path, model: str = "alexnet", **env) -> subprocess.Popen:
    """The training as a terminal's foreground job: a process group of its own (its MLflow helper
    in it), with Ctrl-C's default action even under a runner that started the tests with SIGINT
    ignored (a background job of a non-interactive shell), which the child would inherit."""
    return subprocess.Popen([sys.executable, "-m", "stages.train", "--model", model], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(**env),
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone, or a zombie: a git call of the provenance, say
        return ""


def ended(process: psutil.Process, timeout: float = 20) -> bool:
    """Whether ``process`` exits within ``timeout`` (a zombie has: init reaps it when it can)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for_state(project: Path, epochs_done: int, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """The saved state once it holds ``epochs_done`` epochs (read while the trainer runs on)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"training ended early: {proc.communicate()}"
        for path in (project / ".train_state").glob("*.pt"):
            try:
                state = torch.load(path, weights_only=True)
            except Exception:  # replaced while being read
                continue
            if state["trainer"]["epochs_done"] >= epochs_done:
                return state
        time.sleep(0.05)
    raise AssertionError(f"no state with {epochs_done} epochs after {timeout} s")


def outputs(project: Path, model: str = "alexnet") -> tuple[list[dict], dict]:
    ckpt = torch.load(project / "outputs" / model / "checkpoint.pt", weights_only=True)
    history = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in ckpt["record"]["history"]]
    return history, ckpt["state_dict"]


def runs(project: Path):
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("test-exp")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def assert_logged_as_recorded(client, run_id: str, project: Path, model: str = "alexnet") -> None:
    """Every per-epoch metric of the run, value by value, is the finished training's record: the
    report draws its curves and Table 6 from these values, so a resume that logs the wrong epoch's
    numbers (or a default) must fail here, not only one that logs a step twice."""
    from study.metrics import EPOCH_METRICS

    history = json.loads((project / "outputs" / model / "record.json").read_text())["history"]
    for name in EPOCH_METRICS:
        logged = [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]
        assert logged == [(h["epoch"], float(h[name])) for h in history], name


def test_sigkill_mid_epoch_then_rerun_gives_the_same_history_weights_and_run(tmp_path, prepared):
    reference = make_project(tmp_path / "reference", prepared)
    code, _, err = finish(start_training(reference, "alexnet"))
    assert code == 0, err
    assert not list((reference / ".train_state").glob("*.pt")), "a completed training leaves no state behind"

    project = make_project(tmp_path / "killed", prepared)
    proc = start_training(project, "alexnet")
    state = wait_for_state(project, 1, proc)
    helpers = [child for child in psutil.Process(proc.pid).children() if "spawn_main" in command_line(child)]
    time.sleep(0.4)  # well into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(helpers) == 1 and ended(helpers[0]), "the process that kept its MLflow run goes with the training"
    killed_run = state["record"]["mlflow_run_id"]
    client, found = runs(project)
    assert [r.info.status for r in found] == ["RUNNING"], "SIGKILL leaves the run open, for the next start"
    assert found[0].data.tags["pid"] == str(proc.pid), "owned by the training, not by its helper"

    # two more RUNNING runs of this host: one of a process that has ended, one of a live process
    experiment_id = found[0].info.experiment_id
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = client.create_run(experiment_id, run_name="dead", tags={**process_tags(), "pid": gone.stdout.strip(),
                                                                   "pid_started": ""}).info.run_id
    live = client.create_run(experiment_id, run_name="live", tags=process_tags()).info.run_id

    code, out, err = finish(start_training(project, "alexnet"))
    assert code == 0, err
    assert "resuming after epoch 1/3" in out or "resuming after epoch 2/3" in out, out
    resumed = 1 if "resuming after epoch 1/3" in out else 2
    record = json.loads((project / "outputs/alexnet/record.json").read_text())
    assert record["timings_s"]["epochs_s"] == pytest.approx(  # this process's epochs only
        sum(h["epoch_time_s"] for h in record["history"][resumed:]))
    assert ("; epoch 1 ran before the resume)" if resumed == 1 else "; epochs 1-2 ran before the resume)") in out
    assert "Traceback" not in err
    assert outputs(project)[0] == outputs(reference)[0], "the same per-epoch losses and accuracies"
    weights, ref_weights = outputs(project)[1], outputs(reference)[1]
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights), "bit-identical weights"

    client, found = runs(project)
    by_id = {r.info.run_id: r for r in found}
    assert by_id[killed_run].info.status == "FINISHED", "the resumed training goes on in its own run"
    assert [m.step for m in client.get_metric_history(killed_run, "test_acc")] == [1, 2, 3]
    assert_logged_as_recorded(client, killed_run, project)
    assert by_id[killed_run].data.tags["resumed_after_epoch"] in ("1", "2")
    assert by_id[dead].info.status == "KILLED" and "died" in by_id[dead].data.tags["ended_by"]
    assert by_id[live].info.status == "RUNNING", "a live process's run is never touched"
    assert len(found) == 3


def test_a_training_outlives_its_mlflow_helper_and_the_rerun_logs_it(tmp_path, prepared):
    """The helper process that keeps the run killed mid-training: the training goes on to its end
    and says once that MLflow lost it, keeps its state whole, and exits 1; the rerun logs the
    same run, every epoch, without training again."""
    project = make_project(tmp_path, prepared, epochs=4)
    proc = start_training(project, "alexnet")
    wait_for_state(project, 1, proc)
    helper = next(child for child in psutil.Process(proc.pid).children() if "spawn_main" in command_line(child))
    helper.kill()
    code, _, err = finish(proc)
    assert code == 1 and "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if " INFO mlflow" not in line]
    assert len([line for line in lines if line.startswith("warning: the helper process")]) == 1, err
    assert "training goes on" in lines[0] and "exited (code -9)" in lines[0], err
    assert lines[-1].startswith("error: the helper process that does this stage's MLflow logging exited"), err
    assert "rerun `dvc repro` to log it without training again" in lines[-1]
    states = list((project / ".train_state").iterdir())
    assert len(states) == 1 and states[0].suffix == ".pt", "one whole state, no half-written file"
    assert torch.load(states[0], weights_only=True)["trainer"]["epochs_done"] == 4

    code, out, err = finish(start_training(project, "alexnet"))
    assert code == 0, err
    assert "resuming after epoch 4/4" in out, out
    client, found = runs(project)
    assert [r.info.status for r in found] == ["FINISHED"]
    assert [m.step for m in client.get_metric_history(found[0].info.run_id, "test_acc")] == [1, 2, 3, 4]
    assert_logged_as_recorded(client, found[0].info.run_id, project)


def interrupt(project: Path, sig: int, code: int) -> str:
    """Start (or resume) the training, signal its process group once it has saved an epoch of its
    own, as a terminal's Ctrl-C (or a scheduler's SIGTERM to the job) does: the MLflow helper gets
    it too, and must outlive the training to end its run KILLED. Returns the run's id."""
    states = (project / ".train_state").glob("*.pt")
    saved = [torch.load(state, weights_only=True)["trainer"]["epochs_done"] for state in states]
    proc = start_training(project, "alexnet")
    wait_for_state(project, max(saved, default=0) + 1, proc)
    os.killpg(proc.pid, sig)
    returncode, _, err = finish(proc)
    assert returncode == code
    lines = [line for line in err.strip().splitlines() if " INFO mlflow" not in line]  # store creation
    assert len(lines) == 1 and lines[0].startswith("alexnet: interrupted at epoch "), err
    assert "rerun `dvc repro` to resume" in lines[0]
    client, found = runs(project)
    assert [r.info.status for r in found] == ["KILLED"]
    return found[0].info.run_id


def test_an_interrupted_training_ends_its_run_killed_and_resumes(tmp_path, prepared):
    """Ctrl-C, then SIGTERM in the resumed training: each ends the one run KILLED, and the second
    resume finishes it with every epoch once, as recorded."""
    # epochs to spare: each signal lands in the epoch after the state it waits for
    project = make_project(tmp_path, prepared, epochs=5)
    run_id = interrupt(project, signal.SIGINT, 130)
    assert interrupt(project, signal.SIGTERM, 143) == run_id  # resumed in the same run
    returncode, out, err = finish(start_training(project, "alexnet"))
    assert returncode == 0 and "resuming after epoch" in out, err
    client, again = runs(project)
    assert [(r.info.run_id, r.info.status) for r in again] == [(run_id, "FINISHED")]
    assert [m.step for m in client.get_metric_history(run_id, "test_acc")] == list(range(1, 6))
    assert_logged_as_recorded(client, run_id, project)


def test_a_different_recipe_never_resumes(tmp_path, prepared):
    project = make_project(tmp_path, prepared)
    proc = start_training(project, "alexnet")
    wait_for_state(project, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (project / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "epochs": 1}))
    code, out, err = finish(start_training(project, "alexnet"))
    assert code == 0, err
    assert "a saved state for a different recipe, data, runtime or code" in out and "epochs 3 -> 1" in out
    assert "resuming" not in out
    _, found = runs(project)
    assert sorted(r.info.status for r in found) == ["FINISHED", "KILLED"], "the orphan is swept, a new run made"


class Gateway:
    """The address the trainings know the tracking server by, in front of one real ``mlflow
    server``: ``down()`` closes its port (a client then gets "connection refused", as from a server
    that died), ``up()`` opens it again at once, where restarting the server itself costs seconds."""

    def __init__(self, target: str):
        import requests

        session = requests.Session()

        class Forward(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection, none left open
            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = session.request(self.command, target + self.path, data=body, headers=headers, timeout=60)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.handler, self.port, self.httpd = Forward, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    folder, port = tmp_path_factory.mktemp("server"), free_port()
    server = start_server(folder, port)
    yield f"http://127.0.0.1:{port}"
    stop_server(server)


@pytest.fixture()
def gateway(tracking_server):
    gateway = Gateway(tracking_server)
    gateway.up()
    yield gateway
    if gateway.httpd is not None:
        gateway.down()


def server_runs(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_a_tracking_server_that_dies_mid_run_loses_nothing(tmp_path, prepared, gateway):
    """The server goes away after epoch 1 and stays away: the training goes on to its end, exits 1
    in one line with its outputs and state kept; once the server is back the rerun logs every
    epoch, once, without training again."""
    project = make_project(tmp_path / "project", prepared, experiment="dies")
    proc = start_training(project, "alexnet", MLFLOW_TRACKING_URI=gateway.uri)
    wait_for_state(project, 1, proc)
    gateway.down()
    code, out, err = finish(proc)
    # training went on to the end, wrote its outputs, and says in one line what is missing
    assert code == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rerun `dvc repro` once the store is back" in errors[0], err
    assert len(outputs(project)[0]) == EPOCHS
    assert list((project / ".train_state").glob("*.pt")), "the state stays until the run is complete"

    gateway.up()
    code, out, err = finish(start_training(project, "alexnet", MLFLOW_TRACKING_URI=gateway.uri))
    assert code == 0 and "Traceback" not in err, err
    assert "resuming after epoch 3/3" in out and "epoch 1/3:" not in out, "nothing is trained again"
    client, found = server_runs(gateway.uri, "dies")
    assert [r.info.status for r in found] == ["FINISHED"]
    run_id = found[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "test_acc")] == [1, 2, 3]
    assert_logged_as_recorded(client, run_id, project)
    assert "final_test_acc" in found[0].data.metrics
    assert {a.path for a in client.list_artifacts(run_id)} >= {"record.json", "history.csv", "metrics.json"}
    assert not list((project / ".train_state").glob("*.pt"))


def test_a_tracking_server_that_comes_back_mid_training_gets_every_epoch_in_the_same_run(tmp_path, prepared,
                                                                                          gateway):
    """Down after epoch 1, back before the last epoch ends (the training held still meanwhile, so a
    fast machine cannot finish first): the waiting epochs go in once it answers, the training ends
    0 with its run FINISHED, each epoch logged once with the record's values."""
    project = make_project(tmp_path / "project", prepared, experiment="back")
    proc = start_training(project, "alexnet", MLFLOW_TRACKING_URI=gateway.uri)
    wait_for_state(project, 1, proc)
    gateway.down()
    wait_for_state(project, 2, proc)  # epoch 2 ended with the server down: it waits in memory
    proc.send_signal(signal.SIGSTOP)
    try:
        gateway.up()
    finally:
        proc.send_signal(signal.SIGCONT)
    code, out, err = finish(proc)
    assert code == 0 and "Traceback" not in err, err
    assert "training goes on, its metrics wait here" in err and "MLflow store is back: logged epochs " in err
    client, found = server_runs(gateway.uri, "back")
    assert [r.info.status for r in found] == ["FINISHED"]
    assert_logged_as_recorded(client, found[0].info.run_id, project)
    assert found[0].data.metrics["final_test_acc"] == json.loads(
        (project / "outputs/alexnet/record.json").read_text())["summary"]["final_test_acc"]
    assert not list((project / ".train_state").glob("*.pt")), "a complete run keeps no state"


def test_an_epoch_is_logged_only_once_its_state_is_on_disk(tmp_path, prepared, monkeypatch):
    """Each epoch reaches MLflow only after the state holding it has landed, so a kill between
    the two leaves the epoch out of the run, and the rerun, resuming from the state, logs it once
    (before: logged at once while the state was still being written; a kill then logged it twice).
    State writes are slowed here so that the order shows; a kill's torn write is swept at the start."""
    import torch

    import stages.train as train_stage
    from study.config import load_settings
    from study.files import sweep_torn_entries
    from study.tracking import runs

    project = make_project(tmp_path / "p", prepared)
    monkeypatch.chdir(project)
    (project / ".train_state").mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    torn = project / ".train_state" / f".alexnet-0123456789abcdef.pt.{gone.stdout.strip()}-ab12cd34"
    torn.mkdir()
    (torn / "alexnet-0123456789abcdef.pt").write_bytes(b"\0" * 1000)  # a write its killed process never finished
    live = project / ".train_state" / f".alexnet-0123456789abcdef.pt.{os.getpid()}-ef56ab78"
    live.mkdir()  # a live process's write in progress
    real_save = torch.save

    def slow_save(obj, f, *args, **kwargs):
        time.sleep(0.3)
        return real_save(obj, f, *args, **kwargs)

    logged = []

    class Recorder(runs.NullRun):
        def log_epoch(self, record):
            [state] = list((project / ".train_state").glob("alexnet-*.pt"))
            saved = torch.load(state, map_location="cpu", weights_only=True)["history"]
            logged.append((record["epoch"], len(saved)))

    monkeypatch.setattr(torch, "save", slow_save)
    monkeypatch.setattr(runs, "NullRun", Recorder)
    train_stage.run_training(model="alexnet", settings=load_settings(project / "params.yaml"), track=False,
                             progress=False, log=lambda line: None)
    assert [epoch for epoch, _ in logged] == list(range(1, EPOCHS + 1))  # every epoch, once, in order
    assert all(saved >= epoch for epoch, saved in logged), logged  # never before its state landed
    assert not torn.exists() and live.exists()
    assert sweep_torn_entries(project / ".train_state") == []  # the live one stays


def test_a_second_process_of_the_same_state_stops_and_names_the_owner(tmp_path, prepared):
    """Two processes of one recipe sharing .train_state (queued experiments share it): the second
    stops at once with one line naming the first's host and pid, and never touches its live state
    or run; the first finishes as if alone (before: the second resumed the live state and logged
    into the same run)."""
    import socket

    project = make_project(tmp_path / "p", prepared)
    first = start_training(project, "alexnet")
    wait_for_state(project, 1, first)
    # the first held still, lock and all, while the second runs: on a loaded machine it could
    # otherwise finish its last epochs before the second reaches the lock
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run([sys.executable, "-m", "stages.train", "--model", "alexnet"], cwd=project,
                                capture_output=True, text=True, env=subprocess_env(), timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1, second.stderr
    [line] = second.stderr.strip().splitlines()
    assert line.startswith("error: alexnet-") and f"by process {first.pid} on {socket.gethostname()}" in line
    code, _, err = finish(first)
    assert code == 0, err
    client, found = runs(project)
    assert [r.info.status for r in found] == ["FINISHED"]  # one run, the first's
    steps = [m.step for m in client.get_metric_history(found[0].info.run_id, "test_acc")]
    assert steps == list(range(1, EPOCHS + 1))  # each epoch once
    assert not list((project / ".train_state").glob("*.owner"))  # nobody owns a finished state


def test_sigkills_at_random_moments_log_every_epoch_once_and_leave_nothing(tmp_path, prepared):
    """Issue 35's loop, small (benchmarks/sigkill_loop.py runs the 20-kill, 8-epoch one): two kills
    anywhere in a start's life, then the training's MLflow steps, weights and folders."""
    from benchmarks.sigkill_loop import loop

    result = loop(tmp_path, prepared, kills=2, epochs=2, seed=3, subset=100, log=lambda line: None)
    assert len(result["kills"]) == 2
    for round_ in result["rounds"]:
        assert round_["steps_once"], round_["steps"]
        assert round_["weights_equal"] and round_["history_equal"] and round_["logged_as_recorded"]
        assert round_["leftovers"] == []
        assert round_["run_statuses"].count("FINISHED") == 1
