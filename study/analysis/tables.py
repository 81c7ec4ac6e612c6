"""The report's study tables (the paper's Tables 1, 5, 6 and 7 beside ours), the runs behind
them seed by seed, and the ablation table, from the selected MLflow runs."""

from __future__ import annotations

import pandas as pd

from models.architectures import conv_count, fc_count, parameter_count
from study.analysis import paper
from study.analysis.ledger import per_point
from study.analysis.paper import NAMES, NOT_IN_PAPER
from study.analysis.selection import Cell, Selection, StepReader
from study.analysis.speed import sharing_cell, timing_runs
from study.analysis.stats import fmt_number, fmt_stat, mean_sd
from study.console import plural


def not_run(epochs: int | None, workspace_epochs: int, short_epochs: int = paper.EPOCHS[0]) -> str:
    """The cell of a run that is missing, with the command that fills it."""
    epochs = epochs or short_epochs
    command = "dvc repro" if epochs == workspace_epochs else f"dvc exp run -S epochs={epochs}"
    return f"not run (`{command}`)"


def study_tables(models, study: dict[tuple[str, int], Cell], short: int | None, long: int,
                 workspace_epochs: int, short_epochs: int = paper.EPOCHS[0], times: dict | None = None,
                 shared: dict | None = None) -> dict[str, pd.DataFrame]:
    times, shared = times or {}, shared or {}
    t1, t5, t6, t7 = [], [], [], []
    for model in models:
        convs, fcs = conv_count(model), fc_count(model)
        params = parameter_count(model)
        in_paper = model in paper.PAPER_MODELS
        t1.append({"model": NAMES[model], "depth (conv+FC)": f"{convs}+{fcs}={convs + fcs}",
                   "paper depth": paper.DEPTH.get(model, NOT_IN_PAPER), "parameters": f"{params:,}",
                   "paper": f"{paper.PARAMS_M[model]}M" if in_paper else NOT_IN_PAPER,
                   "difference": f"{params / 1e6 - paper.PARAMS_M[model]:+.2f}M" if in_paper else NOT_IN_PAPER})
        row5, row6 = {"model": NAMES[model]}, {"model": NAMES[model]}
        for idx, epochs in enumerate((short, long)):  # the study's (5, 40) columns
            cell = study.get((model, epochs)) if epochs else None
            label = f"{epochs} ep" if epochs else "short run"
            ours = cell.values("final_test_acc") if cell else []
            theirs = paper.ACCURACY[model][idx] if in_paper else None
            missing = not_run(epochs, workspace_epochs, short_epochs)
            row5[f"ours ({label})"] = fmt_stat(ours) + mixed(cell) if ours else missing
            row5[f"paper ({paper.EPOCHS[idx]} ep)"] = NOT_IN_PAPER if theirs is None else f"{theirs:.2f}"
            row5[f"diff ({label})"] = "-" if not ours else NOT_IN_PAPER if theirs is None else \
                fmt_number(mean_sd(ours)[0] - theirs, "+.2f") if epochs == paper.EPOCHS[idx] else \
                f"- ({plural(epochs, 'epoch')}, not {paper.EPOCHS[idx]})"
            timed = [times[r["run_id"]] for r in timing_runs(cell, shared) if r["run_id"] in times] if cell else []
            later = [t for _, t in timed if t is not None]
            untimed = "not logged" if cell else missing
            row6[f"first epoch, start-up-sensitive ({label})"] = fmt_stat([f for f, _ in timed], always_n=True) \
                if timed else untimed
            row6[f"later epochs ({label})"] = fmt_stat(later, always_n=True) if later else untimed if not timed else "-"
            row6[f"paper ({paper.EPOCHS[idx]} ep)"] = f"{paper.SECONDS[model][idx]:.2f}" if in_paper else NOT_IN_PAPER
            row6[f"device shared ({label})"] = sharing_cell(cell, shared)
        t5.append(row5)
        t6.append(row6)
        cell = study.get((model, long))
        accuracy, points = (cell.values("final_test_acc") if cell else []), per_point(cell)
        t7.append({"model": NAMES[model], "parameters": f"{params / 1e6:.1f}M",
                   f"test acc ({long} ep)": fmt_stat(accuracy) if accuracy else not_run(long, workspace_epochs),
                   "paper acc (40 ep)": f"{paper.ACCURACY[model][1]:.2f}" if in_paper else NOT_IN_PAPER,
                   "params per point (K)": fmt_stat(points, ".0f") if points else "-",
                   "paper (K)": f"{paper.PER_POINT_K[model]}" if in_paper else NOT_IN_PAPER,
                   "diff (K)": per_point_gap(model, points, long) if in_paper else NOT_IN_PAPER})
    return {"table1_parameters": pd.DataFrame(t1), "table5_accuracy": pd.DataFrame(t5),
            "table6_seconds_per_epoch": pd.DataFrame(t6), "table7_parameter_efficiency": pd.DataFrame(t7)}


def per_point_gap(model: str, points: list[float], long: int) -> str:
    """Table 7's difference to the paper, at the paper's own 40 epochs only."""
    if not points:
        return "-"
    if long != paper.EPOCHS[1]:
        return f"- ({plural(long, 'epoch')}, not {paper.EPOCHS[1]})"
    return fmt_number(mean_sd(points)[0] - paper.PER_POINT_K[model], "+.0f")


def mixed(cell: Cell | None) -> str:
    """" [2 commits]", " [2 commits, 2 environments]": a cell whose seeds did not all run the same
    code in the same environment (the installed packages' digest where a run recorded it, else
    its torch version); "" when they did."""
    if cell is None:
        return ""
    commits = set()
    for r in cell.runs:  # a run resumed under another commit counts each one (its git_commits tag)
        listed = r.get("tags.git_commits")
        commits |= set(listed.split(",")) if isinstance(listed, str) and listed else {str(r.get("tags.git_commit"))}
    environments = set()
    for r in cell.runs:  # a run resumed in another installed set counts each one
        sets = r.get("tags.env.packages_sha256s")
        sets = sets if isinstance(sets, str) else r.get("tags.env.packages_sha256")
        environments |= set(sets.split(",")) if isinstance(sets, str) else {str(r.get("tags.torch_version"))}
    parts = [f"{len(found)} {what}" for found, what in ((commits, "commits"), (environments, "environments"))
             if len(found) > 1]
    return f" [{', '.join(parts)}]" if parts else ""


def seed_values(study: dict[tuple[str, int], Cell], times: dict) -> pd.DataFrame:
    """Every run behind the tables, one row per seed: the values the means are made of."""
    return pd.DataFrame([{"model": m, "epochs": e, "seed": int(r["params.seed"]), "run_id": r["run_id"],
                          "final_test_acc": r.get("metrics.final_test_acc"),
                          "mean_epoch_time_s": r.get("metrics.mean_epoch_time_s"),
                          "first_epoch_s": times.get(r["run_id"], (None, None))[0],
                          "mean_epoch_time_s_after_first": times.get(r["run_id"], (None, None))[1],
                          "num_parameters": r.get("params.num_parameters")}
                         for (m, e), cell in sorted(study.items()) for r in cell.runs])


def first_losses(steps: StepReader, cell: Cell | None, epochs: int = 5) -> str:
    """Training loss at epochs 1..5 of the cell's first run: a flat 2.303 means no learning."""
    if cell is None:
        return "-"
    points = steps(cell.runs[0]["run_id"], "train_loss")
    return " / ".join(f"{v:.3f}" for s, v in points if s <= epochs)


ABLATION_COLUMNS = ["setting", "model", "epochs", "seeds", "test acc", "recipe's test acc", "train loss, epochs 1-5",
                    "recipe's train loss, epochs 1-5"]


def ablation_table(steps: StepReader, selection: Selection) -> pd.DataFrame:
    rows = []
    for (key, value, model, epochs), cell in sorted(selection.ablation.items()):
        base = selection.study.get((model, epochs))
        rows.append({"setting": f"{key}={value}", "model": NAMES[model], "epochs": epochs,
                     "seeds": ", ".join(map(str, cell.seeds)),
                     "test acc": fmt_stat(cell.values("final_test_acc")),
                     "recipe's test acc": fmt_stat(base.values("final_test_acc")) if base else "not run",
                     "train loss, epochs 1-5": first_losses(steps, cell),
                     "recipe's train loss, epochs 1-5": first_losses(steps, base)})
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)  # the header even when empty: a CSV reads back


ABLATION_SEEDS = 3  # seeds an ablation needs before the report lets it speak to a claim
WANTED_ABLATION = paper.WANTED_ABLATION  # the ablation the claims need


def ablation_gaps(selection: Selection, long: int) -> list[str]:
    """What the ablation cannot say yet: the wanted ablation missing or short of seeds, and a
    one-seed ablation named as deciding nothing."""
    key, value, model = WANTED_ABLATION
    lines = []
    for (k, v, m, e), cell in sorted(selection.ablation.items()):
        if len(cell.seeds) < ABLATION_SEEDS and (k, v, m) != WANTED_ABLATION:
            lines.append(f"`{k}={v}` for {NAMES[m]} ({e} epochs) has {len(cell.seeds)} of the "
                         f"{ABLATION_SEEDS} seeds an ablation needs here: it decides nothing"
                         + (", and its Kaiming init also redraws the linear layers (the last one with sd "
                            "sqrt(2/10) = 0.45), unlike torchvision's VGG" if (k, v) == ("train.init", "kaiming")
                            else ""))
    wanted = selection.ablation.get((key, value, model, long))
    have = len(wanted.seeds) if wanted else 0
    if have < ABLATION_SEEDS:
        lines.append(f"Missing: plain {NAMES[model]} with torchvision's VGG init (`{key}={value}`: conv Kaiming "
                     f"fan-out, linear N(0, 0.01)) at {plural(long, 'epoch')}, {ABLATION_SEEDS} seeds ({have} so far): "
                     f"`dvc exp run --queue -S {key}={value} -S 'models=[{model}]' -S "
                     f"'seed={','.join(map(str, range(ABLATION_SEEDS)))}'` (`benchmarks/device/gpu_pipeline.sh` queues "
                     "it on a GPU). Until it runs, "
                     f"nothing here says whether BatchNorm or the initialisation is what {NAMES[model]}'s 13 conv "
                     "layers need to train with this recipe")
    return [*(f"- {line}." for line in lines), ""] if lines else []
