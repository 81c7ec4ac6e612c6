"""A team on three machines, simulated with real processes: a bare git repository as origin,
a folder as the DVC remote, one `mlflow server` on 127.0.0.1 with MLflow's basic-auth app, as
docs/team.md sets it up, and its DVC blocks run line by line as written. A and B (members with
EDIT) train and push their experiments; C (a read-only member) trains nothing, pulls, builds the
full report and reruns A's recipe from the run-cache. Wrong credentials and a read-only member's
training are refused in one line before training."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import mlflow
import pandas as pd
import pytest
import requests
import torch
import yaml
from conftest import ROOT, SERVER_ADMIN, free_port, project_params, start_server, stop_server, subprocess_env

from study.analysis.paper import NAMES
from study.tracking.store import experiment_tags

EXPERIMENT = "alexnet-vgg-cifar10"  # params.yaml's mlflow.experiment
MEMBERS = {"alice": "EDIT", "bob": "EDIT", "carol": "READ"}

PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "study", "models", "pyproject.toml", "reports/README.md"]


def sh(args, cwd, **env):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          env=subprocess_env(**env), timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def dvc(*args, cwd, **env):
    return sh([sys.executable, "-m", "dvc", *args], cwd, **env)


def member(name: str, password: str | None = None) -> dict[str, str]:
    """A member's credentials, passed the standard way (never in params.yaml or git)."""
    return {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password or f"{name}-team-password"}


@contextlib.contextmanager
def as_admin():
    with mock.patch.dict(os.environ, SERVER_ADMIN):
        yield


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The basic-auth server, set up as docs/team.md says: the admin creates the study's experiment and
    one user per member, with EDIT or READ on it; nobody else may do anything. One per pytest-xdist
    worker (16-35 s to start and set up): work stealing interleaves these tests with other
    modules', and a module-scoped server was started again after each such switch."""
    from mlflow.server.auth.client import AuthServiceClient

    folder, port = tmp_path_factory.mktemp("server"), free_port()
    proc = start_server(folder, port, auth=True)
    uri = f"http://127.0.0.1:{port}"
    with as_admin():
        experiment_id = mlflow.MlflowClient(uri).create_experiment(EXPERIMENT, tags=experiment_tags())
        admin = AuthServiceClient(uri)
        for name, permission in MEMBERS.items():
            admin.create_user(name, member(name)["MLFLOW_TRACKING_PASSWORD"])
            admin.grant_user_permission(name, "experiment", experiment_id, permission)
    yield uri
    stop_server(proc)


@pytest.fixture()
def team(tmp_path, image_tarball, server):
    """origin (bare git) with the project pushed to it, and where the DVC remote (a folder) goes:
    docs/team.md's first block adds it (test_team_block_runs_as_written)."""
    origin, remote = tmp_path / "origin.git", tmp_path / "dvc-remote"
    sh(["git", "init", "-q", "--bare", "-b", "main", origin], tmp_path)
    seed = tmp_path / "seed"
    for name in PROJECT_FILES:
        src, dst = ROOT / name, seed / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir() \
            else shutil.copy(src, dst)
    params = project_params(epochs=2, data={"source": str(image_tarball), "train_subset": 30, "test_subset": 20},
                            train={"batch_size": 16}, runtime={"device": "cpu"}, mlflow={"log_model": False})
    (seed / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q", "-b", "main"], seed)
    dvc("init", "-q", cwd=seed)
    dvc("config", "core.analytics", "false", cwd=seed)
    sh(["git", "add", "-A"], seed)
    sh(["git", "commit", "-qm", "the study"], seed)
    sh(["git", "remote", "add", "origin", origin], seed)
    sh(["git", "push", "-q", "origin", "main"], seed)
    return {"origin": origin, "uri": server, "root": tmp_path, "remote": remote}


def clone(team, name):
    path = team["root"] / name
    sh(["git", "clone", "-q", team["origin"], path], team["root"])
    return path


def server_runs(uri):
    with as_admin():
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        return {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}


def train_refused(repo, model: str, **env) -> str:
    """The train stage's one line when the server refuses it; asserts exit 1 and that nothing trained."""
    proc = subprocess.run([sys.executable, "-m", "stages.train", "--model", model], cwd=repo, capture_output=True,
                          text=True, env=subprocess_env(**env), timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MLflow server "), proc.stderr
    assert "@127.0.0.1" not in proc.stdout + proc.stderr, "a URI printed with its user (and password)"
    assert not list(repo.glob(f".train_state/{model}-*")), "an epoch was trained"
    assert not (repo / "outputs" / model / "record.json").exists()
    return lines[0]


def connect_refused(repo, **env) -> str:
    """The stages' own path to the store (connect, then run_main's one line on failure), without a
    training: the one line, after asserting exit 1, one line on stderr and no URI with its user."""
    code = ("from study.console import run_main; from study.tracking.store import connect; "
            "run_main(lambda: connect('e'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                          env=subprocess_env(PYTHONPATH=str(ROOT), **env), timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: MLflow "), proc.stderr
    assert "@127.0.0.1" not in proc.stdout + proc.stderr, "a URI printed with its user (and password)"
    return lines[0]


# docs/team.md as run here: a folder for the bucket (no plugin to install), one model a member (the quickest)
AS_HERE = {"pip install dvc-s3 && ": "", "s3://bucket/alexnet-vgg": "{remote}",
           "models=[alexnet,vgg8]": "models=[alexnet]", "models=[vgg16,vgg16_bn]": "models=[vgg8]"}


def team_blocks(remote) -> list[list[str]]:
    """The command lines of docs/team.md's three DVC blocks, as they run here (AS_HERE)."""
    section = (ROOT / "docs/team.md").read_text().split("## The DVC remote, and working together")[1]
    blocks = re.findall(r"```bash\n(.*?)```", section.split("\n## ")[0], re.S)
    assert len(blocks) == 3, "docs/team.md's DVC section changed: change this test with it"
    assert all(old in "".join(blocks) for old in AS_HERE), "a line this test adapts is no longer in docs/team.md"

    def here(block: str) -> str:
        for old, new in AS_HERE.items():
            block = block.replace(old, new.format(remote=remote))
        return block

    return [[line for line in here(block).splitlines() if line.strip()] for block in blocks]


def run_line(line, repo, **env):
    return sh(["bash", "-c", f"set -eo pipefail; {line}"], repo, **env)


@pytest.mark.long  # the suite's longest test after the study: started early, not left for last
def test_team_block_runs_as_written(team, tmp_path):
    """docs/team.md as a team lives it. Besides its DVC blocks: B, a writer, with the credentials in
    the URI alone; C, READ only, refused a training in one line (and so are a wrong password and no
    credentials); C's report with a training the server lacks says in one line, and in report.md,
    what it could not log; no line anyone prints holds a password, nor does the one-line error of a
    server that is down (before: MLflow's "View run" lines and the "unreachable" error printed it)."""
    uri = {"MLFLOW_TRACKING_URI": team["uri"]}
    passwords = {user: member(user)["MLFLOW_TRACKING_PASSWORD"] for user in MEMBERS}

    def in_uri(user):  # the credentials in the URI alone: no variables, no credentials file
        return {"MLFLOW_TRACKING_URI": team["uri"].replace("http://", f"http://{user}:{passwords[user]}@"),
                "HOME": str(tmp_path / "home")}

    setup, members, reader = team_blocks(team["remote"])
    before = set(server_runs(team["uri"]))
    admin = clone(team, "admin")  # "once, in the repository": the remote, committed alone
    (admin / "stray.txt").write_text("not for git")
    for line in setup:
        run_line(line, admin)
    assert "stray.txt" in sh(["git", "status", "--porcelain"], admin), "git add .dvc/config committed more"

    trained, repos, printed = {}, {}, []
    for line in members:  # "on machine A" / "on machine B": each line on the machine of its experiment
        machine = "a" if "team-a" in line else "b"
        if machine not in repos:
            repos[machine] = clone(team, machine)
        env = {**uri, **member("alice")} if machine == "a" else in_uri("bob")
        printed.append(run_line(line, repos[machine], **env))
    for machine in repos:
        for record in repos[machine].glob("outputs/*/record.json"):
            trained[record.parent.name] = json.loads(record.read_text())
    assert set(trained) == {"alexnet", "vgg8"}

    c = clone(team, "c")
    pulled, report, rerun, applied = reader
    run_line(pulled, c)
    shown = dvc("exp", "show", "--csv", "--no-pager", cwd=c)
    assert "team-a" in shown and "team-b" in shown
    # C, a read-only member, builds the whole report from the server, trained nothing, needs no path of A or B
    printed.append(out := run_line(report, c, **uri, **member("carol")))
    assert "Traceback" not in out
    table = pd.read_csv(c / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")["ours (2 ep)"]
    runs = {r.data.tags["mlflow.runName"]: r for i, r in server_runs(team["uri"]).items() if i not in before}
    assert len(runs) == 2 and {r.info.status for r in runs.values()} == {"FINISHED"}
    for model, record in trained.items():
        run = runs[f"{model}-e2-s0"]
        assert run.info.run_id == record["mlflow_run_id"]
        assert table[NAMES[model]] == f"{record['summary']['final_test_acc']:.2f}"
    assert not (c / "outputs").exists(), "C trained nothing"
    report_text = (c / "reports/report.md").read_text()
    assert str(team["root"] / "a") not in report_text and str(team["root"] / "b") not in report_text
    assert not (c / "mlflow.db").exists(), "C's report came from the server alone: C has no local store"

    # C, READ only, reruns A's recipe: every training and evaluation restored from the run-cache, the report built
    printed.append(out := run_line(rerun, c, **uri, **member("carol")))
    assert "Running stage 'train@" not in out and "Running stage 'evaluate@" not in out, out[-3000:]
    assert "Stage 'train@alexnet' is cached - skipping run" in out and "Running stage 'report'" in out
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    assert "Traceback" not in out and not warned, out[-3000:]
    restored = json.loads((c / "outputs/alexnet/record.json").read_text())
    assert restored["record_id"] == trained["alexnet"]["record_id"]
    server_held = before | {r.info.run_id for r in runs.values()}
    assert set(server_runs(team["uri"])) == server_held, "C logged a run"

    # C may not train, and neither may a wrong password or no credentials: one line each, before any epoch
    # (the refusals go through the password check at the end too: carol's in her URI, alice's wrong one)
    passwords["alice (wrong)"] = "not-alices-password"
    printed.append(line := train_refused(c, "vgg8", **in_uri("carol")))
    assert "denied user 'carol' permission (403) to runs/create" in line and "EDIT" in line
    # the store's answer to a wrong password or none comes at connect, before the stage does anything
    # else: checked there (the stages' own path, run_main's one line), without a training's imports
    printed.append(line := connect_refused(c, **uri, **member("alice", passwords["alice (wrong)"])))
    assert "refused authentication (401: wrong password for user 'alice'" in line
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line
    printed.append(line := connect_refused(c, **uri, HOME=str(tmp_path / "home")))  # no credentials file either
    assert "refused authentication (401: no credentials were given)" in line
    # a training the server lacks (here trained without MLflow; in a team, one a run-cache restored from
    # a member's store): C's report builds from what the server holds and says what it could not log
    sh([sys.executable, "-m", "stages.train", "--model", "alexnet", "--no-mlflow"], c)
    shutil.rmtree(c / "outputs/alexnet/eval")  # A's evaluation, of the training this one replaced
    printed.append(out := sh([sys.executable, "-m", "stages.report"], c, **in_uri("carol")))
    assert "Traceback" not in out and "the runs in MLflow: http://127.0.0.1:" in out
    warned = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "alexnet-e2-s0 from outputs/alexnet/record.json is not in MLflow" in warned[0], out
    assert "(403)" in warned[0] and "EDIT" in warned[0]
    assert f"> **Warning:** {warned[0].removeprefix('warning: ')}" in (c / "reports/report.md").read_text()
    assert set(server_runs(team["uri"])) == server_held, "a refused member opened a run"

    down = f"http://bob:{passwords['bob']}@127.0.0.1:{free_port()}"
    printed.append(line := connect_refused(c, MLFLOW_TRACKING_URI=down))  # a store that is down
    assert "unreachable" in line and down.replace(f"bob:{passwords['bob']}@", "") in line  # named without its user
    for text in "\n".join(printed).splitlines():
        assert not any(password in text for password in passwords.values()), text
        assert "bob:" not in text and "carol:" not in text, text

    # A's checkpoint and data pulled to C (prepare ran on A only): what an evaluate with EDIT would read
    run_line(applied, c)
    checkpoint = torch.load(c / "outputs/alexnet/checkpoint.pt", weights_only=True)
    assert checkpoint["record"]["record_id"] == trained["alexnet"]["record_id"]
    assert (c / "data/cifar10/meta.json").exists()


class BusyProxy(BaseHTTPRequestHandler):
    """In front of the real server: answers the next log-batch requests with the statuses in
    ``refusals`` (a server under load: 429, 503, SQLite's "database is locked" as 500), then
    forwards everything."""

    target, refusals, refused = "", [], []

    def forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/runs/log-batch") and self.refusals:
            self.refused.append(self.refusals.pop(0))
            self.send_response(self.refused[-1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        answer = requests.request(self.command, self.target + self.path, data=body, headers=headers, timeout=30)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = forward

    def log_message(self, *args):
        pass


def test_epoch_logging_rides_out_a_busy_server(server, monkeypatch, capsys):
    from study.metrics import EPOCH_METRICS
    from study.tracking.runs import TrainingRun

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as connect() sets it: no retries inside MLflow
    for key, value in member("alice").items():
        monkeypatch.setenv(key, value)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), BusyProxy)
    BusyProxy.target, BusyProxy.refusals, BusyProxy.refused = server, [503, 429, 500, 503], []
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = mlflow.MlflowClient(f"http://127.0.0.1:{proxy.server_port}")
        run_id = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
        run = TrainingRun(client, run_id)
        for epoch in (1, 2, 3):
            run.log_epoch({"epoch": epoch, **{k: float(epoch) for k in EPOCH_METRICS}})
    finally:
        proxy.shutdown()
    assert BusyProxy.refused == [503, 429, 500, 503] and not run.pending
    assert "unreachable" not in capsys.readouterr().err, "a busy server was taken for one gone away"
    with as_admin():
        for key in EPOCH_METRICS:
            steps = sorted(m.step for m in mlflow.MlflowClient(server).get_metric_history(run_id, key))
            assert steps == [1, 2, 3], key


def test_load_benchmark_finds_every_lost_metric(server, tmp_path, monkeypatch):
    """benchmarks/server_load.py at N=2, tiny: a clean step, and its read-back counts what a run lacks."""
    from benchmarks import server_load
    from study.metrics import EPOCH_METRICS
    from study.tracking.runs import TrainingRun

    monkeypatch.setattr(server_load, "ADMIN", SERVER_ADMIN)
    server_load.set_up_team(server, 2)
    step = server_load.run_step(server, 2, epochs=3, epoch_s=0.2, folder=tmp_path / "n2")
    assert step["clean"] and step["writers_failed"] == 0 and step["lost_metrics"] == 0, step
    assert step["requests"] >= 2 * 8 and 0 < step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
    # a run that lacks epoch 3 and its summary: 6 epoch metrics, 6 summary metrics, 3 artifacts short
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    for key, value in member("alice").items():
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient(server)
    run_id = client.create_run(client.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    for epoch in (1, 2):
        TrainingRun(client, run_id).log_epoch({"epoch": epoch, **{k: 1.0 for k in EPOCH_METRICS}})
    lost = server_load.read_back(server, [run_id], epochs=3)["lost"]
    assert lost == {"epoch_metrics": 6, "summary_metrics": 6, "artifacts": 3, "unfinished_runs": 1}


def test_a_registered_model_belongs_to_its_registrant_and_others_are_told_whom_to_ask(server, monkeypatch):
    """On the team server a registered model is its creator's: another EDIT member and a READ member
    registering the same network each get one line naming that and the grant to ask for (before:
    "unreachable or unusable (RESOURCE_ALREADY_EXISTS ...); start the server"); with the grant
    docs/team.md gives, the second member registers a version of their own."""
    from mlflow.server.auth.client import AuthServiceClient

    from study.errors import StageError
    from study.tracking.naming import CHECKPOINT_TAG
    from study.tracking.registry import register_reference

    name = f"{EXPERIMENT}-vgg8-registry-test"

    def as_member(user):
        for key, value in member(user).items():
            monkeypatch.setenv(key, value)
        return mlflow.MlflowClient(server)

    def trained(client):
        experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        run_id = client.create_run(experiment_id).info.run_id
        return run_id, client.create_logged_model(experiment_id, name="vgg8-e40", source_run_id=run_id,
                                                  tags={CHECKPOINT_TAG: "f" * 64})

    alice = as_member("alice")
    run_a, model_a = trained(alice)
    assert register_reference(alice, name, model_a, run_a, 40, 0, "alice") == \
        f"{name}@reference: version 1 added, run {run_a}"
    bob = as_member("bob")
    run_b, model_b = trained(bob)
    with pytest.raises(StageError) as refused:
        register_reference(bob, name, model_b, run_b, 40, 0, "bob")
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"registered model {name} already exists and belongs to another member")
    assert f"grant_user_permission('bob', 'registered_model', '{name}', 'EDIT')" in line
    with pytest.raises(StageError, match=f"^registered model {name} already exists and belongs to another member"):
        register_reference(as_member("carol"), name, model_b, run_b, 40, 0, "carol")
    with as_admin():  # docs/team.md's grant
        AuthServiceClient(server).grant_user_permission("bob", "registered_model", name, "EDIT")
    assert register_reference(as_member("bob"), name, model_b, run_b, 40, 0, "bob") == \
        f"{name}@reference: version 2 added, run {run_b}"
