import sqlite3
import time

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import project_params, project_settings
from scipy import stats

from stages.report import build_report, choose_epochs
from study.analysis.claims import judge
from study.analysis.init_signal import analyse as analyse_init_signal
from study.analysis.init_signal import layer_signal
from study.analysis.ledger import Evidence
from study.analysis.receptive_field import analyse as analyse_receptive_fields
from study.analysis.selection import expected_params
from study.analysis.stats import fmt_p, holm, p_value, planning_seeds, prediction, seeds_for_power, welch
from study.config import flatten
from study.errors import StageError
from study.tracking.naming import run_label, run_name
from study.tracking.store import connect

SETTINGS = project_settings(epochs=40, seed=0, data={"source": "official", "train_subset": 0, "test_subset": 0})
ACC_40 = {"alexnet": 87.0, "vgg16": 10.0, "vgg16_bn": 92.5, "vgg8": 88.0}
ACC_5 = {"alexnet": 55.5, "vgg8": 25.25}
PARAMETERS = {"alexnet": 23_238_474, "vgg16": 33_638_218, "vgg16_bn": 33_646_666, "vgg8": 13_119_050}


def log_run(model, epochs, acc, seconds, seed=0, device="test device", record_id="", status="FINISHED", **override):
    """A run as the train stage logs it: recipe and data params, the runtime that ran; finished
    unless ``status`` says otherwise (a failed, killed or still running training with metrics)."""
    params = {"model": model, "epochs": epochs, "seed": seed, "num_parameters": PARAMETERS[model],
              **expected_params(SETTINGS, None), "runtime.device": device, "runtime.precision": "bf16", **override}
    with mlflow.start_run(run_name=f"{model}-e{epochs}-s{seed}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics({"final_test_acc": acc, "mean_epoch_time_s": seconds})
        for epoch in range(1, epochs + 1):  # the first epoch 5 s slower: the warm-up
            mlflow.log_metrics({"test_acc": acc * epoch / epochs, "train_loss": 2.3 / epoch,
                                "epoch_time_s": seconds + (5.0 if epoch == 1 else 0.0)}, step=epoch)
        mlflow.set_tags({"device_name": device, "torch_version": "x", "git_commit": "abc", "data_sha256": "f" * 64,
                         "record_id": record_id})
    if status != "FINISHED":
        mlflow.MlflowClient().update_run(run.info.run_id, status=status)
    time.sleep(0.01)  # distinct start times: "latest" must be well defined
    return run.info.run_id


@pytest.fixture(scope="module")
def analyses(tmp_path_factory):
    """The model analyses the report reads (receptive fields, signal at init), made once."""
    rf_dir, signal_dir = tmp_path_factory.mktemp("rf"), tmp_path_factory.mktemp("sig") / "signal"
    analyse_receptive_fields(SETTINGS.models, rf_dir)
    analyse_init_signal(SETTINGS.models, 0, signal_dir)
    return rf_dir, signal_dir


def report(tmp_path, analyses, settings=SETTINGS):
    result = build_report(settings=settings, report_dir=tmp_path / "reports", output_root=tmp_path / "outputs",
                          rf_dir=analyses[0], signal_dir=analyses[1], data_dir=tmp_path / "data")
    tables = {name: pd.read_csv(tmp_path / f"reports/tables/{name}.csv", dtype=str).set_index("model")
              for name in ("table5_accuracy", "table6_seconds_per_epoch", "table7_parameter_efficiency")}
    return result, tables, (tmp_path / "reports/report.md").read_text()


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment(experiment_id=connect(SETTINGS.mlflow.experiment)[1])
    ids = {"stale vgg8": log_run("vgg8", 40, 11.11, 9.0)}  # older, superseded by the next vgg8 run
    for model, acc in ACC_40.items():
        ids[model] = log_run(model, 40, acc, 1.5)
    for model, acc in ACC_5.items():
        # the same recipe on another device: a runtime difference never keeps a run out
        ids[f"{model}-5"] = log_run(model, 5, acc, 2.0, device="cuda:1")
    ids["other momentum"] = log_run("alexnet", 40, 99.99, 1.0, **{"train.momentum": "0.5"})  # newest, another recipe
    ids["other data"] = log_run("alexnet", 40, 77.77, 1.0, **{"data.train_subset": "2000"})
    # the recipe, newest, with metrics, but not finished: a second seed if any of them were taken
    for status, acc in (("FAILED", 66.66), ("KILLED", 55.55), ("RUNNING", 44.44)):
        ids[status] = log_run("alexnet", 40, acc, 1.0, seed=1, status=status)
    return tmp_path, ids


def test_tables_show_exactly_the_matching_runs(store, analyses):
    tmp_path, ids = store
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/README.md").write_text("kept")  # the report owns only its own entries
    _, t, text = report(tmp_path, analyses)
    t5, t6, t7 = t["table5_accuracy"], t["table6_seconds_per_epoch"], t["table7_parameter_efficiency"]
    assert t5.loc["AlexNet", "ours (40 ep)"] == "87.00" and t5.loc["AlexNet", "diff (40 ep)"] == "-0.81"
    assert t5.loc["VGG-8", "ours (40 ep)"] == "88.00"
    assert t5.loc["VGG-16 with BN", "ours (40 ep)"] == "92.50" and t5.loc["VGG-16 with BN", "paper (40 ep)"] == "91.94"
    assert t5.loc["AlexNet", "ours (5 ep)"] == "55.50" and t5.loc["VGG-8", "ours (5 ep)"] == "25.25"
    assert t5.loc["VGG-16", "ours (5 ep)"] == "not run (`dvc exp run -S epochs=5`)"
    assert t6.loc["VGG-8", "later epochs (40 ep)"] == "1.50 (n=1)"  # every Table 6 cell says its n
    assert t6.loc["VGG-8", "first epoch, start-up-sensitive (40 ep)"] == "6.50 (n=1)"
    assert t6.loc["AlexNet", "later epochs (5 ep)"] == "2.00 (n=1)" and "diff (40 ep)" not in t6.columns
    assert t6.loc["VGG-8", "device shared (40 ep)"] == "cannot tell"  # these runs record no host
    assert t7.loc["VGG-8", "params per point (K)"] == f"{13_119_050 / 88.0 / 1e3:.0f}" == "149"
    assert "99.99" not in text and "11.11" not in text and "77.77" not in text
    assert not {"66.66", "55.55", "44.44"} & set(text.replace("|", " ").split()), "an unfinished run was shown"
    assert not {ids[s] for s in ("FAILED", "KILLED", "RUNNING")} & set(
        pd.read_csv(tmp_path / "reports/tables/seed_values.csv")["run_id"])
    # what was left out, and why
    assert "- 1 finished run with train.momentum=0.5" in text
    assert "- 1 finished run with data.train_subset=2000" in text
    assert "1 other run(s) of vgg8, 40 epochs with a seed already shown (per seed: the workspace's training, else " \
           f"the latest): {ids['stale vgg8']}" in text
    provenance = pd.read_csv(tmp_path / "reports/tables/provenance_runs.csv")
    assert set(provenance["run id"]) == {ids[m] for m in ACC_40} | {ids["alexnet-5"], ids["vgg8-5"]}
    assert set(provenance["device"]) == {"test device", "cuda:1"}
    assert set(provenance["environment"]) == {"not recorded"}  # runs logged without their environment
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["README.md", "figures", "report.md", "tables"]
    for figure in ("learning_curves.png", "receptive_field_growth.png"):
        assert (tmp_path / "reports/figures" / figure).read_bytes()[:4] == b"\x89PNG"
    # categorical claims are decided at one seed, by the stated rule; the others are not
    assert '| "Completely fails to learn, stuck at 10% accuracy (random chance)" | §6.1.2; abstract; §5.2.1 | the ' \
           "paper's | VGG-16 10.00% (40 ep) | - | - (categorical rule) | 1 | - (categorical) | - (categorical) | " \
           "reproduced (categorical: every seed at chance) |" in text
    assert '| "VGG-16 with Batch Normalization dramatically outperforms standard VGG-16" | §8, 1 | the paper\'s | ' \
           "VGG-16 with BN 92.50% (40 ep), VGG-16 10.00% (40 ep) | - | - (categorical rule) | 1 / 1 | " \
           "- (categorical) | - (categorical) | reproduced (categorical: at chance against far above it) |" in text
    assert '| "The final accuracy of VGG-16 with BN is significantly higher than AlexNet or VGG-8" | §6.2, 3 | ' \
           "the paper's | VGG-16 with BN 92.50% (40 ep), AlexNet 87.00% (40 ep), VGG-8 88.00% (40 ep) | VGG-16 with " \
           "BN − AlexNet: +5.50; VGG-16 with BN − VGG-8: +4.50 | - (one seed); - (one seed) | 1 / 1; 1 / 1 | - | - | " \
           "not decided (one seed a side: no spread, no test) |" in text
    # the loss at 2.3 throughout: log_run's loss falls as 2.3 / epoch, so every seed leaves it
    assert "| VGG-16 training loss per epoch, 1 seeds × 40 epochs: 0.057 to 2.300 |" in text
    assert "**contradicted** (categorical: every seed leaves it)" in text
    assert "VGG-8 is the most parameter-efficient model" in text
    assert "| vgg16 | Pool2 | Section 4.3 text (per block) | 12 | 16 |" in text  # the paper's §4.3 list too
    assert "| vgg16 | Pool5 | Tables 2-4 | 236 | 212 |" in text
    assert "## Why plain VGG-16 does not learn: the signal at initialisation" in text
    assert (tmp_path / "reports/figures/init_signal.png").read_bytes()[:4] == b"\x89PNG"


def test_table6_times_the_runs_alone_where_a_cell_has_them(tmp_path, monkeypatch, analyses):
    """The H200 store: seed 0 trained alone, seeds 1 and 2 side by side. Their mean would be
    neither the code's speed nor a throughput: the cell shows the run alone and says what it left out."""
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment(experiment_id=connect(SETTINGS.mlflow.experiment)[1])
    client = mlflow.MlflowClient()
    windows = {0: (0, 100), 1: (200, 300), 2: (250, 350)}  # seconds: seed 0 alone, seeds 1 and 2 overlap
    for seed, (start, end) in windows.items():
        run_id = log_run("vgg8", 40, 85.0 + seed, 1.0 if seed == 0 else 3.0, seed=seed)
        client.set_tag(run_id, "host", "gpu-box")
        client.set_terminated(run_id, end_time=1_700_000_000_000 + end * 1000)
        with sqlite3.connect(tmp_path / "mlflow.db") as db:  # MLflow sets no start time after the fact
            db.execute("update runs set start_time = ? where run_uuid = ?", (1_700_000_000_000 + start * 1000, run_id))
    _, t, text = report(tmp_path, analyses)
    t6 = t["table6_seconds_per_epoch"]
    assert t6.loc["VGG-8", "later epochs (40 ep)"] == "1.00 (n=1)"  # the run alone, not 2.33 over all three
    assert t6.loc["VGG-8", "device shared (40 ep)"] == "1 alone shown; 2 shared left out"
    assert t["table5_accuracy"].loc["VGG-8", "ours (40 ep)"] == "86.00 ± 1.00 (n=3)"  # accuracy keeps every seed
    assert "it shows only those" in text


def test_seeds_are_aggregated_and_claims_judged_by_their_spread(tmp_path, monkeypatch, analyses):
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment(experiment_id=connect(SETTINGS.mlflow.experiment)[1])
    for seed, (ax, v8) in enumerate([(85.0, 85.5), (86.0, 84.5), (87.0, 86.5)]):
        log_run("alexnet", 40, ax, 1.0, seed=seed)
        log_run("vgg8", 40, v8, 2.0 + seed, seed=seed)
    _, t, text = report(tmp_path, analyses)
    t5 = t["table5_accuracy"]
    assert t5.loc["AlexNet", "ours (40 ep)"] == "86.00 ± 1.00 (n=3)"
    assert t5.loc["VGG-8", "ours (40 ep)"] == "85.50 ± 1.00 (n=3)"
    assert t["table6_seconds_per_epoch"].loc["VGG-8", "later epochs (40 ep)"] == "3.00 ± 1.00 (n=3)"
    seeds = pd.read_csv(tmp_path / "reports/tables/seed_values.csv")
    assert sorted(seeds[seeds["model"] == "alexnet"]["final_test_acc"]) == [85.0, 86.0, 87.0]
    assert sorted(seeds[seeds["model"] == "alexnet"]["seed"]) == [0, 1, 2]
    # VGG-8 0.5 points under AlexNet: the Welch interval (4 df) spans 0 and the 1-point margin
    half = stats.t.ppf(0.975, 4) * (2 / 3) ** 0.5
    v8, ax = [85.5, 84.5, 86.5], [85.0, 86.0, 87.0]
    evidence = (f"VGG-8 85.50 ± 1.00% (40 ep), AlexNet 86.00 ± 1.00% (40 ep) | VGG-8 − AlexNet: -0.50 | "
                f"[{-0.5 - half:+.2f}, {-0.5 + half:+.2f}] | 3 / 3 | ")

    def one_sided(a, b, side, shift=0.0):
        return stats.ttest_ind([x - shift for x in a], b, equal_var=False, alternative=side).pvalue

    # the paper's family here: "outperforms" (the paper's "catches up" is the same test, counted once),
    # "comparable" at the 1-point margin (two one-sided tests, the larger p), and "a similar training time"
    # at 10% of AlexNet's seconds per epoch (later epochs: VGG-8 2, 3 and 4 s, AlexNet 1 s)
    outperforms, comparable = one_sided(v8, ax, "greater"), max(one_sided(v8, ax, "greater", -1.0),
                                                                one_sided(v8, ax, "less", 1.0))
    v8_s, ax_s = [2.0, 3.0, 4.0], [1.0] * 3
    seconds = max(one_sided(v8_s, ax_s, "greater", -0.1), one_sided(v8_s, ax_s, "less", 0.1))
    adjusted = holm({"outperforms": outperforms, "comparable": comparable, "seconds": seconds})
    row = next(line for line in text.splitlines() if "VGG-8 outperforms AlexNet" in line)
    assert row.startswith('| "Despite having fewer parameters, VGG-8 outperforms AlexNet" | §8, 2; §6.3 | '
                          f"the paper's | {evidence}{fmt_p(adjusted['outperforms'])} (3) | ")
    assert "| **not supported**; the observed gap lies against the claim; were the paper's own gap the truth " \
           "(VGG-8 − AlexNet: +0.51), 80% power to show it would take about " in row
    row = next(line for line in text.splitlines() if "achieves comparable performance" in line)
    assert f"| {evidence}{fmt_p(adjusted['comparable'])} (3) | " in row and row.endswith("| not decided |")
    # our looser reading, a row of its own, labelled as ours, its own family of one
    ours = one_sided(v8, ax, "greater", -1.0)
    assert '| "[VGG-8] eventually catches up to AlexNet\'s performance (88.32% vs. 87.81% after 40 epochs)" | ' \
           f"§6.1.4 | ours: at most 1 point below (a non-inferiority margin the paper does not state) | {evidence}" \
           f"{fmt_p(ours)} (1) | " in text
    assert "95% Welch t interval" in text and "Holm" in text


def test_a_rerun_of_one_epoch_count_says_which():
    from stages.report import ledger_words

    assert ledger_words([], [], None, 3, "official")["unlike"]
    assert not ledger_words([], [], 5, 40, "official")["unlike"]


def test_welch_interval_and_the_one_sided_tests_match_scipy():
    from study.analysis.stats import in_claim, p_against, p_for

    a, b = [84.2, 85.1, 86.9], [85.8, 86.1, 86.3]  # unequal spreads: Welch's df (about 2.1) is not 4
    gap = welch(a, b)
    scipy_ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert round(gap.low, 2) == round(scipy_ci.low, 2) and round(gap.high, 2) == round(scipy_ci.high, 2)
    assert gap.n == (3, 3) and 2 < gap.df < 3
    assert abs(p_value(gap) - stats.ttest_ind(a, b, equal_var=False).pvalue) < 1e-12
    for want, side in (("greater", "greater"), ("less", "less")):  # the claim's direction, and its opposite
        assert p_for(gap, want, 0.0) == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative=side).pvalue)
        assert p_for(gap, want, 0.0) + p_against(gap, want, 0.0) == pytest.approx(1.0)
    # equivalence at a margin: the two one-sided tests, the larger p; its opposite, either side beyond the margin
    shifted = [stats.ttest_ind([x + 1 for x in a], b, equal_var=False, alternative="greater").pvalue,
               stats.ttest_ind([x - 1 for x in a], b, equal_var=False, alternative="less").pvalue]
    assert p_for(gap, "within", 1.0) == pytest.approx(max(shifted))
    assert in_claim(gap, "within", 1.0) and not in_claim(gap, "greater", 0.0) and in_claim(gap, "less", 0.0)
    assert welch([88.0], [87.0]).low is None and p_for(welch([88.0], [87.0]), "greater", 0.0) is None
    # a fixed reference: one-sample interval with n-1 df
    one = welch([10.0, 10.2, 10.4], 15.0)
    assert one.n == (3, None) and round(one.high, 4) == round(-4.8 + stats.t.ppf(0.975, 2) * 0.2 / 3**0.5, 4)


def test_holm_power_and_the_one_run_interval_match_known_cases():
    # Holm: sorted p times (m - rank), running maximum, capped at 1
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert holm({"a": 0.6, "b": 0.9}) == {"a": 1.0, "b": 1.0}
    # the textbook two-sample case: half an sd, 5% two-sided, 80% power -> 64 a side (Cohen 1988); one-sided 51
    assert seeds_for_power(0.5, 1.0, 1.0) == 64 and seeds_for_power(1.0, 1.0, 1.0) == 17
    assert seeds_for_power(0.5, 1.0, 1.0, sides=1) == 51 and seeds_for_power(-0.5, 1.0, 1.0, sides=1) is None
    assert seeds_for_power(0.04, 1.0, 1.0) == 9813  # found, though the search passes powers of two
    assert seeds_for_power(0.5, 1.0, 1.0, alpha=0.05 / 4) > 64
    # the H200 store's VGG-8 and AlexNet, to show the paper's +0.51 one-sided in a family of 10: each sd at its
    # own chi-square bounds (2 df each) gives a wide range
    gap = welch([84.25, 84.83, 84.91], [85.40, 85.41, 85.55])
    assert planning_seeds(0.51, gap, 0.05 / 10) == (10, 5, 246)
    # the paper's single run against one new run: sd²(1 + 1/n) plus its test-set noise, Welch-Satterthwaite df
    low, high, p, q = prediction([85.40, 85.41, 85.55], 87.81, 10_000)
    assert q == pytest.approx(100 * (0.8781 * 0.1219 / 10_000) ** 0.5)
    sd = stats.tstd([85.40, 85.41, 85.55])
    variance = sd**2 * 4 / 3 + q**2
    df = variance**2 / ((sd**2 * 4 / 3) ** 2 / 2)
    assert p == pytest.approx(2 * stats.t.sf((87.81 - 85.4533333) / variance**0.5, df), rel=1e-4)
    assert high == pytest.approx(85.4533333 + stats.t.ppf(0.975, df) * variance**0.5, rel=1e-6)


def test_a_run_that_differs_from_the_recipe_says_so_in_its_name():
    recipe = {"model": "vgg16", "epochs": 40, "seed": 0,
              "train": {"batch_size": 128, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "init": "default"}}
    assert run_name(recipe) == "vgg16-e40-s0"
    assert run_name({**recipe, "train": {**recipe["train"], "init": "kaiming"}}) == "vgg16-e40-s0-init_kaiming"
    assert run_name({**recipe, "train": {**recipe["train"], "lr": 0.001, "init": "kaiming"}}) == \
        "vgg16-e40-s0-lr_0.001-init_kaiming"
    assert run_name({**recipe, "train": {**recipe["train"], "batch_size": 16}}) == "vgg16-e40-s0"  # tiny runs
    # the data's identity as prepare read it from the images (meta.json), never the file's name
    mirror = {**recipe, "data": {"source": "../shared/data/cifar10-jpeg.tar.gz", "jpeg_quality": 75}}
    assert run_name(mirror) == "vgg16-e40-s0"
    assert run_name({**mirror, "data": {"source": "x/a.tar.gz", "jpeg_quality": 25}}) == "vgg16-e40-s0-jpeg_q25"
    assert run_name({**mirror, "data": {"source": "cifar10-jpeg-q25.tar.gz", "jpeg_quality": 75}}) == "vgg16-e40-s0"
    assert run_name({**mirror, "data": {"source": "official", "jpeg_quality": None}}) == "vgg16-e40-s0"
    # a figure's title says the same in words, a one-epoch run in the singular
    variant = {**mirror, "data": {"source": "v.tar.gz", "jpeg_quality": 25}}
    assert run_label(variant) == "vgg16, 40 epochs, seed 0, jpeg_q25"
    assert run_label({**recipe, "epochs": 1}) == "vgg16, 1 epoch, seed 0"


def test_a_one_epoch_curve_has_whole_epoch_ticks():
    from study.figures import integer_epochs, pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([1], [10.0], marker=".")
    integer_epochs(ax)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    plt.close(fig)
    assert ticks == [1.0]  # matplotlib's own integer ticks gave 0.96, 0.98, ... 1.04


def test_an_ablation_run_has_its_own_table_and_never_enters_the_study(tmp_path, monkeypatch, analyses):
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment(experiment_id=connect(SETTINGS.mlflow.experiment)[1])
    log_run("vgg16", 40, 10.0, 1.0)
    kaiming = log_run("vgg16", 40, 87.5, 1.0, **{"train.init": "kaiming"})
    result, t, text = report(tmp_path, analyses)
    assert t["table5_accuracy"].loc["VGG-16", "ours (40 ep)"] == "10.00"
    ablation = pd.read_csv(tmp_path / "reports/tables/ablation.csv", dtype=str)
    row = ablation.iloc[0]
    assert (row["setting"], row["model"], row["epochs"]) == ("train.init=kaiming", "VGG-16", "40")
    assert row["test acc"] == "87.50" and row["recipe's test acc"] == "10.00"
    assert row["train loss, epochs 1-5"] == "2.300 / 1.150 / 0.767 / 0.575 / 0.460"
    provenance = pd.read_csv(tmp_path / "reports/tables/provenance_runs.csv").set_index("run id")
    assert provenance.loc[kaiming, "used for"] == "ablation: train.init=kaiming"  # listed, and apart
    assert (provenance["used for"] == "Tables 5-7").sum() == 1
    assert "## Ablation: one setting changed" in text and "87.50" in text


def test_long_column_missing_says_how_to_fill_it(tmp_path, monkeypatch, analyses):
    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment(experiment_id=connect(SETTINGS.mlflow.experiment)[1])
    log_run("vgg8", 5, 30.0, 2.0)
    _, t, _ = report(tmp_path, analyses)
    t5 = t["table5_accuracy"]
    assert t5.loc["VGG-8", "ours (40 ep)"] == "not run (`dvc repro`)"
    assert t5.loc["VGG-8", "ours (5 ep)"] == "30.00"
    assert t5.loc["AlexNet", "ours (5 ep)"] == "not run (`dvc exp run -S epochs=5`)"


def test_epoch_columns():
    assert choose_epochs({("a", 40): 1, ("a", 5): 1}, epochs=5, short_epochs=5) == (5, 40)
    assert choose_epochs({("a", 1): 1, ("a", 2): 1}, epochs=2, short_epochs=5) == (1, 2)
    assert choose_epochs({("a", 40): 1}, epochs=40, short_epochs=5) == (None, 40)
    assert choose_epochs({}, epochs=40, short_epochs=5) == (None, 40)


def test_missing_empty_or_corrupt_store_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match="no MLflow store at .*mlflow.db and no trained outputs"):
        build_report(settings=SETTINGS, report_dir=tmp_path / "reports")
    assert not (tmp_path / "mlflow.db").exists()
    connect(SETTINGS.mlflow.experiment)
    with pytest.raises(StageError, match="has no finished runs in experiment 'alexnet-vgg-cifar10'"):
        build_report(settings=SETTINGS, report_dir=tmp_path / "reports")
    assert not (tmp_path / "reports").exists()
    (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StageError, match=r"MLflow store .*mlflow.db is not a readable MLflow database .*mv .*\.bad"):
        build_report(settings=SETTINGS, report_dir=tmp_path / "reports")


def test_the_signal_vanishes_through_plain_vgg16_and_survives_with_bn_or_kaiming():
    def gradient_ratio(model, init):  # gradient at the first conv over that at the last conv
        table = layer_signal(model, init)
        convs = table[table["name"].str.startswith("conv")]
        assert list(convs["layer"]) == list(range(1, 14)) if model.startswith("vgg16") else True
        return convs["backward_std"].iloc[0] / convs["backward_std"].iloc[-1]

    assert len(layer_signal("vgg16", "default")) == 16  # 13 convs + 3 linear layers
    assert gradient_ratio("vgg16", "default") < 1e-4  # vanishes
    assert gradient_ratio("vgg16_bn", "default") > 1e-2  # BN keeps it
    assert gradient_ratio("vgg16", "kaiming") > 1e-2  # so does Kaiming's init


def test_the_workspace_training_wins_over_a_newer_run_of_the_same_seed(tmp_path, monkeypatch, analyses):
    """After `dvc exp apply` of an older result, the report shows what DVC shows."""
    import json

    monkeypatch.chdir(tmp_path)
    mlflow.set_experiment(experiment_id=connect(SETTINGS.mlflow.experiment)[1])
    log_run("vgg8", 40, 84.0, 1.0, record_id="r-applied")
    newer = log_run("vgg8", 40, 86.0, 1.0, record_id="r-newer")
    import torch

    from study.metrics import METRICS_JSON
    from study.outputs import training_metrics

    out = tmp_path / "outputs/vgg8"  # the applied training's outputs, bound together as the train stage writes them
    out.mkdir(parents=True)
    record = {"record_id": "r-applied", "recipe": SETTINGS.recipe("vgg8"), "runtime": {}, "provenance": {},
              "history": [],
              "summary": dict.fromkeys(METRICS_JSON, 1.0)}
    torch.save({"model_name": "vgg8", "state_dict": {}, "record": record}, out / "checkpoint.pt")
    (out / "record.json").write_text(json.dumps(record))
    (out / "metrics.json").write_text(json.dumps(training_metrics(record)))
    _, t, text = report(tmp_path, analyses)
    assert t["table5_accuracy"].loc["VGG-8", "ours (40 ep)"] == "84.00"
    assert newer in text.split("## Runs left out")[1]


def test_a_tiny_kaiming_training_is_named_apart_from_the_recipe(tmp_path, image_tree, monkeypatch):
    from conftest import TINY

    from stages.prepare import prepare
    from stages.train import run_training

    monkeypatch.chdir(tmp_path)
    prepare(source=str(image_tree), out_dir=tmp_path / "data" / "cifar10")
    settings = project_settings(**{**TINY, "epochs": 1, "train": {**TINY["train"], "init": "kaiming"}})
    run_training(model="alexnet", settings=settings, progress=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the training's own helper process logged it
    runs = mlflow.search_runs(experiment_names=[settings.mlflow.experiment])
    assert list(runs["tags.mlflow.runName"]) == ["alexnet-e1-s0-init_kaiming"]
    assert run_name(settings.recipe("alexnet")) == "alexnet-e1-s0-init_kaiming"


def test_the_committed_h100_store_does_not_support_vgg8_over_alexnet(tmp_path, monkeypatch, analyses):
    """The committed H100 store, two seeds a side: on the paper's reading (VGG-8 at or above AlexNet)
    the observed gap lies against the claim, no test decides it: not supported; the row says gap,
    interval, n and the seeds the paper's own gap would need."""
    import shutil

    from conftest import ROOT

    from study.config import load_settings

    store = tmp_path / "store"
    shutil.copytree(ROOT / "results/h100-2026-11-27", store, ignore=shutil.ignore_patterns("report"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    build_report(settings=load_settings(store / "params.yaml"), report_dir=store / "report",
                 output_root=store / "outputs", weights=False, rf_dir=analyses[0], signal_dir=analyses[1],
                 data_dir=tmp_path / "x")
    text = (store / "report/report.md").read_text()
    for claim in ("Despite having fewer parameters, VGG-8 outperforms AlexNet", "eventually catches up"):
        row = next(line for line in text.splitlines() if claim in line)  # the paper's reading comes first
        assert "| the paper's | VGG-8 84.61 ± 0.37% (40 ep), AlexNet 85.49 ± 0.18% (40 ep) | " \
               "VGG-8 − AlexNet: -0.88 | [-2.68, +0.92] | 2 / 2 | " in row
        assert "| **not supported**; the observed gap lies against the claim; " in row
        assert "were the paper's own gap the truth (VGG-8 − AlexNet: +0.51), 80% power to show it would take " \
               "about " in row
    assert "/work/" not in text and "sqlite:" not in text and ".device/" not in text  # no machine paths
    assert "`store/mlflow.db`" in text
    provenance = pd.read_csv(store / "report/tables/provenance_runs.csv")
    assert "ablation: train.init=kaiming" in set(provenance["used for"]) and len(provenance) == 17


def test_device_sharing_is_told_from_host_device_and_times_or_said_unknowable():
    from study.analysis.speed import device_sharing

    t = pd.Timestamp
    runs = pd.DataFrame([
        {"run_id": "a", "tags.host": "h1", "tags.device_name": "H100", "start_time": t(0), "end_time": t(100)},
        {"run_id": "b", "tags.host": "h1", "tags.device_name": "H100", "start_time": t(50), "end_time": t(150)},
        {"run_id": "c", "tags.host": "h1", "tags.device_name": "H100", "start_time": t(200), "end_time": t(300)},
        {"run_id": "d", "tags.host": "h2", "tags.device_name": "H100", "start_time": t(0), "end_time": t(300)},
        {"run_id": "e", "tags.host": None, "tags.device_name": "H100", "start_time": t(0), "end_time": t(300)},
    ])
    assert device_sharing(runs) == {"a": 1, "b": 1, "c": 0, "d": 0, "e": None}


def test_runs_on_a_jpeg_variant_get_their_own_section_beside_the_mirror(store, analyses):
    tmp_path, _ = store
    log_run("alexnet", 40, 86.0, 1.5, seed=1)  # the mirror (the recipe's data): 87.0 and 86.0
    for seed, acc in [(0, 85.0), (1, 84.5)]:
        log_run("alexnet", 40, acc, 1.0, seed=seed, **{"data.source": "v/a.tar.gz", "data.jpeg_quality": "50"})
    log_run("alexnet", 40, 80.0, 1.0, **{"data.source": "v/b.tar.gz", "data.jpeg_quality": "25"})
    log_run("alexnet", 40, 70.0, 1.0, **{"data.source": "v/b.tar.gz", "data.jpeg_quality": "25", "train.lr": "0.1"})
    result, tables, text = report(tmp_path, analyses)
    rows = pd.read_csv(tmp_path / "reports/tables/jpeg_cost.csv", dtype=str).set_index("JPEG quality")
    assert list(rows.index) == ["75 (the mirror)", "50", "25"]
    assert rows.loc["75 (the mirror)", "test acc (%)"] == "86.50 ± 0.71"
    # paired by seed: seed 0 85 - 87, seed 1 84.5 - 86, a paired t on the differences (1 df)
    paired = stats.ttest_rel([85.0, 84.5], [87.0, 86.0])
    assert rows.loc["50", "test acc (%)"] == "84.75 ± 0.35"
    assert rows.loc["50", "difference to the mirror (same seeds)"] == "-1.75"
    ci = paired.confidence_interval(0.95)
    assert rows.loc["50", "95% interval (uncorrected)"] == f"[{ci.low:+.2f}, {ci.high:+.2f}]"
    assert rows.loc["25", "n"] == "1" and rows.loc["25", "test acc (%)"] == "80.00"  # the lr=0.1 run is not in it
    assert rows.loc["25", "95% interval (uncorrected)"] == "- (one seed)"
    assert (tmp_path / "reports/figures/jpeg_cost.png").stat().st_size > 10_000
    assert "share" not in text.split("## What the JPEG mirror costs")[1].split("## Why plain")[0]  # no share of a gap
    # the slope over quality per seed (seed 0: 87, 85, 80 at 75, 50, 25; seed 1: 86, 84 at 75, 50), tested over seeds
    import numpy as np

    slopes = [10 * np.polyfit([75, 50, 25], [87.0, 85.0, 80.0], 1)[0], 10 * np.polyfit([75, 50], [86.0, 84.5], 1)[0]]
    p_slope = stats.ttest_1samp(slopes, 0.0).pvalue
    assert f"- AlexNet (40 epochs): {np.mean(slopes):+.2f} points of accuracy per 10 points of JPEG quality " \
           f"(qualities 75, 50, 25; per seed: 0: {slopes[0]:+.2f}, 1: {slopes[1]:+.2f}), 95% interval " in text
    assert f"p = {fmt_p(p_slope)} (t over the 2 seeds' slopes, 1 df; uncorrected)." in text
    assert rows.loc["50", "p (Holm)"] == fmt_p(paired.pvalue)  # the only tested step: Holm leaves its p
    assert rows.loc["50", "verdict"] == ("lower than the mirror" if paired.pvalue < 0.05 else "not decided")
    assert rows.loc["25", "p (Holm)"] == "-" and rows.loc["25", "verdict"] == "not decided"
    assert "The 1 tested difference forms one family" in text
    assert "1 finished run with data.source=v/b.tar.gz and train.lr=0.1" in result["selection"].left_out
    assert not any("v/a.tar.gz" in line for line in result["selection"].left_out)  # shown, so not left out
    assert result["tables"]["table5_accuracy"].set_index("model").loc["AlexNet", "ours (40 ep)"] == "86.50 ± 0.71 (n=2)"


def test_a_workspace_trained_on_a_jpeg_variant_shows_its_runs_in_the_tables(store, analyses):
    """A queued experiment with data.source on a variant: its report's Table 5 holds its own runs. The
    workspace's data is a variant by what prepare read from its images (meta.json), whatever its name."""
    import json

    tmp_path, _ = store
    source = "v/renamed.tar.gz"
    on_variant = project_settings(epochs=40, seed=0, data={"source": source, "train_subset": 0, "test_subset": 0})
    (tmp_path / "data").mkdir()
    (tmp_path / "data/meta.json").write_text(json.dumps({"source": source, "jpeg_quality": 50}))
    log_run("alexnet", 40, 84.0, 1.0, **{"data.source": source, "data.jpeg_quality": "50"})
    _, tables, text = report(tmp_path, analyses, settings=on_variant)
    assert tables["table5_accuracy"].loc["AlexNet", "ours (40 ep)"] == "84.00"
    assert "re-encoded at JPEG quality 50: its runs are the tables above" in text
    assert tables["table5_accuracy"].loc["VGG-8", "ours (40 ep)"] != "88.00"  # the mirror's runs are not mixed in


def test_the_filter_to_init_number_is_one_for_an_untrained_network_and_shared_across_models():
    """evaluate's measure of how far a first layer moved: 1 for the seed's own untrained network,
    lower once it moves; every network starts its first layer from the same weights at one seed."""
    import torch
    from torch import nn

    from models.network import build_model
    from stages.evaluate import init_correlation

    recipe = {"seed": 3, "train": {"init": "default"}}
    firsts = {}
    for model in ("alexnet", "vgg16", "vgg16_bn", "vgg8"):
        torch.manual_seed(3)
        firsts[model] = next(m for m in build_model(model).features if isinstance(m, nn.Conv2d)).weight.detach()
        assert init_correlation(model, recipe, firsts[model]) == pytest.approx(1.0)
    assert all(torch.equal(firsts["alexnet"], w) for w in firsts.values())  # one shared start per seed
    noise = torch.randn(firsts["vgg8"].shape, generator=torch.Generator().manual_seed(0))
    moved = firsts["vgg8"] + 0.5 * firsts["vgg8"].std() * noise
    assert 0.5 < init_correlation("vgg8", recipe, moved) < 0.99
    assert init_correlation("vgg8", {**recipe, "seed": 4}, firsts["vgg8"]) < 0.5  # another seed's start


def test_feature_maps_share_one_colour_scale_and_say_what_they_clip(tmp_path):
    import numpy as np

    from study.figures import FEATURE_MAP_TOP, plot_feature_maps

    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    maps = np.full((2, 4, 32, 32), 0.5, dtype=np.float32)
    maps[0, 0] = FEATURE_MAP_TOP * 3  # a quarter of one image's channels: 1/8 of the shown values
    assert plot_feature_maps(images, maps, tmp_path / "a.png", "t") == pytest.approx(1 / 8)
    assert plot_feature_maps(images, maps * 0, tmp_path / "b.png", "t") == 0.0
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_readers_take_one_value_per_epoch_and_name_a_run_that_holds_more():
    """A run that logged an epoch twice (a kill between the log and the state, under older code)
    counts each epoch once, the last value logged, and is named for the report."""
    from types import SimpleNamespace

    from study.analysis.selection import StepReader

    logged = [(1, 5.0, 100), (2, 5.1, 200), (2, 8.3, 300), (3, 5.2, 400)]  # step, value, timestamp
    client = SimpleNamespace(get_metric_history=lambda run_id, key: [
        SimpleNamespace(step=s, value=v, timestamp=ts) for s, v, ts in logged])
    steps = StepReader(client)
    assert steps("r1", "epoch_time_s") == [(1, 5.0), (2, 8.3), (3, 5.2)]
    assert steps.repeated == {"r1"}
    logged.pop(2)
    assert steps("r2", "epoch_time_s") == [(1, 5.0), (2, 5.1), (3, 5.2)]
    assert steps.repeated == {"r1"} and StepReader(client).repeated == set()  # one reader per report


def test_the_signal_at_initialisation_is_computed_once_per_machine_and_code(tmp_path, monkeypatch):
    """The init_signal stage and a report built from MLflow alone share one cache: the second
    process reads what the first computed (identical), and a change to what decides it is a new key."""
    from study.analysis import init_signal

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = init_signal.cached_signal("vgg8", "default", 0)
    path = init_signal.signal_cache_file("vgg8", "default", 0)
    assert path.is_file() and path.is_relative_to(tmp_path)
    monkeypatch.setattr(init_signal, "layer_signal", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    pd.testing.assert_frame_equal(init_signal.cached_signal("vgg8", "default", 0), first)
    # a number edited in the cache, or the file cut short: computed again, in one line, never trusted
    import json

    cached = json.loads(path.read_text())
    said = []
    for broken in (json.dumps({**cached, "csv": cached["csv"].replace(",", ",9", 1)}), path.read_text()[:200]):
        path.write_text(broken)
        monkeypatch.setattr(init_signal, "layer_signal", lambda *a, **k: first.copy())
        pd.testing.assert_frame_equal(init_signal.cached_signal("vgg8", "default", 0, log=said.append), first)
        assert json.loads(path.read_text()) == cached  # rewritten whole
    assert [line.split(str(path))[1].split(";")[0] for line in said] == [
        " does not match its digest (edited or cut short)", " is unreadable"]
    monkeypatch.setattr(init_signal, "BATCH", init_signal.BATCH * 2)
    assert init_signal.signal_cache_file("vgg8", "default", 0) != path


def cell(*accuracies: float):
    from study.analysis.selection import Cell

    return Cell([pd.Series({"metrics.final_test_acc": a, "params.seed": s}) for s, a in enumerate(accuracies)])


@pytest.mark.parametrize(("vgg16", "bn", "fails", "outperforms"), [
    ((10.0, 10.2, 9.9), (88.0, 88.5, 88.2), "reproduced (categorical: every seed at chance)",
     "reproduced (categorical: at chance against far above it)"),
    ((45.0, 50.0, 48.0), (88.0, 88.5, 88.2), "**contradicted** (categorical: no seed at chance)", None),
    ((10.0, 45.0, 10.1), (88.0, 88.5, 88.2), "not decided (the seeds disagree)", None),
    ((10.0, 10.1, 9.9), (10.0, 10.3, 9.8), "reproduced (categorical: every seed at chance)",
     "**contradicted** (categorical: VGG-16 with BN at chance too)"),
])
def test_the_categorical_rule_reaches_every_verdict(vgg16, bn, fails, outperforms):
    """Each branch of the stated rule; a VGG-16 that is not at chance leaves "dramatically
    outperforms" to Welch's test, one-sided, in the paper's family."""
    study = {("vgg16", 40): cell(*vgg16), ("vgg16_bn", 40): cell(*bn)}
    rows = {r["where"]: r for r in judge(Evidence(study, None, 40))}
    fail = rows["§6.1.2; abstract; §5.2.1"]
    assert fail["verdict"] == fails and fail["p for (Holm, family)"] == "- (categorical)"
    if outperforms:
        assert rows["§8, 1"]["verdict"] == outperforms and rows["§8, 1"]["95% interval"] == "- (categorical rule)"
    else:  # tested: the one-sided Welch p against 0, in a family with the abstract's (BN above VGG-16 too: same test)
        expected = stats.ttest_ind(bn, vgg16, equal_var=False, alternative="greater").pvalue
        assert rows["§8, 1"]["p for (Holm, family)"] == f"{fmt_p(expected)} (1)"
        assert rows["§8, 1"]["verdict"].startswith("reproduced" if expected < 0.05 else "not decided")


def test_the_ledger_counts_its_verdicts_and_judges_table5_cell_by_cell():
    """Every verdict word the ledger uses is counted on the reading it belongs to; a Table 5 cell
    outside the one-run interval is contradicted, one inside not decided, one seed untested."""
    from study.analysis.claims import absolute_rows, count_line

    study = {("alexnet", 40): cell(85.4, 85.41, 85.55), ("vgg8", 40): cell(84.25, 84.83, 84.91),
             ("alexnet", 5): cell(56.0), ("vgg8", 5): cell(20.0, 30.0, 35.0)}
    evidence = Evidence(study, 5, 40)
    rows = judge(evidence)
    line = count_line(rows)
    assert line.startswith(f"On the paper's own readings, {sum(not r['reading'].startswith('ours') for r in rows)} "
                           "claims: ")
    assert "2 not supported" in line  # outperforms, and the paper's "catches up"
    absolute = {(r["model"], r["epochs"]): r for r in absolute_rows(evidence, {("alexnet", 40): "abc (0, 1, 2)"})}
    assert absolute[("AlexNet", 40)]["verdict"] == "**contradicted** (the rerun is lower)"
    assert absolute[("AlexNet", 40)]["seeds' commits"] == "abc (0, 1, 2)"
    assert absolute[("VGG-8", 5)]["verdict"] == "not decided (the paper's value lies inside the interval)"
    assert absolute[("AlexNet", 5)]["verdict"] == "not decided (one seed: no spread, no test)"
    assert absolute[("AlexNet", 40)]["p (Holm, family)"].endswith("(3)")  # three tested cells


def test_decimal_rounding_is_half_up_and_a_spread_never_prints_as_zero():
    from study.analysis.stats import fmt_number, fmt_sd, fmt_stat

    assert fmt_number(80.975) == "80.98" and fmt_number(-0.005, "+.2f") == "-0.01" and fmt_number(0.0001) == "0.00"
    assert fmt_sd(0.27, ".0f") == "0.27" and fmt_sd(0.0, ".0f") == "0"
    assert fmt_stat([271.9, 272.2, 272.4], ".0f") == "272 ± 0.25 (n=3)"


def test_the_reference_is_registered_only_on_request_from_the_full_size_recipe_and_never_twice(tmp_path,
                                                                                              monkeypatch):
    """`stages.register` alone writes the registry: a params.yaml with a subset is refused in one
    line; the recipe's run of params.yaml's seed takes `@reference`, a run of another seed or
    length gets no version; a new seed moves the alias with a version of its own; registering
    again adds nothing; without a reference, loading it is one line naming what to run."""
    from stages.register import full_size_refusal, register
    from study.config import parse_settings
    from study.errors import StageError
    from study.tracking.naming import CHECKPOINT_TAG
    from study.tracking.registry import REFERENCE_ALIAS, load_reference

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # models:/ resolved there
    monkeypatch.chdir(tmp_path)
    params = project_params(models=["vgg8"], mlflow={"experiment": "exp"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    client, experiment = connect("exp")  # the store made as the stages make it (MLflow's creation, locked)
    with pytest.raises(StageError, match=r"^no exp-vgg8@reference in the MLflow store .*`python -m stages.register`$"):
        load_reference("vgg8")
    settings = parse_settings(params)
    expected = {f"params.{k}": str(v) for k, v in flatten(settings.recipe("vgg8")).items()}

    def trained(epochs, seed, checked=True):
        run = client.create_run(experiment)
        for key, value in {**expected, "params.epochs": str(epochs), "params.seed": str(seed)}.items():
            client.log_param(run.info.run_id, key.removeprefix("params."), value)
        client.set_terminated(run.info.run_id)
        model = client.create_logged_model(experiment, name=f"vgg8-e{epochs}", source_run_id=run.info.run_id,
                                           tags={CHECKPOINT_TAG: "f" * 64} if checked else {})
        return run.info.run_id, model.model_id

    (long0, m_long0), (long1, m_long1), _, _ = trained(40, 0), trained(40, 1), trained(5, 0), trained(40, 2, False)

    def versions():
        return {v.source.removeprefix("models:/"): v.version for v in client.search_model_versions("name = 'exp-vgg8'")}

    subset = parse_settings({**params, "data": {**params["data"], "train_subset": 4500}})
    assert full_size_refusal(subset).startswith("@reference is the study's recipe at full size, and params.yaml asks "
                                                "for a subset (data.train_subset 4500); reset it")
    with pytest.raises(StageError, match="full size"):
        register(subset, None)
    assert versions() == {}
    assert register(settings, None) == [f"exp-vgg8@{REFERENCE_ALIAS}: version 1 added, run {long0}"]
    assert versions() == {m_long0: 1}  # seed 1, the 5-epoch run and the unchecked one: no version
    assert register(settings, None) == [f"exp-vgg8@{REFERENCE_ALIAS}: version 1 already there, run {long0} (unchanged)"]
    seed1 = parse_settings({**params, "seed": 1})
    assert register(seed1, None) == [f"exp-vgg8@{REFERENCE_ALIAS}: version 2 added, run {long1}"]
    assert client.get_model_version_by_alias("exp-vgg8", REFERENCE_ALIAS).source == f"models:/{m_long1}"
    assert versions() == {m_long0: 1, m_long1: 2}
    with pytest.raises(StageError, match=r"^exp-vgg8@reference \(version 2, run .*\) has no weights in this store"):
        load_reference("vgg8")  # a logged model's entry without its files, as a results store holds them
    with pytest.raises(StageError, match="no finished run of the recipe \\(40 epochs, seed 2, full size\\) with a "
                       "checked model for vgg8"):
        register(parse_settings({**params, "seed": 2}), None)


def test_the_report_computes_the_analyses_for_every_network_params_yaml_names(tmp_path):
    """The analyses' stages ran for fewer networks than params.yaml names (an experiment of two,
    then `git checkout params.yaml`): the report computes the missing ones instead of failing with
    a FileNotFoundError traceback."""
    from stages.report import model_analyses

    rf, signal = tmp_path / "rf", tmp_path / "signal"
    analyse_receptive_fields(["alexnet"], rf)
    analyse_init_signal(["alexnet"], 0, signal)
    found = model_analyses(["alexnet", "vgg8"], 0, rf, signal)
    assert set(found["rf_tables"]) == {"alexnet", "vgg8"}
    assert set(found["signal"]["model"]) == {"alexnet", "vgg8"}
