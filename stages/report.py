"""Stage `report`: reports/report.md with the study's tables beside ours, rebuilt from the
MLflow store (the source of truth) and the cached analysis outputs, without training.

Before reading the store, every training record in outputs/ that the store lacks (a
run-cache restore, `dvc exp apply`, a new or deleted store) is logged to it again, so DVC's
outputs and MLflow never disagree. Which runs count: stages/selection.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from torch import nn

from models import build_model
from stages import paper
from stages.common import OUTPUT_ROOT, StageError, atomic_entries, output_paths, run_main
from stages.config import Settings, load_settings
from stages.figures import md_table, plot_curves
from stages.init_signal import OUT_DIR as SIGNAL_DIR
from stages.init_signal import analyse as analyse_init_signal
from stages.init_signal import summary as init_signal_summary
from stages.receptive_field import OUT_DIR as RF_DIR
from stages.receptive_field import analyse as analyse_receptive_fields
from stages.selection import STATISTIC, Cell, Selection, compare, fmt_stat, mean_sd, select

REPORT_DIR = Path("reports")
DATA_DIR = Path("data/cifar10")
NAMES = {"alexnet": "AlexNet", "vgg16": "VGG-16", "vgg16_bn": "VGG-16 with BN", "vgg8": "VGG-8"}


def choose_epochs(cells: dict, epochs: int, short_epochs: int) -> tuple[int | None, int]:
    counts = {e for _, e in cells}
    long = max(counts | {epochs})
    below = sorted(c for c in counts if c < long)
    short = short_epochs if short_epochs in below else (below[-1] if below else None)
    return short, long


# ---------------------------------------------------------------- tables
def not_run(epochs: int | None, workspace_epochs: int, short_epochs: int = paper.EPOCHS[0]) -> str:
    """The cell of a run that is missing, with the command that fills it."""
    epochs = epochs or short_epochs
    command = "dvc repro" if epochs == workspace_epochs else f"dvc exp run -S epochs={epochs}"
    return f"not run (`{command}`)"


def per_point(cell: Cell | None) -> list[float]:
    """Parameters per point of test accuracy, thousands, per seed: from what each run logged."""
    if cell is None:
        return []
    return [float(r["params.num_parameters"]) / float(r["metrics.final_test_acc"]) / 1e3 for r in cell.runs
            if float(r.get("metrics.final_test_acc") or 0) > 0 and not pd.isna(r.get("params.num_parameters"))]


def study_tables(models, study: dict[tuple[str, int], Cell], short: int | None, long: int,
                 workspace_epochs: int, short_epochs: int = paper.EPOCHS[0]) -> dict[str, pd.DataFrame]:
    t1, t5, t6, t7 = [], [], [], []
    for model in models:
        net = build_model(model)
        convs = sum(isinstance(m, nn.Conv2d) for m in net.features)
        fcs = sum(isinstance(m, nn.Linear) for m in net.classifier)
        params = sum(p.numel() for p in net.parameters())
        t1.append({"model": NAMES[model], "depth (conv+FC)": f"{convs}+{fcs}={convs + fcs}",
                   "paper depth": paper.DEPTH[model], "parameters": f"{params:,}",
                   "paper": f"{paper.PARAMS_M[model]}M", "difference": f"{params / 1e6 - paper.PARAMS_M[model]:+.2f}M"})
        row5, row6 = {"model": NAMES[model]}, {"model": NAMES[model]}
        for idx, epochs in enumerate((short, long)):  # the study's (5, 40) columns
            cell = study.get((model, epochs)) if epochs else None
            label = f"{epochs} ep" if epochs else "short run"
            for row, name, published in ((row5, "final_test_acc", paper.ACCURACY),
                                         (row6, "mean_epoch_time_s", paper.SECONDS)):
                ours, theirs = (cell.values(name) if cell else []), published[model][idx]
                row[f"ours ({label})"] = fmt_stat(ours) if ours else not_run(epochs, workspace_epochs, short_epochs)
                row[f"paper ({paper.EPOCHS[idx]} ep)"] = f"{theirs:.2f}"
                row[f"diff ({label})"] = f"{mean_sd(ours)[0] - theirs:+.2f}" if ours else "-"
        t5.append(row5)
        t6.append(row6)
        cell = study.get((model, long))
        accuracy, points = (cell.values("final_test_acc") if cell else []), per_point(cell)
        t7.append({"model": NAMES[model], "parameters": f"{params / 1e6:.1f}M",
                   f"test acc ({long} ep)": fmt_stat(accuracy) if accuracy else not_run(long, workspace_epochs),
                   "paper acc (40 ep)": f"{paper.ACCURACY[model][1]:.2f}",
                   "params per point (K)": fmt_stat(points, ".0f") if points else "-",
                   "paper (K)": f"{paper.PER_POINT_K[model]}",
                   "diff (K)": f"{mean_sd(points)[0] - paper.PER_POINT_K[model]:+.0f}" if points else "-"})
    return {"table1_parameters": pd.DataFrame(t1), "table5_accuracy": pd.DataFrame(t5),
            "table6_seconds_per_epoch": pd.DataFrame(t6), "table7_parameter_efficiency": pd.DataFrame(t7)}


def seed_values(study: dict[tuple[str, int], Cell]) -> pd.DataFrame:
    """Every run behind the tables, one row per seed: the values the means are made of."""
    return pd.DataFrame([{"model": m, "epochs": e, "seed": int(r["params.seed"]), "run_id": r["run_id"],
                          "final_test_acc": r.get("metrics.final_test_acc"),
                          "mean_epoch_time_s": r.get("metrics.mean_epoch_time_s"),
                          "num_parameters": r.get("params.num_parameters")}
                         for (m, e), cell in sorted(study.items()) for r in cell.runs])


def first_losses(client, cell: Cell | None, epochs: int = 5) -> str:
    """Training loss at epochs 1..5 of the cell's first run: a flat 2.303 means no learning."""
    if cell is None:
        return "-"
    points = sorted((m.step, m.value) for m in client.get_metric_history(cell.runs[0]["run_id"], "train_loss"))
    return " / ".join(f"{v:.3f}" for s, v in points if s <= epochs)


def ablation_table(client, selection: Selection) -> pd.DataFrame:
    rows = []
    for (key, value, model, epochs), cell in sorted(selection.ablation.items()):
        base = selection.study.get((model, epochs))
        rows.append({"setting": f"{key}={value}", "model": NAMES[model], "epochs": epochs,
                     "test acc": fmt_stat(cell.values("final_test_acc")),
                     "recipe's test acc": fmt_stat(base.values("final_test_acc")) if base else "not run",
                     "train loss, epochs 1-5": first_losses(client, cell),
                     "recipe's train loss, epochs 1-5": first_losses(client, base)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- figures
def plot_learning_curves(client, models, study: dict, long: int, path: Path) -> bool:
    """Every seed of every model's long run: the first seed solid, the others fainter."""
    curves = []
    for model in models:
        cell = study.get((model, long))
        for i, run in enumerate(cell.runs if cell else []):
            history = {name: sorted((m.step, m.value) for m in client.get_metric_history(run["run_id"], name))
                       for name in ("test_acc", "train_loss")}
            curves.append({"epochs": [s for s, _ in history["test_acc"]],
                           "test_acc": [v for _, v in history["test_acc"]],
                           "train_loss": [v for _, v in history["train_loss"]],
                           "color": f"C{models.index(model)}", "alpha": 1.0 if i == 0 else 0.45,
                           "label": (NAMES[model] + (f" ({len(cell.runs)} seeds)" if len(cell.runs) > 1 else ""))
                           if i == 0 else None})
    return plot_curves(curves, path, f"{long}-epoch runs")


# ---------------------------------------------------------------- discussion
def verdict(outcome: str, want: str, n: tuple[int, ...]) -> str:
    if outcome == "undecided":
        return f"not decided at n={'/'.join(map(str, n))}"
    text = "reproduced" if outcome == want else "**not reproduced**"
    return text + (" (single seed)" if min(n) < 2 else "")


def epoch_columns(short: int | None, long: int) -> str:
    return f"{short} and {long}" if short else f"{long}"


def discussion(study: dict[tuple[str, int], Cell], short: int | None, long: int, data_source: str) -> list[str]:
    def acc(model, epochs) -> list[float]:
        cell = study.get((model, epochs)) if epochs else None
        return cell.values("final_test_acc") if cell else []

    lines = [STATISTIC, ""]
    if (short, long) != paper.EPOCHS:
        lines.append(f"*These runs are {epoch_columns(short, long)} epochs, not the study's 5 and 40: the verdicts below "
                     "compare like with unlike and say little about the study's claims.*")
    if data_source != "official":
        lines.append(f"*Data: `{data_source}`, not the official CIFAR-10 archive. On the JPEG mirror expect "
                     "accuracies up to a couple of points lower than on official CIFAR-10.*")
    claims = []

    def pair(claim, a_model, b_model, epochs, want):
        a, b = acc(a_model, epochs), acc(b_model, epochs)
        if epochs and a and b:
            evidence = f"{NAMES[a_model]} {fmt_stat(a)} vs {NAMES[b_model]} {fmt_stat(b)} after {epochs} epochs"
            claims.append((claim, evidence, verdict(compare(a, b), want, (len(a), len(b)))))

    v16 = acc("vgg16", long)
    if v16:
        claims.append(("Plain VGG-16 does not learn (stays at 10%)", f"VGG-16 at {fmt_stat(v16)} after {long} epochs",
                       verdict(compare(v16, [15.0]), "less", (len(v16),))))
    pair("Batch Normalization makes VGG-16 learn (VGG-16 with BN beats plain VGG-16)", "vgg16_bn", "vgg16", long,
         "greater")
    for other in ("alexnet", "vgg8"):
        pair(f"VGG-16 with BN is more accurate than {NAMES[other]}", "vgg16_bn", other, long, "greater")
    pair("VGG-8 matches or beats AlexNet with fewer parameters", "vgg8", "alexnet", long, "greater")
    pair("VGG-16 with BN learns fastest (beats AlexNet after the short run)", "vgg16_bn", "alexnet", short, "greater")
    pair("VGG-8 starts slower than AlexNet", "vgg8", "alexnet", short, "less")
    efficiency = {m: per_point(study.get((m, long))) for m in ("alexnet", "vgg8")}
    if all(efficiency.values()) and min(mean_sd(acc(m, long))[0] for m in efficiency) > 15:
        a, b = efficiency["vgg8"], efficiency["alexnet"]
        claims.append(("VGG-8 is more parameter-efficient than AlexNet (fewer parameters per point)",
                       f"VGG-8 {fmt_stat(a, '.0f')}K vs AlexNet {fmt_stat(b, '.0f')}K",
                       verdict(compare(a, b), "less", (len(a), len(b)))))
    if claims:
        lines += ["", "| the study's claim | this rerun | verdict |", "|---|---|---|"]
        lines += [f"| {c} | {e} | {v} |" for c, e, v in claims]
    return lines


# ---------------------------------------------------------------- assembly
def training_records(models, output_root: Path) -> list[Path]:
    return [p for m in models if (p := output_paths(m, output_root)["record"]).exists()]


def fetch_runs(settings: Settings, output_root: Path):
    """Log what the store lacks from the workspace's records; then every finished run, and the
    record ids of the workspace's trainings."""
    import mlflow

    from stages.tracking import ensure_logged, finished_runs, tracking_uri

    uri = tracking_uri()
    records = training_records(settings.models, output_root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists() and not records:
        raise StageError(f"no MLflow store at {uri.removeprefix('sqlite:///')} and no trained outputs in "
                         f"{output_root}/: train first with `dvc repro` (or set MLFLOW_TRACKING_URI to the store "
                         "that holds the runs)")
    lines, workspace = ensure_logged(records, settings.experiment, settings.log_model)
    for line in lines:
        print(line)
    runs = finished_runs(settings.experiment)
    if runs.empty:
        raise StageError(f"MLflow store {uri} has no finished runs in experiment {settings.experiment!r}: "
                         f"fill it with `dvc repro` ({settings.epochs} epochs) and "
                         f"`dvc exp run -S epochs={settings.report.short_epochs}`")
    return runs, workspace, mlflow.MlflowClient(uri), uri


def data_sha256(data_dir: Path) -> str | None:
    meta = data_dir / "meta.json"
    return json.loads(meta.read_text())["sha256"] if meta.exists() else None


def build_report(*, settings: Settings, report_dir: Path = REPORT_DIR, output_root: Path = OUTPUT_ROOT,
                 rf_dir: Path = RF_DIR, signal_dir: Path = SIGNAL_DIR, data_dir: Path = DATA_DIR) -> dict:
    from stages.tracking import runs_table_link

    models = list(settings.models)
    runs, workspace, client, uri = fetch_runs(settings, output_root)
    selection = select(runs, settings, data_sha256(data_dir), workspace)
    short, long = choose_epochs(selection.study, settings.epochs, settings.report.short_epochs)
    tables = study_tables(models, selection.study, short, long, settings.epochs, settings.report.short_epochs)
    ablation = ablation_table(client, selection)

    with tempfile.TemporaryDirectory() as scratch:
        if not (rf_dir / "paper_differences.csv").exists():  # python -m stages.report on MLflow alone
            rf_dir = Path(scratch)
            analyse_receptive_fields(models, rf_dir)
        rf_tables = {m: pd.read_csv(rf_dir / f"{m}.csv", keep_default_na=False) for m in models}
        rf_diff = pd.read_csv(rf_dir / "paper_differences.csv")
        growth = (rf_dir / "growth.png").read_bytes()
        if not (signal_dir / "signal.csv").exists():  # likewise: a few seconds on a CPU
            signal_dir = Path(scratch) / "signal"
            analyse_init_signal(models, settings.seed, signal_dir)
        signal = init_signal_summary(pd.read_csv(signal_dir / "signal.csv"))
        signal_png = (signal_dir / "signal.png").read_bytes()

    shown = [(m, e, run) for e in (short, long) if e for m in models
             if (m, e) in selection.study for run in selection.study[(m, e)].runs]
    provenance = pd.DataFrame([{
        "model": m, "epochs": e, "seed": int(run["params.seed"]), "run id": run["run_id"],
        "started": str(run["start_time"])[:19], "device": run.get("tags.device_name"),
        "precision": run.get("params.runtime.precision", run.get("tags.precision")),
        "torch": run.get("tags.torch_version"), "git commit": str(run.get("tags.git_commit"))[:10],
        "data sha256": str(run.get("tags.data_sha256"))[:12],
        "restored": "yes" if run.get("tags.restored") == "true" else ""} for m, e, run in shown])

    with atomic_entries(report_dir, ("report.md", "figures", "tables")) as tmp:
        (tmp / "figures").mkdir(parents=True)
        (tmp / "tables").mkdir()
        for name, table in tables.items():
            table.to_csv(tmp / "tables" / f"{name}.csv", index=False)
        seed_values(selection.study).to_csv(tmp / "tables" / "seed_values.csv", index=False)
        ablation.to_csv(tmp / "tables" / "ablation.csv", index=False)
        for model, table in rf_tables.items():
            table.to_csv(tmp / "tables" / f"receptive_field_{model}.csv", index=False)
        rf_diff.to_csv(tmp / "tables" / "receptive_field_paper_differences.csv", index=False)
        provenance.to_csv(tmp / "tables" / "provenance_runs.csv", index=False)
        curves = plot_learning_curves(client, models, selection.study, long, tmp / "figures" / "learning_curves.png")
        (tmp / "figures" / "receptive_field_growth.png").write_bytes(growth)
        (tmp / "figures" / "init_signal.png").write_bytes(signal_png)
        signal.to_csv(tmp / "tables" / "init_signal.csv", index=False)
        pictures = {}
        for model in models:
            source = output_root / model / "eval" / "figures"
            for kind in ("filters", "feature_maps", "confusion"):
                if (source / f"{kind}.png").exists():
                    shutil.copy(source / f"{kind}.png", tmp / "figures" / f"{model}_{kind}.png")
                    pictures.setdefault(model, []).append(kind)
        text = render(tables=tables, ablation=ablation, signal=signal, rf_tables=rf_tables, rf_diff=rf_diff,
                      provenance=provenance,
                      short=short, long=long, selection=selection, uri=uri, settings=settings, curves=curves,
                      pictures=pictures)
        (tmp / "report.md").write_text(text)
    return {"short": short, "long": long, "selection": selection, "tables": tables, "ablation": ablation,
            "runs_table": runs_table_link(uri, str(runs["experiment_id"].iloc[0]))}


def render(*, tables, ablation, signal, rf_tables, rf_diff, provenance, short, long, selection, uri, settings, curves,
           pictures) -> str:
    shas = sorted(set(provenance["data sha256"])) if len(provenance) else []
    devices = sorted(set(provenance["device"].dropna())) if len(provenance) else []
    out = [
        "# AlexNet and VGG on CIFAR-10: the study, rerun",
        "",
        f"Built by `python -m stages.report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the MLflow store "
        f"`{uri}` (experiment `{settings.experiment}`): for each model and epoch count, every finished run whose "
        "recipe and data match the current `params.yaml` (whatever its device or precision), the latest per seed; "
        "several seeds show as mean ± sd (n). "
        f"Columns: short run = {f'{short} epochs' if short else 'not run yet'}, long run = {long} epochs. "
        f"Data: `{settings.data.source}`" + (f" (arrays sha256 {', '.join(shas)}…)" if shas else "") + ". "
        + (f"Devices: {'; '.join(devices)}." if devices else ""),
        "",
        "## Table 1: depth and parameters (from the models)", "", md_table(tables["table1_parameters"]), "",
        "## Table 5: test accuracy (%)", "", md_table(tables["table5_accuracy"]), "",
        "## Table 6: mean seconds per training epoch", "",
        "Our seconds are training time per epoch (the pass over the training set, device synchronised), on the "
        "devices listed under Provenance; the study's hardware is unknown.", "",
        md_table(tables["table6_seconds_per_epoch"]), "",
        "## Table 7: parameter efficiency (parameters per percentage point of test accuracy)", "",
        "From each run's logged parameter count and its final test accuracy.", "",
        md_table(tables["table7_parameter_efficiency"]), "",
        "## Learning dynamics", "",
        "![learning curves](figures/learning_curves.png)" if curves else "No long runs to draw yet.", "",
        "## Discussion: what this rerun reproduces", "",
        *discussion(selection.study, short, long, settings.data.source), "",
        "## Ablation: one setting changed", "",
    ]
    if len(ablation):
        out += ["Runs that differ from the recipe in exactly one of "
                f"{', '.join(f'`{k}`' for k in settings.report.ablation_keys)}, beside the recipe's own runs. "
                "A training loss flat at 2.303 (ln 10) is a network that outputs the same guess for every image.",
                "", md_table(ablation), ""]
    else:
        out += ["No runs yet. For example: `dvc exp run -S train.init=kaiming -S 'models=[vgg16]'`.", ""]
    out += ["## Why plain VGG-16 does not learn: the signal at initialisation", "",
            "Without training: the standard deviation of each conv/linear layer's output (forward) and of the "
            "loss gradient at it (backward), for one seeded batch of standard-normal images, each network in "
            "training mode, PyTorch's default init (solid) against Kaiming's (dashed; `stages/init_signal.py`). "
            "Where the gradient reaching the first layers is orders of magnitude below the last layer's, those "
            "layers barely move.", "",
            "![signal at initialisation](figures/init_signal.png)", "", md_table(signal), ""]
    out += ["## Runs left out", ""]
    out += [f"- {line}" for line in selection.left_out] or ["None: every finished run in the experiment is shown."]
    out += ["", "## Receptive fields (Tables 2-4)", "",
            "Computed by walking each model's `features` (r_out = r_in + (k-1)·j_in, j_out = j_in·s), and checked "
            "against a gradient measurement (the input region with non-zero gradient for one central output unit, "
            "on an input large enough that padding never clips it): the `measured` column.", "",
            "![receptive field growth](figures/receptive_field_growth.png)", ""]
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
    out += ["", "## Provenance", "", "Every number in Tables 5-7 comes from one of these MLflow runs "
            "(each seed's value: `tables/seed_values.csv`):", "",
            md_table(provenance) if len(provenance) else "No matching runs.", ""]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--store", type=Path, help="a results store (a folder holding mlflow.db, params.yaml and "
                        "outputs/): rebuild its report into STORE/report, reading nothing else")
    args = parser.parse_args()

    def work():
        start = time.perf_counter()
        if args.store:
            if not (args.store / "mlflow.db").exists():
                raise StageError(f"{args.store} holds no mlflow.db; give the folder of a results store, "
                                 "e.g. results/h100-2026-11-27")
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(args.store / 'mlflow.db').resolve()}"
            settings = load_settings(args.store / "params.yaml")
            out = args.store / "report"
            result = build_report(settings=settings, report_dir=out, output_root=args.store / "outputs",
                                  rf_dir=args.store / "no-receptive-fields", signal_dir=args.store / "no-signal",
                                  data_dir=args.store / "no-data")
        else:
            out = REPORT_DIR
            result = build_report(settings=load_settings(args.params))
        cells = sum(len(c.runs) for c in result["selection"].study.values())
        print(f"wrote {out / 'report.md'}: {cells} runs in the study's tables "
              f"({epoch_columns(result['short'], result['long'])} epochs), "
              f"in {time.perf_counter() - start:.1f} s")
        print(f"the runs in MLflow: {result['runs_table']}")

    run_main(work)


if __name__ == "__main__":
    main()
