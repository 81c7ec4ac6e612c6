"""Stage `report`: reports/report.md with the study's tables beside ours, rebuilt from the
MLflow store (the source of truth) and the cached analysis outputs, without training.

For each model and epoch count the numbers come from the latest finished MLflow run whose
settings match the current params.yaml apart from `epochs` (and `report.ignore_params`).
The long column is the largest epoch count run; the short one `report.short_epochs` (the
study's 5) or else the largest count below the long one.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd
from torch import nn

from models import MODEL_NAMES, build_model, count_parameters
from stages import paper
from stages.common import StageError, atomic_entries, load_params, run_main
from stages.receptive_field import OUT_DIR as RF_DIR
from stages.receptive_field import analyse as analyse_receptive_fields
from stages.tracking import flatten
from stages.train import OUTPUT_ROOT, recipe_from_params, resolved_config

REPORT_DIR = Path("reports")
NAMES = {"alexnet": "AlexNet", "vgg16": "VGG-16", "vgg16_bn": "VGG-16 with BN", "vgg8": "VGG-8"}


# ---------------------------------------------------------------- which runs
def expected_settings(params: dict) -> dict[str, str]:
    """The MLflow params a run must carry to count: the train stage's resolved config
    (as logged, values as strings) apart from the model and the epoch count."""
    source = (params.get("data", {}) or {}).get("source", "official")
    config = flatten(resolved_config("", params, recipe_from_params(params), {"source": source}))
    return {key: str(value) for key, value in config.items() if key not in ("model", "epochs")}


def select_runs(runs: pd.DataFrame, params: dict, ignore=()) -> dict[tuple[str, int], pd.Series]:
    """(model, epochs) -> the latest finished run with matching settings."""
    if runs.empty:
        return {}
    expected = {k: v for k, v in expected_settings(params).items() if k not in set(ignore)}
    match = pd.Series(True, index=runs.index)
    for key, value in expected.items():
        column = f"params.{key}"
        match &= runs[column].astype(str).eq(value) if column in runs else False
    chosen: dict[tuple[str, int], pd.Series] = {}
    for _, run in runs[match].sort_values("start_time", ascending=False).iterrows():
        key = (run["params.model"], int(run["params.epochs"]))
        chosen.setdefault(key, run)
    return chosen


def choose_epochs(selected: dict, epochs: int, short_epochs: int) -> tuple[int | None, int]:
    counts = {e for _, e in selected}
    long = max(counts | {epochs})
    below = sorted(c for c in counts if c < long)
    short = short_epochs if short_epochs in below else (below[-1] if below else None)
    return short, long


# ---------------------------------------------------------------- tables
def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None or pd.isna(value) else format(value, spec)


def md_table(df: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(df.columns))) + "|"
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def not_run(epochs: int | None, workspace_epochs: int) -> str:
    """The cell of a run that is missing, with the command that fills it."""
    epochs = epochs or paper.EPOCHS[0]
    command = "dvc repro" if epochs == workspace_epochs else f"dvc exp run -S epochs={epochs}"
    return f"not run (`{command}`)"


def metric(run, name: str):
    return None if run is None else run.get(f"metrics.{name}")


def study_tables(models, selected: dict, short: int | None, long: int, workspace_epochs: int
                 ) -> dict[str, pd.DataFrame]:
    t1, t5, t6, t7 = [], [], [], []
    for model in models:
        net = build_model(model)
        convs = sum(isinstance(m, nn.Conv2d) for m in net.features)
        fcs = sum(isinstance(m, nn.Linear) for m in net.classifier)
        params = count_parameters(net)
        t1.append({"model": NAMES[model], "depth (conv+FC)": f"{convs}+{fcs}={convs + fcs}",
                   "paper depth": paper.DEPTH[model], "parameters": f"{params:,}",
                   "paper": f"{paper.PARAMS_M[model]}M", "difference": f"{params / 1e6 - paper.PARAMS_M[model]:+.2f}M"})
        row5, row6 = {"model": NAMES[model]}, {"model": NAMES[model]}
        for idx, epochs in enumerate((short, long)):  # the study's (5, 40) columns
            run = selected.get((model, epochs)) if epochs else None
            label = f"{epochs} ep" if epochs else "short run"
            for row, name, published in ((row5, "final_test_acc", paper.ACCURACY),
                                         (row6, "mean_epoch_time_s", paper.SECONDS)):
                ours, theirs = metric(run, name), published[model][idx]
                row[f"ours ({label})"] = fmt(ours) if run is not None else not_run(epochs, workspace_epochs)
                row[f"paper ({paper.EPOCHS[idx]} ep)"] = fmt(theirs)
                row[f"diff ({label})"] = fmt(ours - theirs, "+.2f") if ours is not None else "-"
        t5.append(row5)
        t6.append(row6)
        l_run = selected.get((model, long))
        acc = metric(l_run, "final_test_acc")
        per_point = params / acc / 1e3 if acc else None
        t7.append({"model": NAMES[model], "parameters": f"{params / 1e6:.1f}M",
                   f"test acc ({long} ep)": fmt(acc) if l_run is not None else not_run(long, workspace_epochs),
                   "paper acc (40 ep)": fmt(paper.ACCURACY[model][1]),
                   "params per point": f"{per_point:.0f}K" if per_point else "-",
                   "paper": f"{paper.PER_POINT_K[model]}K",
                   "diff": f"{per_point - paper.PER_POINT_K[model]:+.0f}K" if per_point else "-"})
    return {"table1_parameters": pd.DataFrame(t1), "table5_accuracy": pd.DataFrame(t5),
            "table6_seconds_per_epoch": pd.DataFrame(t6), "table7_parameter_efficiency": pd.DataFrame(t7)}


# ---------------------------------------------------------------- figures
def plot_learning_curves(client, models, selected: dict, long: int, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    drawn = False
    for model in models:
        run = selected.get((model, long))
        if run is None:
            continue
        for ax, name in ((ax_acc, "test_acc"), (ax_loss, "train_loss")):
            points = sorted((m.step, m.value) for m in client.get_metric_history(run["run_id"], name))
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 60 else None,
                    label=NAMES[model])
        drawn = True
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"Test accuracy, {long}-epoch runs")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title=f"Training loss, {long}-epoch runs")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


# ---------------------------------------------------------------- discussion
def discussion(selected: dict, short: int | None, long: int, data_source: str) -> list[str]:
    def acc(model, epochs):
        run = selected.get((model, epochs)) if epochs else None
        return metric(run, "final_test_acc")

    lines = []
    if (short, long) != paper.EPOCHS:
        lines.append(f"*These runs are {short or '-'} and {long} epochs, not the study's 5 and 40: the verdicts below "
                     "compare like with unlike and say little about the study's claims.*")
    if data_source != "official":
        lines.append(f"*Data: `{data_source}`, not the official CIFAR-10 archive. On the JPEG mirror expect "
                     "accuracies up to a couple of points lower than on official CIFAR-10.*")
    claims = []
    v16, bn, ax, v8 = (acc(m, long) for m in ("vgg16", "vgg16_bn", "alexnet", "vgg8"))
    if v16 is not None:
        claims.append(("Plain VGG-16 does not learn (stays at 10%)", f"VGG-16 at {v16:.2f}% after {long} epochs",
                       v16 < 15))
    learned = {m: a for m in MODEL_NAMES if (a := acc(m, long)) is not None}
    if len(learned) > 1 and bn is not None:
        best = max(learned, key=learned.get)
        claims.append(("VGG-16 with BN is the most accurate", f"best is {NAMES[best]} at {learned[best]:.2f}%",
                       best == "vgg16_bn"))
    if ax is not None and v8 is not None:
        claims.append(("VGG-8 matches or beats AlexNet with fewer parameters",
                       f"VGG-8 {v8:.2f}% vs AlexNet {ax:.2f}%", v8 >= ax))
    efficiency = {m: count_parameters(build_model(m)) / a for m, a in learned.items() if a > 15}
    if len(efficiency) > 1 and "vgg8" in learned:
        best = min(efficiency, key=efficiency.get)
        claims.append(("VGG-8 is the most parameter-efficient model",
                       f"lowest parameters per point: {NAMES[best]} ({efficiency[best] / 1e3:.0f}K)", best == "vgg8"))
    s_bn, s_ax, s_v8 = (acc(m, short) for m in ("vgg16_bn", "alexnet", "vgg8"))
    if short and s_bn is not None and s_ax is not None:
        claims.append(("VGG-16 with BN learns fastest (best after the short run)",
                       f"VGG-16 BN {s_bn:.2f}% vs AlexNet {s_ax:.2f}% after {short} epochs", s_bn > s_ax))
    if short and s_v8 is not None and s_ax is not None:
        claims.append(("VGG-8 starts slower than AlexNet", f"VGG-8 {s_v8:.2f}% vs AlexNet {s_ax:.2f}% after "
                       f"{short} epochs", s_v8 < s_ax))
    if claims:
        lines += ["", "| the study's claim | this run | verdict |", "|---|---|---|"]
        lines += [f"| {c} | {e} | {'reproduced' if ok else '**not reproduced**'} |" for c, e, ok in claims]
    return lines


# ---------------------------------------------------------------- assembly
def fetch_runs(experiment: str):
    import mlflow

    from stages.tracking import finished_runs, tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise StageError(f"no MLflow store at {uri.removeprefix('sqlite:///')}: train first with `dvc repro` "
                         "(or set MLFLOW_TRACKING_URI to the store that holds the runs)")
    runs = finished_runs(experiment)
    if runs.empty:
        raise StageError(f"MLflow store {uri} has no finished runs in experiment {experiment!r}: "
                         "fill it with `dvc repro` (40 epochs) and `dvc exp run -S epochs=5`")
    return runs, mlflow.MlflowClient(), uri


def build_report(*, params: dict, report_dir: Path = REPORT_DIR, output_root: Path = OUTPUT_ROOT,
                 rf_dir: Path = RF_DIR) -> dict:
    models = params.get("models", list(MODEL_NAMES))
    settings = params.get("report", {}) or {}
    experiment = (params.get("mlflow", {}) or {}).get("experiment", "alexnet-vgg-cifar10")
    runs, client, uri = fetch_runs(experiment)
    selected = select_runs(runs, params, settings.get("ignore_params", []))
    workspace_epochs = int(params.get("epochs", 40))
    short, long = choose_epochs(selected, workspace_epochs, int(settings.get("short_epochs", 5)))
    tables = study_tables(models, selected, short, long, workspace_epochs)
    data_source = (params.get("data", {}) or {}).get("source", "official")

    if not (rf_dir / "paper_differences.csv").exists():  # python -m stages.report on MLflow alone
        analyse_receptive_fields(models, rf_dir)
    rf_tables = {m: pd.read_csv(rf_dir / f"{m}.csv", keep_default_na=False) for m in models}
    rf_diff = pd.read_csv(rf_dir / "paper_differences.csv")

    shown = [(m, e, selected[(m, e)]) for e in (short, long) if e for m in models if (m, e) in selected]
    provenance = pd.DataFrame([{
        "model": m, "epochs": e, "run id": run["run_id"], "run": run["tags.mlflow.runName"],
        "started": str(run["start_time"])[:19], "device": run.get("tags.device_name"),
        "torch": run.get("tags.torch_version"), "git commit": str(run.get("tags.git_commit"))[:10],
        "data sha256": str(run.get("tags.data_sha256"))[:12]} for m, e, run in shown])

    with atomic_entries(report_dir, ("report.md", "figures", "tables")) as tmp:
        (tmp / "figures").mkdir(parents=True)
        (tmp / "tables").mkdir()
        for name, table in tables.items():
            table.to_csv(tmp / "tables" / f"{name}.csv", index=False)
        for model, table in rf_tables.items():
            table.to_csv(tmp / "tables" / f"receptive_field_{model}.csv", index=False)
        rf_diff.to_csv(tmp / "tables" / "receptive_field_paper_differences.csv", index=False)
        provenance.to_csv(tmp / "tables" / "provenance_runs.csv", index=False)
        curves = plot_learning_curves(client, models, selected, long, tmp / "figures" / "learning_curves.png")
        shutil.copy(rf_dir / "growth.png", tmp / "figures" / "receptive_field_growth.png")
        pictures = {}
        for model in models:
            source = output_root / model / "eval" / "figures"
            for kind in ("filters", "feature_maps", "confusion"):
                if (source / f"{kind}.png").exists():
                    shutil.copy(source / f"{kind}.png", tmp / "figures" / f"{model}_{kind}.png")
                    pictures.setdefault(model, []).append(kind)
        text = render(tables=tables, rf_tables=rf_tables, rf_diff=rf_diff, provenance=provenance, short=short,
                      long=long, selected=selected, uri=uri, experiment=experiment, curves=curves,
                      pictures=pictures, data_source=data_source, ignore=settings.get("ignore_params", []))
        (tmp / "report.md").write_text(text)
    return {"short": short, "long": long, "selected": selected, "tables": tables}


def render(*, tables, rf_tables, rf_diff, provenance, short, long, selected, uri, experiment, curves, pictures,
           data_source, ignore) -> str:
    shas = sorted(set(provenance["data sha256"])) if len(provenance) else []
    out = [
        "# AlexNet and VGG on CIFAR-10: the study, rerun",
        "",
        f"Built by `python -m stages.report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the MLflow store "
        f"`{uri}` (experiment `{experiment}`): for each model and epoch count, the latest finished run whose "
        f"settings match the current `params.yaml` apart from `epochs`"
        + (f" and {', '.join(f'`{k}`' for k in ignore)}" if ignore else "") + ". "
        f"Columns: short run = {f'{short} epochs' if short else 'not run yet'}, long run = {long} epochs. "
        f"Data: `{data_source}`" + (f" (arrays sha256 {', '.join(shas)}…)" if shas else "") + ".",
        "",
        "## Table 1: depth and parameters (from the models)", "", md_table(tables["table1_parameters"]), "",
        "## Table 5: test accuracy (%)", "", md_table(tables["table5_accuracy"]), "",
        "## Table 6: mean seconds per training epoch", "",
        "Our seconds are training time per epoch (the pass over the training set, device synchronised), on the "
        "devices listed under Provenance; the study's hardware is unknown.", "",
        md_table(tables["table6_seconds_per_epoch"]), "",
        "## Table 7: parameter efficiency (parameters per percentage point of test accuracy)", "",
        md_table(tables["table7_parameter_efficiency"]), "",
        "## Learning dynamics", "",
        "![learning curves](figures/learning_curves.png)" if curves else "No long runs to draw yet.", "",
        "## Discussion: what this rerun reproduces", "",
        *discussion(selected, short, long, data_source), "",
        "## Receptive fields (Tables 2-4)", "",
        "Computed by walking each model's `features` (r_out = r_in + (k-1)·j_in, j_out = j_in·s), and checked "
        "against a gradient measurement (the input region with non-zero gradient for one central output unit, on "
        "an input large enough that padding never clips it): the `measured` column.", "",
        "![receptive field growth](figures/receptive_field_growth.png)", "",
    ]
    for model, table in rf_tables.items():
        out += [f"### {NAMES[model]}", "", md_table(table), ""]
    out += ["### Where the paper's receptive fields differ from the computed ones", ""]
    if len(rf_diff):
        out += ["The study's arithmetic slips (e.g. Pool1 of AlexNet: 3 + (2-1)·1 = 4, not 6), and the errors "
                "carry forward; its Section 4.2 text gives a second, different AlexNet list.", "",
                md_table(rf_diff), ""]
    else:
        out += ["None.", ""]
    out += ["## Learned filters and feature maps (section 7)", ""]
    if pictures:
        out.append("From the current checkpoints (the `evaluate` stage; the same seeded test images for every "
                   "model).")
        for model, kinds in pictures.items():
            out += ["", f"### {NAMES[model]}", ""]
            out += [f"![{model} {kind}](figures/{model}_{kind}.png)" for kind in kinds]
    else:
        out.append("Not built yet: `dvc repro` runs the `evaluate` stages.")
    out += ["", "## Provenance", "", "Every number in Tables 5-7 comes from one of these MLflow runs:", "",
            md_table(provenance) if len(provenance) else "No matching runs.", ""]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    def work():
        start = time.perf_counter()
        result = build_report(params=load_params(args.params))
        print(f"wrote {REPORT_DIR / 'report.md'}: {len(result['selected'])} runs, short {result['short']} / "
              f"long {result['long']} epochs, in {time.perf_counter() - start:.1f} s")

    run_main(work)


if __name__ == "__main__":
    main()
