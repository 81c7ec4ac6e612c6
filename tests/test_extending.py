"""The study extended as docs/extending.md says: a fifth network (ResNet-18 for CIFAR) through
train, evaluate and the report, and a recipe key added after the study (train.optimizer) that
leaves every earlier run valid."""

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, TINY, project_settings

from stages.evaluate import evaluate_model
from stages.prepare import prepare
from stages.report import build_report
from stages.train import run_training
from study.analysis.paper import NOT_IN_PAPER
from study.analysis.selection import select
from study.config import load_settings, recipe_defaults


def test_resnet18_trains_evaluates_and_reports_beside_the_paper_networks(tmp_path, image_tree, monkeypatch):
    """`models: [vgg8, resnet18]`, ResNet-18 trained: its row in Tables 1, 5, 6 and 7 holds its own
    numbers and "–" under every paper column; its receptive field is measured per stage; its
    first-layer figures and signal at initialisation are drawn as for the others."""
    monkeypatch.chdir(tmp_path)
    prepare(source=str(image_tree), out_dir=tmp_path / "data" / "cifar10")
    settings = project_settings(**{**TINY, "models": ["vgg8", "resnet18"], "mlflow": {"experiment": "ext"}})
    trained = run_training(model="resnet18", settings=settings, progress=False, log=lambda line: None)
    assert trained["metrics"]["num_parameters"] == 11_173_962
    evaluation = evaluate_model(model="resnet18", device="cpu")
    assert 0 <= evaluation["test_acc"] <= 100 and 0.99 < evaluation["first_layer_init_corr"] <= 1
    figures = sorted(p.name for p in (tmp_path / "outputs/resnet18/eval/figures").glob("*.png"))
    assert figures == ["confusion.png", "feature_maps.png", "filters.png"]

    build_report(settings=settings, report_dir=tmp_path / "reports", output_root=tmp_path / "outputs",
                 rf_dir=tmp_path / "no-rf", signal_dir=tmp_path / "no-signal", data_dir=tmp_path / "data/cifar10")
    tables = {name: pd.read_csv(tmp_path / f"reports/tables/{name}.csv", dtype=str).set_index("model") for name in (
        "table1_parameters", "table5_accuracy", "table6_seconds_per_epoch", "table7_parameter_efficiency")}
    t1, t5, t6, t7 = (tables[name].loc["ResNet-18"] for name in tables)
    assert t1["parameters"] == "11,173,962" and t1["depth (conv+FC)"] == "17+1=18"
    assert t1["paper depth"] == t1["paper"] == t1["difference"] == NOT_IN_PAPER
    accuracy = trained["record"]["summary"]["final_test_acc"]
    assert t5["ours (2 ep)"] == f"{accuracy:.2f}" and t5["paper (40 ep)"] == t5["diff (2 ep)"] == NOT_IN_PAPER
    assert t6["paper (40 ep)"] == NOT_IN_PAPER and t6["later epochs (2 ep)"].endswith("(n=1)")
    assert t7["paper (K)"] == t7["paper acc (40 ep)"] == NOT_IN_PAPER
    assert tables["table5_accuracy"].loc["VGG-8", "paper (40 ep)"] == "88.32"  # the paper's network keeps its own
    rf = pd.read_csv(tmp_path / "reports/tables/receptive_field_resnet18.csv")
    assert list(rf["receptive_field"]) == list(rf["measured"]) == [1, 3, 11, 25, 53, 109]
    signal = pd.read_csv(tmp_path / "reports/tables/init_signal.csv")
    assert set(signal["model"]) == {"vgg8", "resnet18"}
    text = (tmp_path / "reports/report.md").read_text()
    assert "![resnet18 filters](figures/resnet18_filters.png)" in text


def test_a_run_logged_before_a_recipe_key_existed_reads_as_its_default():
    """train.optimizer came after the study: a run without it is the study's SGD, so it stays in the
    tables; a run with adamw differs in one ablation key and goes to the ablation table."""
    from study.analysis.selection import expected_params

    settings = project_settings(epochs=40)
    assert recipe_defaults() == {"train.optimizer": "sgd"} and settings.train.optimizer == "sgd"
    base = {"params.model": "vgg8", "params.epochs": "40", "params.seed": "0", "run_id": "r",
            "start_time": pd.Timestamp(0), **{f"params.{k}": v for k, v in expected_params(settings, None).items()}}
    old = {k: v for k, v in base.items() if k != "params.train.optimizer"}
    adamw = {**base, "params.train.optimizer": "adamw", "run_id": "a", "params.seed": "1"}
    selection = select(pd.DataFrame([old, adamw]), settings, None)
    assert [r["run_id"] for r in selection.study[("vgg8", 40)].runs] == ["r"]
    assert list(selection.ablation) == [("train.optimizer", "adamw", "vgg8", 40)]
    assert selection.left_out == []


@pytest.mark.parametrize("store", ["h200-2026-11-27", "h100-2026-11-27"])
def test_the_committed_stores_params_lack_the_new_key_and_still_load(store):
    params = yaml.safe_load((ROOT / "results" / store / "params.yaml").read_text())
    assert "optimizer" not in params["train"]  # written before the key existed: never edited by hand
    assert load_settings(ROOT / "results" / store / "params.yaml").train.optimizer == "sgd"


def test_adamw_trains_resumes_and_names_its_runs(tmp_path, image_tree, monkeypatch):
    """The ablation's optimizer: the weights move, its state round-trips bit for bit through a
    resume, and the run is named for it."""
    from study.tracking.naming import run_name
    from study.training.engine import Recipe, Trainer

    recipe = Recipe(epochs=2, batch_size=8, device="cpu", precision="fp32", optimizer="adamw")
    trainer = Trainer("vgg8", recipe)
    assert type(trainer.optimizer).__name__ == "AdamW"
    x, y = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 10
    before = trainer.model.features[0].weight.detach().clone()
    trainer._eager_step(x, y)
    assert not torch.equal(before, trainer.model.features[0].weight)
    again = Trainer("vgg8", recipe)
    again.load_state_dict(trainer.state_dict())
    for each in (trainer, again):  # the same dropout masks for both steps
        torch.manual_seed(7)
        each._eager_step(x, y)
    assert torch.equal(trainer.model.features[0].weight, again.model.features[0].weight)
    assert run_name({"model": "vgg8", "epochs": 40, "seed": 0, "train": {"optimizer": "adamw"}}) == \
        "vgg8-e40-s0-optimizer_adamw"
    assert run_name({"model": "vgg8", "epochs": 40, "seed": 0, "train": {"optimizer": "sgd"}}) == "vgg8-e40-s0"


def test_docs_extending_names_the_one_place_each_change_goes():
    text = (ROOT / "docs/extending.md").read_text()
    for place in ("models/architectures.py", "study/config.py", "params.yaml", "study/metrics.py",
                  "study/data.py"):
        assert place in text, place
    assert "dvc exp run -S 'models=[alexnet,resnet18]'" in text
