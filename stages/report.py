"""Stage `report`: reports/report.md with the study's tables beside ours, rebuilt from the
MLflow store (the source of truth) and the cached analysis outputs, without training.

Before reading the store, every training record in outputs/ that the store lacks (a
run-cache restore, `dvc exp apply`, a new or deleted store) is logged to it again, so DVC's
outputs and MLflow never disagree. Which runs count: study/analysis/selection.py.
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

from study.analysis.claims import discussion, epoch_columns, judge
from study.analysis.init_signal import summary as init_signal_summary
from study.analysis.jpeg_cost import cost_table, plot_cost, step_words, variant_cells, variant_quality
from study.analysis.jpeg_cost import section as jpeg_section
from study.analysis.paper import NAMES
from study.analysis.selection import REPEATED_STEPS, Selection, metric_steps, select
from study.analysis.speed import TABLE6, device_sharing, epoch_times, sharing_note
from study.analysis.tables import ablation_gaps, ablation_table, seed_values, study_tables
from study.common import (
    INIT_SIGNAL_DIR,
    OUTPUT_ROOT,
    RECEPTIVE_FIELD_DIR,
    StageError,
    atomic_entries,
    output_paths,
    plural,
    run_main,
)
from study.config import Settings, load_settings
from study.data import PREPARED_DIR
from study.figures import FEATURE_MAP_TOP, SEED_MARKERS, SEED_STYLES, md_table, plot_curve_rows

REPORT_DIR = Path("reports")


def choose_epochs(cells: dict, epochs: int, short_epochs: int) -> tuple[int | None, int]:
    counts = {e for _, e in cells}
    long = max(counts | {epochs})
    below = sorted(c for c in counts if c < long)
    short = short_epochs if short_epochs in below else (below[-1] if below else None)
    return short, long


# ---------------------------------------------------------------- figures
def plot_learning_curves(client, models, study: dict, epoch_counts, path: Path) -> bool:
    """Every seed of every model, one row per epoch count: colour per model, line style and
    marker per seed (so seeds that coincide, like VGG-16's at 10%, both show)."""
    rows = []
    for epochs in (e for e in epoch_counts if e):
        curves = []
        for model in models:
            cell = study.get((model, epochs))
            for i, run in enumerate(cell.runs if cell else []):
                history = {name: metric_steps(client, run["run_id"], name)
                           for name in ("test_acc", "train_loss")}
                curves.append({"epochs": [s for s, _ in history["test_acc"]],
                               "test_acc": [v for _, v in history["test_acc"]],
                               "train_loss": [v for _, v in history["train_loss"]],
                               "color": f"C{models.index(model)}", "style": SEED_STYLES[i % len(SEED_STYLES)],
                               "marker": SEED_MARKERS[i % len(SEED_MARKERS)],
                               "label": f"{NAMES[model]}, seed {int(run['params.seed'])}"})
        if curves:
            rows.append((f"{epochs}-epoch runs", curves))
    return plot_curve_rows(rows, path) if rows else False


# ---------------------------------------------------------------- assembly
def training_records(models, output_root: Path) -> list[Path]:
    return [p for m in models if (p := output_paths(m, output_root)["record"]).exists()]


def fetch_runs(settings: Settings, output_root: Path, weights: bool = True):
    """Log what the store lacks from the workspace's records; then every finished run, the record
    ids of the workspace's trainings, and the warnings (what could not be logged)."""
    import mlflow

    from study.tracking.restore import ensure_logged
    from study.tracking.store import finished_runs, tracking_uri

    uri = tracking_uri()
    records = training_records(settings.models, output_root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists() and not records:
        raise StageError(f"no MLflow store at {uri.removeprefix('sqlite:///')} and no trained outputs in "
                         f"{output_root}/: train first with `dvc repro` (or set MLFLOW_TRACKING_URI to the store "
                         "that holds the runs)")
    lines, workspace = ensure_logged(records, settings.mlflow.experiment, settings.mlflow.log_model, weights=weights)
    for line in lines:
        print(line)
    warnings = [line for line in lines if line.startswith("warning: ")]
    runs = finished_runs(settings.mlflow.experiment)
    if runs.empty:
        raise StageError(f"MLflow store {uri} has no finished runs in experiment {settings.mlflow.experiment!r}: "
                         f"fill it with `dvc repro` ({settings.epochs} epochs) and "
                         f"`dvc exp run -S epochs={settings.report.short_epochs}`")
    return runs, workspace, mlflow.MlflowClient(uri), uri, warnings


def register_models(client, settings: Settings, selection: Selection) -> list[str]:
    """The study's checked models in the Model Registry (study.tracking.registry); a store that
    will not take them (a READ member, a server without the registry) is one warning line."""
    from study.tracking.registry import register_study
    from study.tracking.store import store_error, tracking_uri

    try:
        return register_study(client, settings.mlflow.experiment, selection.study, settings.epochs, settings.seed)
    except Exception as err:
        return [f"warning: the study's models were not registered ({store_error(tracking_uri(), err)}); the tables "
                "are whole, and a report built with EDIT permission registers them"]


def data_sha256(data_dir: Path) -> str | None:
    meta = data_dir / "meta.json"
    return json.loads(meta.read_text())["sha256"] if meta.exists() else None


def store_name(uri: str) -> str:
    """The store as any reader can find it: a local file relative to the project (never this
    machine's absolute path), a server by its address without credentials."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")).resolve()
        return path.relative_to(Path.cwd().resolve()).as_posix() if path.is_relative_to(Path.cwd().resolve()) \
            else path.name
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}" if rest else uri


def data_name(source: str) -> str:
    """``official``, or the file or folder name of a local source (its path is this machine's)."""
    return source if source == "official" else Path(source).name


def figure_sources(models, output_root: Path, client=None) -> dict[str, str]:
    """Per model: the one training behind its filter, feature-map and confusion figures, and how far
    its first layer moved from its initial weights: from its MLflow run (the source of truth), else
    from the evaluate stage's metrics in the workspace."""
    sources = {}
    for model in models:
        path = output_paths(model, output_root)["record"]
        if path.exists():
            record = json.loads(path.read_text())
            recipe, summary = record.get("recipe", {}), record.get("summary") or {}
            accuracy = f", test accuracy {summary['final_test_acc']:.2f}%" if "final_test_acc" in summary else ""
            evaluation = path.with_name("eval") / "metrics.json"
            corr = json.loads(evaluation.read_text()).get("first_layer_init_corr") if evaluation.exists() else None
            if client is not None and record.get("mlflow_run_id"):
                try:
                    corr = client.get_run(record["mlflow_run_id"]).data.metrics.get("eval/first_layer_init_corr", corr)
                except Exception:  # a store without that run: the workspace's number, if any
                    pass
            moved = (f"; its trained first-layer filters correlate {corr:.2f} on average with this seed's initial ones"
                     if corr is not None else "; how far its first layer moved from its initial weights was not "
                     "measured (drawn by an older `evaluate`, or a store without the evaluation's metrics)")
            sources[model] = (f"seed {recipe.get('seed')}, {recipe.get('epochs')} epochs, MLflow run "
                              f"`{record.get('mlflow_run_id') or 'not logged'}`{accuracy} (this seed alone){moved}")
    return sources


def provenance_table(selection: Selection, short: int | None, long: int, models, shared: dict,
                     variants: dict | None = None) -> pd.DataFrame:
    """Every run the report uses, the ablation's and the JPEG variants' included, and what it was used for."""
    used = [(m, e, "Tables 5-7", run) for e in (short, long) if e for m in models
            if (m, e) in selection.study for run in selection.study[(m, e)].runs]
    used += [(m, e, f"ablation: {key}={value}", run) for (key, value, m, e), cell in sorted(selection.ablation.items())
             for run in cell.runs]
    used += [(m, e, f"JPEG cost: quality {q}", run) for (m, e, q), cell in sorted((variants or {}).items())
             for run in cell.runs]
    return pd.DataFrame([{
        "model": m, "epochs": e, "seed": int(run["params.seed"]), "used for": role,
        "run name": run.get("tags.mlflow.runName"), "run id": run["run_id"],
        "started": str(run["start_time"])[:19], "device": run.get("tags.device_name"),
        "device shared": {None: "cannot tell", 0: "no"}.get(shared.get(run["run_id"]),
                                                            f"yes, with {shared.get(run['run_id'])}"),
        "precision": run.get("params.runtime.precision", run.get("tags.precision")),
        "torch": run.get("tags.torch_version"), "git commit": str(run.get("tags.git_commit"))[:10],
        "data sha256": str(run.get("tags.data_sha256"))[:12],
        "restored": "yes" if run.get("tags.restored") == "true" else ""} for m, e, role, run in used])


def build_report(*, settings: Settings, report_dir: Path = REPORT_DIR, output_root: Path = OUTPUT_ROOT,
                 weights: bool = True, rf_dir: Path = RECEPTIVE_FIELD_DIR, signal_dir: Path = INIT_SIGNAL_DIR,
                 data_dir: Path = PREPARED_DIR) -> dict:
    from study.tracking.store import runs_table_link

    models = list(settings.models)
    REPEATED_STEPS.clear()  # the runs of this report only
    runs, workspace, client, uri, warnings = fetch_runs(settings, output_root, weights)
    # the JPEG section's runs; every other one goes through select. A workspace trained on a variant
    # shows its own runs in the tables: the comparison against the mirror is a mirror report's
    on_variant = variant_quality(settings.data.source)
    variants = variant_cells(runs, settings) if on_variant is None else {}
    in_jpeg = {r["run_id"] for cell in variants.values() for r in cell.runs}
    selection = select(runs[~runs["run_id"].isin(in_jpeg)], settings, data_sha256(data_dir), workspace)
    short, long = choose_epochs(selection.study, settings.epochs, settings.report.short_epochs)
    if weights:  # a results store is read, never written
        for line in register_models(client, settings, selection):
            print(line)
            warnings += [line] if line.startswith("warning: ") else []
    times = epoch_times(client, [r for cell in selection.study.values() for r in cell.runs])
    shared = device_sharing(runs)
    tables = study_tables(models, selection.study, short, long, settings.epochs, settings.report.short_epochs,
                          times, shared)
    ablation = ablation_table(client, selection)

    with tempfile.TemporaryDirectory() as scratch:
        if not (rf_dir / "paper_differences.csv").exists():  # python -m stages.report on MLflow alone
            from study.analysis.receptive_field import analyse as analyse_receptive_fields  # torch: only here

            rf_dir = Path(scratch)
            analyse_receptive_fields(models, rf_dir)
        rf_tables = {m: pd.read_csv(rf_dir / f"{m}.csv", keep_default_na=False) for m in models}
        rf_diff = pd.read_csv(rf_dir / "paper_differences.csv")
        growth = (rf_dir / "growth.png").read_bytes()
        if not (signal_dir / "signal.csv").exists():  # likewise: a few seconds on a CPU
            from study.analysis.init_signal import analyse as analyse_init_signal

            signal_dir = Path(scratch) / "signal"
            analyse_init_signal(models, settings.seed, signal_dir)
        signal = init_signal_summary(pd.read_csv(signal_dir / "signal.csv"))
        signal_png = (signal_dir / "signal.png").read_bytes()

    provenance = provenance_table(selection, short, long, models, shared, variants)
    with atomic_entries(report_dir, ("report.md", "figures", "tables")) as tmp:
        (tmp / "figures").mkdir(parents=True)
        (tmp / "tables").mkdir()
        for name, table in tables.items():
            table.to_csv(tmp / "tables" / f"{name}.csv", index=False)
        seed_values(selection.study, times).to_csv(tmp / "tables" / "seed_values.csv", index=False)
        ablation.to_csv(tmp / "tables" / "ablation.csv", index=False)
        jpeg = cost_table(selection.study, variants)
        jpeg.to_csv(tmp / "tables" / "jpeg_cost.csv", index=False)
        jpeg_lines = jpeg_section(jpeg, plot_cost(selection.study, variants, tmp / "figures" / "jpeg_cost.png"),
                                  step_words(selection.study, variants, jpeg), on_variant)
        for model, table in rf_tables.items():
            table.to_csv(tmp / "tables" / f"receptive_field_{model}.csv", index=False)
        rf_diff.to_csv(tmp / "tables" / "receptive_field_paper_differences.csv", index=False)
        provenance.to_csv(tmp / "tables" / "provenance_runs.csv", index=False)
        claims = judge(selection.study, short, long)
        pd.DataFrame(claims, columns=list(claims[0]) if claims else None).to_csv(tmp / "tables" / "claims.csv",
                                                                              index=False)
        curves = plot_learning_curves(client, models, selection.study, (short, long),
                                      tmp / "figures" / "learning_curves.png")
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
                      provenance=provenance, claims=claims, short=short, long=long, selection=selection,
                      store=store_name(uri),
                      settings=settings, curves=curves, pictures=pictures, jpeg=jpeg_lines,
                      sources=figure_sources(pictures, output_root, client), sharing=sharing_note(runs, provenance),
                      warnings=warnings)
        (tmp / "report.md").write_text(text)
    return {"short": short, "long": long, "selection": selection, "tables": tables, "ablation": ablation,
            "runs_table": runs_table_link(uri, str(runs["experiment_id"].iloc[0]))}


SIGNAL = ("Without training: the standard deviation of each conv/linear layer's output (forward) and of the loss "
          "gradient at it (backward), for one seeded batch of standard-normal images, each network in training "
          "mode, PyTorch's default init (solid) against Kaiming's (dashed; `study/analysis/init_signal.py`). Where the "
          "gradient reaching the first layers is orders of magnitude below the last layer's, those layers barely "
          "move. The loss at initialisation is ln 10 = 2.303 for a network whose logits are all alike (a uniform "
          "guess). Kaiming's init here (fan-out mode, as torchvision's VGG) also sets the last linear layer, whose "
          "fan-out is only the 10 classes: its weights get a standard deviation of sqrt(2/10) = 0.45, tens of times "
          "what would keep the variance over its hundreds or thousands of inputs, so wherever the signal survives "
          "to it the logits start large (`logit std`) and the first batch's loss is that of confident random "
          "guesses (10 to 37). Torchvision's VGG init (dotted) keeps Kaiming's conv layers but draws the linear "
          "layers from N(0, 0.01), so its logits start small. In plain VGG-16 the signal has faded before the "
          "classifier (`logit std` about 1), so its loss stays under 3. The first steps shrink the logits; it is "
          "no failure of training by itself.")
FEATURE_MAPS = ("Each figure comes from one training, named under the model (not the mean of the seeds). A first "
                "layer's feature maps show edges and colour blobs whether or not the network learned: random 3×3 "
                "filters already respond to edges and colours, and plain VGG-16's first layer hardly moved from its "
                "initialisation (the gradient reaching it is about 1e-10, see the signal section). What tells a "
                "network that learned from one that did not is its test accuracy, in each figure's title, and its "
                "confusion matrix: a network that learned nothing puts every test image in one class (one full "
                f"column). The `evaluate` stage draws every model's feature maps on one colour scale, 0 to "
                f"{FEATURE_MAP_TOP:g} (brighter values clipped; the bar says what share), so two models' figures "
                "compare directly; a figure whose bar does not say so comes from an older `evaluate` that scaled "
                "each model on its own, and its brightness compares nothing across models. The filters: at one "
                "seed every network starts its first layer from the same weights (it is the first layer built "
                "after seeding), so filters that look alike across models partly show a shared start, not what "
                "each learned. How far each moved is measured: the mean correlation of its trained filters with "
                "that seed's initial ones (1: unchanged; computed by `evaluate` from the checkpoint and the same "
                "seed's untrained network), under each model and in its filter figure's title.")


def render(*, tables, ablation, signal, rf_tables, rf_diff, provenance, claims, short, long, selection, store, settings,
           curves, pictures, sources, sharing, jpeg, warnings=()) -> str:
    study_runs = provenance[provenance["used for"] == "Tables 5-7"] if len(provenance) else provenance
    shas = sorted(set(study_runs["data sha256"])) if len(study_runs) else []  # the study's, not the variants'
    devices = sorted(set(study_runs["device"].dropna())) if len(study_runs) else []
    data = data_name(settings.data.source)
    out = [
        "# AlexNet and VGG on CIFAR-10: the study, rerun",
        "",
        f"Built by `python -m stages.report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from the MLflow store "
        f"`{store}` (experiment `{settings.mlflow.experiment}`): for each model and epoch count, every finished run "
        "whose recipe and data match the current `params.yaml` (whatever its device or precision), the latest per "
        "seed; "
        "several seeds show as mean ± sd (n). "
        f"Columns: short run = {f'{short} epochs' if short else 'not run yet'}, long run = {long} epochs. "
        f"Data: `{data}`" + (f" (arrays sha256 {', '.join(shas)}…)" if shas else "") + ". "
        + (f"Devices: {'; '.join(devices)}. " if devices else "")
        + "Table and section numbers are the paper's (its Tables 1 and 5-7 here; its Tables 2-4 are the "
        "receptive fields).",
        "",
        # what the build could not record, here as on the console: a reader of the file alone must see it too
        *[f"> **Warning:** {line.removeprefix('warning: ')}\n" for line in warnings],
        "## Table 1 (the paper's numbering): depth and parameters, from the models", "",
        md_table(tables["table1_parameters"]), "",
        "## Table 5 (the paper's numbering): test accuracy (%)", "",
        "The short run is a training of its own, as in the study: its cosine schedule anneals the learning rate "
        "from its start to 0 over its own epochs, so it is not the first epochs of the long run.", "",
        md_table(tables["table5_accuracy"]), "",
        "## Table 6 (the paper's numbering): seconds per training epoch", "", TABLE6,
        *(["", sharing] if sharing else []), "",
        md_table(tables["table6_seconds_per_epoch"]), "",
        "## Table 7 (the paper's numbering): parameters per percentage point of test accuracy", "",
        "From each run's logged parameter count and its final test accuracy.", "",
        md_table(tables["table7_parameter_efficiency"]), "",
        "## Learning dynamics", "",
        ("Every seed of every model, one row per epoch count: colour for the model, line style and marker for the "
         "seed (a model's first seed solid with circles, its second dashed with crosses, its third dotted with "
         "triangles; the legend names each), so seeds that coincide all show." if curves
         else "No runs to draw yet."), "",
        *(["![learning curves](figures/learning_curves.png)", ""] if curves else []),
        "## Discussion: what this rerun reproduces", "",
        *discussion(claims, short, long, data), "",
        "## Ablation: one setting changed", "",
    ]
    if len(ablation):
        out += ["Runs that differ from the recipe in exactly one of "
                f"{', '.join(f'`{k}`' for k in settings.report.ablation_keys)}, beside the recipe's own runs "
                "(their run ids: Provenance). A training loss flat at 2.303 (ln 10) is a network that outputs the "
                "same guess for every image.", "", md_table(ablation), ""]
    else:
        out += ["No runs yet. For example: `dvc exp run -S train.init=kaiming -S 'models=[vgg16]'`.", ""]
    out += ablation_gaps(selection, long)
    out += ["## What the JPEG mirror costs: accuracy against JPEG quality", "", *jpeg]
    out += ["## Why plain VGG-16 does not learn: the signal at initialisation", "", SIGNAL, "",
            "![signal at initialisation](figures/init_signal.png)", "", md_table(signal), ""]
    out += ["## Runs left out", ""]
    out += [f"- {line}" for line in selection.left_out] or ["None: every finished run in the experiment is shown."]
    if REPEATED_STEPS:  # one value per epoch was taken; say which runs held more
        out += ["", f"{plural(len(REPEATED_STEPS), 'run')} logged an epoch more than once (a kill between an epoch's "
                "log and its saved state, under code that logged before saving): the tables and curves take one "
                f"value per epoch, the last logged: {', '.join(sorted(REPEATED_STEPS))}."]
    out += ["", "## Receptive fields (the paper's Tables 2-4)", "",
            "Computed by walking each model's `features` (r_out = r_in + (k-1)·j_in, j_out = j_in·s), and checked "
            "against a gradient measurement (the input region with non-zero gradient for one central output unit, "
            "on an input large enough that padding never clips it): the `measured` column. VGG-16 and VGG-16 with "
            "BN share their conv and pool geometry, so their fields are identical (one line in the figure).", "",
            "![receptive field growth](figures/receptive_field_growth.png)", ""]
    for model, table in rf_tables.items():
        out += [f"### {NAMES[model]}", "", md_table(table), ""]
    out += ["### Where the paper's receptive fields differ from the computed ones", ""]
    if len(rf_diff):
        out += ["The study's arithmetic slips (e.g. Pool1 of AlexNet: 3 + (2-1)·1 = 4, not 6), and the errors "
                "carry forward; the paper's Section 4.2 text gives a second, different AlexNet list, and its "
                "Section 4.3 text a third, per-block list for VGG-16 (a block's field is its last conv's).", "",
                md_table(rf_diff), ""]
    else:
        out += ["None.", ""]
    out += ["## Learned filters and feature maps (the paper's section 7)", ""]
    if pictures:
        out.append("From the workspace's trainings (the `evaluate` stage; the same seeded test images for every "
                   "model). " + FEATURE_MAPS)
        for model, kinds in pictures.items():
            out += ["", f"### {NAMES[model]}", "", f"From one training: {sources.get(model, 'record not found')}.",
                    ""]
            out += [f"![{model} {kind}](figures/{model}_{kind}.png)" for kind in kinds]
    else:
        out.append("Not built yet: `dvc repro` runs the `evaluate` stages.")
    out += ["", "## Provenance", "", "Every run this report uses: the numbers of Tables 5-7 (each seed's value: "
            "`tables/seed_values.csv`), the ablation's and the JPEG variants'. `device shared`: how many other "
            "finished trainings ran on the same host and device while it ran." + (
                " `run name` is as logged: runs logged before names carried the ablation setting share the "
                "recipe run's name; `used for` and `run id` tell them apart."
                if len(provenance) and provenance["run name"].duplicated().any() else ""), "",
            md_table(provenance) if len(provenance) else "No matching runs.", ""]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
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
            # a results store keeps records and evaluations, no weights: its record.json is the source there
            result = build_report(settings=settings, report_dir=out, output_root=args.store / "outputs", weights=False,
                                  rf_dir=args.store / "no-receptive-fields", signal_dir=args.store / "no-signal",
                                  data_dir=args.store / "no-data")
        else:
            out = REPORT_DIR
            result = build_report(settings=load_settings(args.params))
        cells = sum(len(c.runs) for c in result["selection"].study.values())
        unit = "epochs" if result["short"] or result["long"] != 1 else "epoch"
        print(f"wrote {out / 'report.md'}: {plural(cells, 'run')} in the study's tables "
              f"({epoch_columns(result['short'], result['long'])} {unit}), "
              f"in {time.perf_counter() - start:.1f} s")
        print(f"the runs in MLflow: {result['runs_table']}")

    run_main(work)


if __name__ == "__main__":
    main()
