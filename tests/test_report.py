import time

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from models import build_model, count_parameters
from stages.common import StageError
from stages.report import build_report, choose_epochs, expected_settings
from stages.tracking import connect

# the committed defaults (a `dvc exp run` may have changed the workspace's params.yaml)
PARAMS = {**yaml.safe_load((ROOT / "params.yaml").read_text()), "epochs": 40, "seed": 0}
PARAMS["data"] = {"source": "official", "train_subset": 0, "test_subset": 0}
ACC_40 = {"alexnet": 87.0, "vgg16": 10.0, "vgg16_bn": 92.5, "vgg8": 88.0}
ACC_5 = {"alexnet": 55.5, "vgg8": 25.25}


def log_run(model, epochs, acc, seconds, params=PARAMS, **override):
    settings = {**expected_settings(params), **override}
    with mlflow.start_run(run_name=f"{model}-e{epochs}-s0") as run:
        mlflow.log_params({"model": model, "epochs": epochs, **settings})
        mlflow.log_metrics({"final_test_acc": acc, "mean_epoch_time_s": seconds})
        for epoch in range(1, epochs + 1):
            mlflow.log_metrics({"test_acc": acc * epoch / epochs, "train_loss": 2.3 / epoch}, step=epoch)
        mlflow.set_tags({"device_name": "test device", "torch_version": "x", "git_commit": "abc",
                         "data_sha256": "f" * 64})
    time.sleep(0.01)  # distinct start times: "latest" must be well defined
    return run.info.run_id


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment_id = connect(PARAMS["mlflow"]["experiment"])
    mlflow.set_experiment(experiment_id=experiment_id)
    ids = {"stale vgg8": log_run("vgg8", 40, 11.11, 9.0)}  # older, superseded by the next vgg8 run
    for model, acc in ACC_40.items():
        ids[model] = log_run(model, 40, acc, 1.5)
    for model, acc in ACC_5.items():
        ids[f"{model}-5"] = log_run(model, 5, acc, 2.0)
    ids["other lr"] = log_run("alexnet", 40, 99.99, 1.0, **{"train.lr": "0.1"})  # newest, other settings
    return tmp_path, ids


def test_tables_show_exactly_the_matching_runs(store):
    tmp_path, ids = store
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/README.md").write_text("kept")  # the report owns only its own entries
    build_report(params=PARAMS, report_dir=tmp_path / "reports", output_root=tmp_path / "outputs",
                 rf_dir=tmp_path / "rf")
    t5 = pd.read_csv(tmp_path / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")
    assert t5.loc["AlexNet", "ours (40 ep)"] == "87.00" and t5.loc["AlexNet", "diff (40 ep)"] == "-0.81"
    assert t5.loc["VGG-8", "ours (40 ep)"] == "88.00"
    assert t5.loc["VGG-16 with BN", "ours (40 ep)"] == "92.50" and t5.loc["VGG-16 with BN", "paper (40 ep)"] == "91.94"
    assert t5.loc["AlexNet", "ours (5 ep)"] == "55.50" and t5.loc["VGG-8", "ours (5 ep)"] == "25.25"
    assert t5.loc["VGG-16", "ours (5 ep)"] == "not run (`dvc exp run -S epochs=5`)"
    t6 = pd.read_csv(tmp_path / "reports/tables/table6_seconds_per_epoch.csv", dtype=str).set_index("model")
    assert t6.loc["VGG-8", "ours (40 ep)"] == "1.50" and t6.loc["AlexNet", "ours (5 ep)"] == "2.00"
    t7 = pd.read_csv(tmp_path / "reports/tables/table7_parameter_efficiency.csv", dtype=str).set_index("model")
    per_point = count_parameters(build_model("vgg8")) / 88.0 / 1e3
    assert t7.loc["VGG-8", "params per point"] == f"{per_point:.0f}K" == "149K"
    report = (tmp_path / "reports/report.md").read_text()
    assert "99.99" not in report and "11.11" not in report
    provenance = pd.read_csv(tmp_path / "reports/tables/provenance_runs.csv")
    assert set(provenance["run id"]) == {ids[m] for m in ACC_40} | {ids["alexnet-5"], ids["vgg8-5"]}
    assert ids["alexnet"] in report
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["README.md", "figures", "report.md", "tables"]
    for figure in ("learning_curves.png", "receptive_field_growth.png"):
        assert (tmp_path / "reports/figures" / figure).read_bytes()[:4] == b"\x89PNG"
    assert "| Plain VGG-16 does not learn (stays at 10%) | VGG-16 at 10.00% after 40 epochs | reproduced |" in report
    assert "VGG-8 is the most parameter-efficient model" in report
    assert "| vgg16 | Pool5 | Tables 2-4 | 236 | 212 |" in report


def test_ignored_settings_let_other_runs_in(store):
    tmp_path, _ = store
    params = {**PARAMS, "report": {"short_epochs": 5, "ignore_params": ["train.lr"]}}
    build_report(params=params, report_dir=tmp_path / "reports", output_root=tmp_path / "outputs",
                 rf_dir=tmp_path / "rf")
    t5 = pd.read_csv(tmp_path / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")
    assert t5.loc["AlexNet", "ours (40 ep)"] == "99.99"


def test_long_column_missing_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment(experiment_id=connect(PARAMS["mlflow"]["experiment"]))
    log_run("vgg8", 5, 30.0, 2.0)
    build_report(params=PARAMS, report_dir=tmp_path / "reports", output_root=tmp_path / "outputs",
                 rf_dir=tmp_path / "rf")
    t5 = pd.read_csv(tmp_path / "reports/tables/table5_accuracy.csv", dtype=str).set_index("model")
    assert t5.loc["VGG-8", "ours (40 ep)"] == "not run (`dvc repro`)"
    assert t5.loc["VGG-8", "ours (5 ep)"] == "30.00"
    assert t5.loc["AlexNet", "ours (5 ep)"] == "not run (`dvc exp run -S epochs=5`)"


def test_epoch_columns():
    assert choose_epochs({("a", 40): 1, ("a", 5): 1}, epochs=5, short_epochs=5) == (5, 40)
    assert choose_epochs({("a", 1): 1, ("a", 2): 1}, epochs=2, short_epochs=5) == (1, 2)
    assert choose_epochs({("a", 40): 1}, epochs=40, short_epochs=5) == (None, 40)
    assert choose_epochs({}, epochs=40, short_epochs=5) == (None, 40)


def test_missing_or_empty_store_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match="no MLflow store at .*mlflow.db: train first with `dvc repro`"):
        build_report(params=PARAMS, report_dir=tmp_path / "reports")
    assert not (tmp_path / "mlflow.db").exists()
    connect(PARAMS["mlflow"]["experiment"])
    with pytest.raises(StageError, match="has no finished runs in experiment 'alexnet-vgg-cifar10'"):
        build_report(params=PARAMS, report_dir=tmp_path / "reports")
    assert not (tmp_path / "reports").exists()
