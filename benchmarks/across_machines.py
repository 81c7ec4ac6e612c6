"""The committed results stores side by side, cell by cell: a reproduction across machines.

Reads each store's report tables (seed_values.csv: the seeds behind Table 5; provenance_runs.csv:
the commit each seed trained at) and writes results/across_machines.md and .csv: per model and
epoch count, each store's mean ± sd (n), the difference with its Welch interval and p-value
(Holm-corrected over the cells where a network learns), the seeds' sd within a machine (pooled)
and over both machines together: what the second machine adds to the seed-to-seed spread.

    python -m benchmarks.across_machines results/h200-2026-11-27 results/h100-2026-11-27
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from study.analysis.paper import NAMES
from study.analysis.stats import ALPHA, at_chance, fmt_number, fmt_p, fmt_stat, holm, p_value, welch
from study.figures import md_table

OUT = Path("results/across_machines")


def seeds(store: Path) -> pd.DataFrame:
    tables = store / "report" / "tables"
    values = pd.read_csv(tables / "seed_values.csv")
    provenance = pd.read_csv(tables / "provenance_runs.csv", dtype=str)
    commits = dict(zip(provenance["run id"], provenance["git commit"], strict=True))
    return values.assign(commit=values["run_id"].map(commits))


def pooled_sd(groups: list[list[float]]) -> float:
    return math.sqrt(sum((len(g) - 1) * pd.Series(g).var() for g in groups) / sum(len(g) - 1 for g in groups))


def same_seeds(first: pd.DataFrame, second: pd.DataFrame) -> str:
    """The seeds both stores ran: the same initial weights and batch order on another machine."""
    other = dict(zip(second["seed"], second["final_test_acc"], strict=True))
    return ", ".join(f"{seed}: {fmt_number(acc - other[seed], '+.2f')}"
                     for seed, acc in zip(first["seed"], first["final_test_acc"], strict=True) if seed in other)


def compare(first: Path, second: Path) -> pd.DataFrame:
    a, b = seeds(first), seeds(second)
    rows, tested = [], {}
    for (model, epochs), cell in a.groupby(["model", "epochs"], sort=True):
        other = b[(b["model"] == model) & (b["epochs"] == epochs)]
        x, y = list(cell["final_test_acc"]), list(other["final_test_acc"])
        if not y:
            continue
        gap = welch(x, y)
        row = {"model": NAMES.get(model, model), "epochs": epochs, first.name: fmt_stat(x), second.name: fmt_stat(y),
               "difference": fmt_number(gap.gap, "+.2f"), "95% interval": "-", "p (Holm)": "-",
               "sd within a machine": fmt_number(pooled_sd([x, y])) if len(x) > 1 and len(y) > 1 else "-",
               "sd over both": fmt_number(pd.Series(x + y).std()),
               "same seed, first − second": same_seeds(cell, other),
               "commits": f"{', '.join(sorted(set(cell['commit'])))} / {', '.join(sorted(set(other['commit'])))}"}
        if not (at_chance(x) and at_chance(y)) and gap.low is not None:
            row["95% interval"] = f"[{fmt_number(gap.low, '+.2f')}, {fmt_number(gap.high, '+.2f')}]"
            tested[len(rows)] = p_value(gap)
        rows.append(row)
    for i, p in holm(tested).items():
        rows[i]["p (Holm)"] = fmt_p(p) + (" (differs)" if p < ALPHA else "")
    return pd.DataFrame(rows)


def write(table: pd.DataFrame, first: Path, second: Path, out: Path = OUT) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    text = [
        "# The committed stores side by side: a reproduction across machines",
        "",
        f"Written by `python -m benchmarks.across_machines {first} {second}` from each store's report tables. "
        "Test accuracy (%) per model and epoch count: each store's mean ± sd (n), the difference of means with its "
        "95% Welch interval and two-sided p, Holm-corrected over the cells where a network learns. *sd within a "
        "machine*: the seeds' sd pooled within each store; *sd over both*: the sd of every seed of both stores "
        "together. Where the second exceeds the first, the machine (and the commit, the torch build, the GPU) adds "
        "spread that a single store's intervals do not hold. *same seed*: the seeds both stores ran, each the same "
        "initial weights and batch order on the two machines, their difference. *commits*: the code each "
        "store's seeds trained at (first store / second).",
        "",
        md_table(table, ("commits",)),
        "",
        "The stores differ in more than the GPU: their commits, torch builds and seeds per cell differ too (each "
        "store's README says which). A difference here is the whole rerun's reproducibility, not the GPU's alone.",
        "",
    ]
    path = out.with_suffix(".md")
    path.write_text("\n".join(text))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    print(f"wrote {write(compare(args.first, args.second), args.first, args.second)}")


if __name__ == "__main__":
    main()
