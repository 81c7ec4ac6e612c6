"""Faults and hostile input found beyond those issue 45 listed, each through the real command
where it has one: one line naming the culprit and the fix, nothing written or logged that says
what is not so. Each test failed on the code before its fix (the docstring says what it did)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT, TINY, project_params, subprocess_env

from stages.prepare import prepare
from study.errors import StageError


def command(workdir, *args, **env):
    return subprocess.run([sys.executable, "-m", *args], cwd=workdir, capture_output=True, text=True,
                          env=subprocess_env(**env), timeout=300)


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_registering_or_loading_the_reference_leaves_no_store_behind(tmp_path, monkeypatch):
    """`stages.register` and `load_reference` in a project with no store say so in one line (before:
    each created an empty mlflow.db, which the next `mlflow ui` showed as the project's store)."""
    from study.tracking.registry import load_reference

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params()))
    line = one_line(command(tmp_path, "stages.register"))
    assert f"no MLflow store at {tmp_path.resolve() / 'mlflow.db'}: train the study's recipe first" in line
    assert one_line(command(tmp_path, "stages.register", "--load", "vgg16_bn")).startswith("error: no MLflow store at ")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match="^no MLflow store at "):
        load_reference("vgg16_bn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_password_in_a_url_made_a_path_is_never_printed(tmp_path):
    """A URL with credentials given as `data.source` is resolved as a path, which keeps one slash
    after its scheme: the line that names it shows no password (before: `(…/https:/alice:s3cret@…)`)."""
    params = project_params(**{**TINY, "data": {**TINY["data"], "source": "https://alice:s3cretPW@example.org/c.tgz"}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    line = one_line(command(tmp_path, "stages.prepare"))
    assert "no such file or folder" in line and "s3cretPW" not in line and "alice" not in line


def test_prepared_data_whose_recorded_digest_was_edited_is_refused(tmp_path, image_tree):
    """meta.json's sha256 is the data's name in every record and run: one that is not the digest
    of its arrays is refused (before: a training recorded the edited digest as its data's)."""
    from study.data import load_prepared

    data = tmp_path / "data"
    prepare(source=str(image_tree), out_dir=data)
    load_prepared(data)  # as prepare wrote it: read
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(StageError, match="meta.json's sha256 is not the digest of its arrays.*`dvc checkout"):
        load_prepared(data)


def test_a_store_that_is_a_git_lfs_pointer_says_to_fetch_it(tmp_path):
    """A results store checked out without Git LFS holds a pointer where mlflow.db goes: one line
    saying so (before: "not a readable MLflow database ... move it aside", wrong for a store only read)."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "mlflow.db").write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{'a' * 64}\nsize 9\n")
    shutil.copy(ROOT / "results/h100-2026-11-27/params.yaml", store / "params.yaml")
    line = one_line(command(tmp_path, "stages.report", "--store", "store"))
    assert "MLflow store store/mlflow.db is a Git LFS pointer, not the database" in line and "`git lfs pull`" in line
    assert "move it aside" not in line


def test_a_store_without_its_params_yaml_names_what_it_lacks(tmp_path):
    """A results store copied without its params.yaml (before: "run from the project root, where
    params.yaml lives", in a folder where that is no help)."""
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(ROOT / "results/h100-2026-11-27/mlflow.db", store / "mlflow.db")
    line = one_line(command(tmp_path, "stages.report", "--store", "store"))
    assert "store holds no params.yaml, the recipe its runs are matched against" in line
    assert not (tmp_path / "reports").exists()


def test_a_split_profile_is_the_same_from_prepare_s_digests_and_from_the_arrays(tmp_path, image_tree):
    """A whole split's digest comes from what prepare recorded, a subset's from its arrays: the two
    agree on the same arrays, and train and test differ."""
    from study.data import load_prepared, split_profile

    data = tmp_path / "data"
    prepare(source=str(image_tree), out_dir=data)
    arrays, meta = load_prepared(data)
    for split in ("train", "test"):
        names = (f"{split}_images", f"{split}_labels")
        recorded = tuple(meta["array_sha256"][n] for n in names)
        assert split_profile(*(arrays[n] for n in names), recorded) == split_profile(*(arrays[n] for n in names))
    assert split_profile(arrays["train_images"], arrays["train_labels"])["sha256"] != \
        split_profile(arrays["test_images"], arrays["test_labels"])["sha256"]
    assert split_profile(np.zeros((3, 32, 32, 3), np.uint8), np.array([0, 0, 9]))["per_class"]["truck"] == 1


def test_a_data_source_that_never_ends_is_refused(tmp_path):
    """A device or a named pipe as `data.source` is refused in one line (before: reading /dev/zero
    or a pipe nobody writes ran until killed); a link to nothing is named so, not "no such file"."""
    import os

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop").symlink_to("loop")
    for source, why in (("/dev/zero", "is a character device"), ("pipe", "is a named pipe"),
                        ("loop", ": a symbolic link to nothing (broken, or a loop)")):
        params = project_params(**{**TINY, "data": {**TINY["data"], "source": source}})
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        line = one_line(command(tmp_path, "stages.prepare"))
        assert f"data.source '{source}' {why}".replace(" :", ":") in line, line
    assert not (tmp_path / "data").exists()


def test_a_file_store_uri_is_told_what_store_to_use(tmp_path):
    """MLflow's file store (`file:./mlruns`), which MLflow 3 keeps in maintenance: one line naming a
    database store (before: "unreachable or unusable (... maintenance mode ... cut off); start the
    server", the wrong cause and the wrong fix)."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(project_params()))
    line = one_line(command(tmp_path, "stages.report", MLFLOW_TRACKING_URI="file:./mlruns"))
    assert "is MLflow's file store" in line and "sqlite:///mlflow.db" in line and "start the server" not in line


def test_an_experiment_name_mlflow_filters_cannot_quote_is_refused_first(tmp_path):
    """A quote in `mlflow.experiment` broke MLflow's search filters the registry uses, far from the
    setting; it is now refused where it is set, before anything is written."""
    params = project_params(mlflow={"experiment": "bob's study"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    line = one_line(command(tmp_path, "stages.register"))
    assert line.startswith("error: mlflow.experiment is \"bob's study\"") and "without quotes" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_register_holds_to_the_committed_recipe(tmp_path):
    """`dvc exp run -S` leaves its values in params.yaml: `stages.register` refuses a recipe that
    differs from the committed one, naming the keys, before it opens any store (before: it moved
    @reference to whatever run the leftover values selected)."""
    params = project_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for args in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "the recipe"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, env=subprocess_env())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "epochs": 5}))
    line = one_line(command(tmp_path, "stages.register"))
    assert "params.yaml differs from it in epochs 5 (committed 40)" in line and "`git checkout params.yaml`" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_redaction_takes_secrets_and_leaves_model_uris_whole():
    """A network URL made a path loses its credentials; a registry URI, which holds none, stays
    as written (the first widening of the pattern took `models:/name@reference` for one)."""
    from study.console import redact

    assert redact("(/p/https:/alice:s3cret@example.org/c.tgz)") == "(/p/https:/example.org/c.tgz)"
    assert redact("models:/alexnet-vgg-cifar10-vgg16_bn@reference") == "models:/alexnet-vgg-cifar10-vgg16_bn@reference"
    assert redact("C:/Users/bob@corp/x") == "C:/Users/bob@corp/x"


def test_the_sweep_never_kills_a_finished_run_an_evaluate_holds_open(tmp_path, monkeypatch):
    """A training starting while an evaluate holds a finished run reopened (its training's process
    long gone) leaves it alone; once that evaluate is gone too, the run is closed as it was, not
    marked KILLED (before: the sweep killed it, and `ended_by` stayed on the run)."""
    import json
    import socket

    import mlflow

    from study.tracking import reopen
    from study.tracking.naming import process_tags
    from study.tracking.runs import sweep_orphans

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e")
    run_id = client.create_run(experiment, tags={"host": socket.gethostname(), "pid": "999999999"}).info.run_id
    client.set_terminated(run_id, "FINISHED", end_time=5_000)
    client.update_run(run_id, status="RUNNING")  # reopened by this (live) process
    client.set_tag(run_id, reopen.REOPENED_TAG, json.dumps({"status": "FINISHED", "end_time": 5_000, **process_tags()}))
    assert sweep_orphans(client, experiment) == [] and client.get_run(run_id).info.status == "RUNNING"
    monkeypatch.setattr(reopen, "alive", lambda pid, started="": False)  # the evaluate is gone too
    assert sweep_orphans(client, experiment) == []
    run = client.get_run(run_id)
    assert (run.info.status, run.info.end_time) == ("FINISHED", 5_000) and "ended_by" not in run.data.tags


def test_register_aliases_the_training_dvc_shows(tmp_path, monkeypatch):
    """Two runs of the recipe's seed, the later one a queued experiment's: `@reference` goes to the
    training in outputs/, the one DVC and the report show (before: the later run, so the registry
    named another training than the workspace's)."""
    from stages.register import register
    from study.config import flatten, parse_settings
    from study.tracking.naming import CHECKPOINT_TAG, SEQUENCE_TAG
    from study.tracking.store import connect

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    settings = parse_settings(project_params(models=["vgg8"], mlflow={"experiment": "exp"}))
    client, experiment = connect("exp")
    run_ids = []
    for order, record_id in enumerate(("in-outputs", "queued-later"), 1):
        run_id = client.create_run(experiment, tags={"record_id": record_id, SEQUENCE_TAG: f"{order:012d}"}).info.run_id
        for key, value in flatten(settings.recipe("vgg8")).items():
            client.log_param(run_id, key, str(value))
        client.set_terminated(run_id)
        client.create_logged_model(experiment, name="vgg8-e40", source_run_id=run_id, tags={CHECKPOINT_TAG: "f" * 64})
        run_ids.append(run_id)
    (tmp_path / "outputs/vgg8").mkdir(parents=True)
    (tmp_path / "outputs/vgg8/record.json").write_text(json.dumps({"record_id": "in-outputs"}))
    assert register(settings, None) == [f"exp-vgg8@reference: version 1 added, run {run_ids[0]}"]
