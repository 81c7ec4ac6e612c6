"""Stage `report`: reports/report.md with the study's tables beside ours, rebuilt from the
MLflow store (the source of truth) and the cached analysis outputs, without training.

Before reading the store, every training record in outputs/ that the store lacks (a
run-cache restore, `dvc exp apply`, a new or deleted store) is logged to it again, so DVC's
outputs and MLflow never disagree. Which runs count: study/analysis/selection.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from models.architectures import NETWORKS, Residual
from study.analysis.claims import ABSOLUTE_COLUMNS, COLUMNS, absolute_rows, epoch_columns, judge
from study.analysis.init_signal import summary as init_signal_summary
from study.analysis.jpeg_cost import (
    MIRROR_QUALITY,
    cost_points,
    cost_table,
    slope_words,
    variant_cells,
    variant_quality,
)
from study.analysis.jpeg_cost import section as jpeg_section
from study.analysis.ledger import Evidence
from study.analysis.paper import NAMES
from study.analysis.provenance import figure_sources, provenance_table, seed_commits
from study.analysis.selection import Selection, StepReader, select
from study.analysis.speed import device_sharing, epoch_times, sharing_note, timing_runs
from study.analysis.tables import ablation_gaps, ablation_table, seed_values, study_tables
from study.config import Settings, load_settings
from study.console import plural, run_main
from study.data import PREPARED_DIR, prepared_meta
from study.errors import StageError
from study.figures import FEATURE_MAP_TOP, SEED_MARKERS, SEED_STYLES, md_table, plot_cost, plot_curve_rows
from study.files import atomic_entries
from study.paths import INIT_SIGNAL_DIR, OUTPUT_ROOT, RECEPTIVE_FIELD_DIR, output_paths

REPORT_DIR = Path("reports")


def choose_epochs(cells: dict, epochs: int, short_epochs: int) -> tuple[int | None, int]:
    counts = {e for _, e in cells}
    long = max(counts | {epochs})
    below = sorted(c for c in counts if c < long)
    short = short_epochs if short_epochs in below else (below[-1] if below else None)
    return short, long


# ---------------------------------------------------------------- figures
def plot_learning_curves(steps: StepReader, models, study: dict, epoch_counts, path: Path) -> bool:
    """Every seed of every model, one row per epoch count: colour per model, line style and
    marker per seed (so seeds that coincide, like VGG-16's at 10%, both show)."""
    rows = []
    for epochs in (e for e in epoch_counts if e):
        curves = []
        for model in models:
            cell = study.get((model, epochs))
            for i, run in enumerate(cell.runs if cell else []):
                history = {name: steps(run["run_id"], name)
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


def fetch_runs(settings: Settings, output_root: Path, weights: bool = True, copy_of: str | None = None):
    """Log what the store lacks from the workspace's records; then every finished run, the record
    ids of the workspace's trainings, and the warnings (what could not be logged). ``copy_of``: the
    store the open one is a copy of, which is only read: what went into the copy alone is a warning."""
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
    if copy_of:  # the report shows it, the store itself still lacks it: say so where the numbers are
        lines = [line if line.startswith("warning: ") else f"warning: {copy_of} is only read, so this went into a "
                 f"copy for this report alone and the store still lacks it: {line}" for line in lines]
    for line in lines:
        print(line)
    warnings = [line for line in lines if line.startswith("warning: ")]
    runs = finished_runs(settings.mlflow.experiment)
    if runs.empty:
        raise StageError(f"MLflow store {uri} has no finished runs in experiment {settings.mlflow.experiment!r}: "
                         f"fill it with `dvc repro` ({settings.epochs} epochs) and "
                         f"`dvc exp run -S epochs={settings.report.short_epochs}`")
    return runs, workspace, mlflow.MlflowClient(uri), uri, warnings


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


def build_report(*, settings: Settings, report_dir: Path = REPORT_DIR, output_root: Path = OUTPUT_ROOT,
                 weights: bool = True, rf_dir: Path = RECEPTIVE_FIELD_DIR, signal_dir: Path = INIT_SIGNAL_DIR,
                 data_dir: Path = PREPARED_DIR, shown_uri: str | None = None) -> dict:
    """``shown_uri``: the store to name in the report and the runs-table line, where the one read is
    a copy of it (``store_report``)."""
    from study.tracking.store import runs_table_link

    models = list(settings.models)
    runs, workspace, client, uri, warnings = fetch_runs(settings, output_root, weights,
                                                        copy_of=shown_uri and store_name(shown_uri))
    steps = StepReader(client)  # each run's metrics per epoch, and which runs held an epoch twice
    # the JPEG section's runs; every other one goes through select. A workspace trained on a variant
    # shows its own runs in the tables: the comparison against the mirror is a mirror report's
    on_variant = variant_quality(prepared_meta(data_dir).get("jpeg_quality"))  # the data's identity (prepare)
    variants = variant_cells(runs, settings) if on_variant is None else {}
    in_jpeg = {r["run_id"] for cell in variants.values() for r in cell.runs}
    selection = select(runs[~runs["run_id"].isin(in_jpeg)], settings, prepared_meta(data_dir).get("sha256"), workspace)
    short, long = choose_epochs(selection.study, settings.epochs, settings.report.short_epochs)
    times = epoch_times(steps, [r for cell in selection.study.values() for r in cell.runs])
    shared = device_sharing(runs)
    tables = study_tables(models, selection.study, short, long, settings.epochs, settings.report.short_epochs,
                          times, shared)
    evidence = gather_evidence(selection, short, long, steps, times, shared, settings.data.test_subset)
    report = {"tables": tables, "ablation": ablation_table(steps, selection), "selection": selection,
              "short": short, "long": long, "claims": judge(evidence),
              "absolute": absolute_rows(evidence, seed_commits(selection)),
              "provenance": provenance_table(selection, short, long, models, shared, variants)}
    report.update(model_analyses(models, settings.seed, rf_dir, signal_dir))
    with atomic_entries(report_dir, ("report.md", "figures", "tables")) as tmp:
        (tmp / "figures").mkdir(parents=True)
        (tmp / "tables").mkdir()
        write_tables(tmp / "tables", report, seed_values(selection.study, times))
        jpeg = cost_table(selection.study, variants)
        jpeg.to_csv(tmp / "tables" / "jpeg_cost.csv", index=False)
        drawn = plot_cost(cost_points(selection.study, variants), MIRROR_QUALITY, tmp / "figures" / "jpeg_cost.png")
        jpeg_lines = jpeg_section(jpeg, drawn, slope_words(selection.study, variants), on_variant)
        curves = plot_learning_curves(steps, models, selection.study, (short, long),
                                      tmp / "figures" / "learning_curves.png")
        (tmp / "figures" / "receptive_field_growth.png").write_bytes(report.pop("growth_png"))
        (tmp / "figures" / "init_signal.png").write_bytes(report.pop("signal_png"))
        pictures = copy_pictures(models, output_root, tmp / "figures")
        text = render(**report, store=store_name(shown_uri or uri), settings=settings, curves=curves, pictures=pictures,
                      jpeg=jpeg_lines, sources=figure_sources(pictures, output_root, client),
                      sharing=sharing_note(runs, report["provenance"]), repeated=steps.repeated, warnings=warnings)
        (tmp / "report.md").write_text(text)
    return {"short": short, "long": long, "selection": selection, "tables": tables, "ablation": report["ablation"],
            "runs_table": runs_table_link(shown_uri or uri, str(runs["experiment_id"].iloc[0]))}


def gather_evidence(selection: Selection, short, long, steps: StepReader, times: dict, shared: dict,
                    test_subset: int) -> Evidence:
    """What the claims are judged on: the cells, each cell's timed seconds per epoch (Table 6's
    runs) and the long runs' training-loss curves."""
    seconds = {key: [times[r["run_id"]][1] for r in timing_runs(cell, shared)
                     if times.get(r["run_id"], (None, None))[1] is not None] for key, cell in selection.study.items()}
    losses = {(m, e): [[v for _, v in steps(r["run_id"], "train_loss")] for r in cell.runs]
              for (m, e), cell in selection.study.items() if e == long}
    return Evidence(selection.study, short, long, seconds, losses, test_subset or Evidence.test_images)


def model_analyses(models: list[str], seed: int, rf_dir: Path, signal_dir: Path) -> dict:
    """The receptive fields and the signal at initialisation, as their stages wrote them, or computed
    here where they did not, for every network in ``models`` (`python -m stages.report` on MLflow
    alone, or after an experiment that ran fewer networks than params.yaml names; seconds on a CPU)."""
    with tempfile.TemporaryDirectory() as scratch:
        if not all((rf_dir / name).exists() for name in ["paper_differences.csv", *(f"{m}.csv" for m in models)]):
            from study.analysis.receptive_field import analyse as analyse_receptive_fields  # torch: only here

            rf_dir = Path(scratch)
            analyse_receptive_fields(models, rf_dir)
        if not (signal_dir / "signal.csv").exists() or \
                not set(models) <= set(pd.read_csv(signal_dir / "signal.csv", usecols=["model"])["model"]):
            from study.analysis.init_signal import analyse as analyse_init_signal

            signal_dir = Path(scratch) / "signal"
            analyse_init_signal(models, seed, signal_dir)
        return {"rf_tables": {m: pd.read_csv(rf_dir / f"{m}.csv", keep_default_na=False) for m in models},
                "rf_diff": pd.read_csv(rf_dir / "paper_differences.csv"),
                "growth_png": (rf_dir / "growth.png").read_bytes(),
                "signal": init_signal_summary(pd.read_csv(signal_dir / "signal.csv")),
                "signal_png": (signal_dir / "signal.png").read_bytes()}


def write_tables(folder: Path, report: dict, seeds: pd.DataFrame) -> None:
    """Every table of the report as CSV (`reports/tables/`)."""
    for name, table in report["tables"].items():
        table.to_csv(folder / f"{name}.csv", index=False)
    seeds.to_csv(folder / "seed_values.csv", index=False)
    report["ablation"].to_csv(folder / "ablation.csv", index=False)
    for model, table in report["rf_tables"].items():
        table.to_csv(folder / f"receptive_field_{model}.csv", index=False)
    report["rf_diff"].to_csv(folder / "receptive_field_paper_differences.csv", index=False)
    report["provenance"].to_csv(folder / "provenance_runs.csv", index=False)
    pd.DataFrame(report["claims"], columns=COLUMNS).to_csv(folder / "claims.csv", index=False)
    pd.DataFrame(report["absolute"], columns=ABSOLUTE_COLUMNS).to_csv(folder / "claims_absolute.csv", index=False)
    report["signal"].to_csv(folder / "init_signal.csv", index=False)


def copy_pictures(models: list[str], output_root: Path, figures: Path) -> dict[str, list[str]]:
    """The evaluate stage's figures of each model, as the report shows them: per model, the kinds found."""
    pictures: dict[str, list[str]] = {}
    for model in models:
        source = output_root / model / "eval" / "figures"
        for kind in ("filters", "feature_maps", "confusion"):
            if (source / f"{kind}.png").exists():
                shutil.copy(source / f"{kind}.png", figures / f"{model}_{kind}.png")
                pictures.setdefault(model, []).append(kind)
    return pictures


TEMPLATE = Path(__file__).with_name("report.md.j2")  # the report's prose; its numbers come from render


def render(*, tables, ablation, signal, rf_tables, rf_diff, provenance, claims, absolute, short, long, selection, store,
           settings, curves, pictures, sources, sharing, jpeg, repeated=(), warnings=()) -> str:
    """report.md: the numbers and tables computed here, the words in ``TEMPLATE``."""
    import jinja2

    study_runs = provenance[provenance["used for"] == "Tables 5-7"] if len(provenance) else provenance
    data = data_name(settings.data.source)
    gaps = ablation_gaps(selection, long)
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined, autoescape=False)
    return environment.from_string(TEMPLATE.read_text()).render(
        built=time.strftime("%Y-%m-%d %H:%M %Z"), store=store, experiment=settings.mlflow.experiment, short=short,
        long=long, data=data,
        shas=sorted(set(study_runs["data sha256"])) if len(study_runs) else [],  # the study's, not the variants'
        devices=sorted(set(study_runs["device"].dropna())) if len(study_runs) else [],
        warnings=[line.removeprefix("warning: ") for line in warnings],
        tables={name: md_table(table) for name, table in tables.items()}, sharing=sharing, curves=curves,
        ledger=ledger_words(claims, absolute, short, long, data, settings.data.test_subset),
        ablation=md_table(ablation) if len(ablation) else "",
        ablation_keys=", ".join(f"`{k}`" for k in settings.report.ablation_keys),
        ablation_gaps="\n".join(gaps[:-1]) if gaps else "", jpeg="\n".join(jpeg), signal=md_table(signal),
        left_out=selection.left_out, repeated=sorted(repeated),
        residual=any(isinstance(NETWORKS[model], Residual) for model in rf_tables),
        rf_tables=[(NAMES[model], md_table(table)) for model, table in rf_tables.items()],
        rf_diff=md_table(rf_diff) if len(rf_diff) else "", feature_map_top=f"{FEATURE_MAP_TOP:g}",
        pictures=[(model, NAMES[model], sources.get(model, "record not found"), kinds)
                  for model, kinds in pictures.items()],
        provenance=md_table(provenance) if len(provenance) else "No matching runs.")


def ledger_words(claims: list[dict], absolute: list[dict], short, long, data: str, test_subset: int = 0) -> dict:
    """The ledger's numbers and tables for the template's words."""
    from study.analysis import ledger
    from study.analysis.claims import VERDICTS, count_line
    from study.analysis.paper import EPOCHS
    from study.analysis.stats import ALPHA, AT_CHANCE_WITHIN, CHANCE, CONFIDENCE, FAR_ABOVE, POWER

    words = ("where", "reading", "this rerun", "verdict", "seeds' commits")
    return {"count": count_line(claims), "verdicts": VERDICTS, "claims": md_table(pd.DataFrame(claims), words)
            if claims else "", "absolute": md_table(pd.DataFrame(absolute), words) if absolute else "",
            "not_judged": ledger.judged_elsewhere(), "unlike": (short, long) != EPOCHS,
            "epochs": epoch_columns(short, long), "data": data, "official": data == "official",
            "alpha": f"{ALPHA:g}", "confidence": f"{CONFIDENCE:.0%}", "power": f"{POWER:.0%}",
            "chance": f"{CHANCE:g}", "within": f"{AT_CHANCE_WITHIN:g}", "far": f"{FAR_ABOVE:g}",
            "margin": f"{ledger.MARGIN:g}", "time_margin": f"{ledger.TIME_MARGIN:.0%}",
            "loss_around": f"{ledger.LOSS_AROUND:g}", "test_images": f"{test_subset or ledger.TEST_IMAGES:,}"}


def store_report(store: Path, out: Path | None = None) -> tuple[Path, dict]:
    """The report of a results store (a folder holding mlflow.db, params.yaml and outputs/), into
    ``out`` (default: reports/<the store's folder name>), reading nothing else. The store is only
    read: MLflow opens a copy of its database, so whatever the report would record there (the
    experiment's description, a lock) never reaches the committed files."""
    if not (store / "mlflow.db").is_file():
        raise StageError(f"{store} holds no mlflow.db; give the folder of a results store, "
                         "e.g. results/h200-2026-11-27")
    out = out or REPORT_DIR / store.resolve().name
    if out.exists() and not out.is_dir():
        raise StageError(f"{out} is a file; give --out a folder for the report (made if missing)")
    if not (store / "params.yaml").is_file():
        raise StageError(f"{store} holds no params.yaml, the recipe its runs are matched against; put the params.yaml "
                         "its runs ran with there (a results store keeps it beside its mlflow.db)")
    settings = load_settings(store / "params.yaml")
    before = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copyfile(store / "mlflow.db", Path(scratch) / "mlflow.db")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(scratch) / 'mlflow.db'}"
        try:  # a results store keeps records and evaluations, no weights: its record.json is the source there
            return out, build_report(settings=settings, report_dir=out, output_root=store / "outputs", weights=False,
                                     rf_dir=store / "no-receptive-fields", signal_dir=store / "no-signal",
                                     data_dir=store / "no-data",
                                     shown_uri=f"sqlite:///{(store / 'mlflow.db').resolve()}")
        except StageError as err:  # named as the user gave it, not as the copy this reads
            raise StageError(str(err).replace(str(Path(scratch) / "mlflow.db"), str(store / "mlflow.db"))) from None
        finally:  # never left pointing at the copy, which goes with this block
            if before is None:
                del os.environ["MLFLOW_TRACKING_URI"]
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    parser.add_argument("--store", type=Path, help="a results store (a folder holding mlflow.db, params.yaml and "
                        "outputs/): build its report from it alone, with its own params.yaml; the store is only "
                        "read")
    parser.add_argument("--out", type=Path, help="with --store, the folder the report goes to (default: "
                        "reports/<the store's folder name>)")
    args = parser.parse_args()

    def work():
        start = time.perf_counter()
        if args.out and not args.store:
            raise StageError("--out goes with --store; the pipeline's own report is reports/report.md")
        if args.store and args.params != "params.yaml":
            raise StageError("--params goes without --store: a results store is read with its own params.yaml")
        if args.store:
            out, result = store_report(args.store, args.out)
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
