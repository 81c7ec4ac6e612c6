"""Stage `summary`: the study in one small metrics file, `metrics.json` at the top level,
for DVC's own comparison (`dvc exp show`, `dvc metrics diff`): per model, the final test
accuracy (`acc`, %) and the mean seconds per training epoch (`sec`, over all epochs, the first
and its warm-up included: the report's Table 6 gives the first epoch and the later ones apart)
of the workspace's trainings.

Numbers only, short names; provenance stays in each training's record and in MLflow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study.config import load_settings
from study.console import run_main
from study.errors import StageError
from study.files import write_json
from study.outputs import bound_record, training_metrics

SUMMARY = Path("metrics.json")
OUTPUT_ROOT = Path("outputs")


def summarise(models, output_root: Path = OUTPUT_ROOT, path: Path = SUMMARY) -> dict:
    summary = {}
    for model in models:
        metrics = output_root / model / "metrics.json"
        if not metrics.exists():
            raise StageError(f"{metrics} not found; train it first with `dvc repro train@{model}`")
        record = bound_record(model, output_root, evaluation=False)  # an edited or swapped file stops here
        values = training_metrics(record)
        summary[model] = {"acc": round(values["final_test_acc"], 2), "sec": round(values["mean_epoch_time_s"], 3)}
    write_json(path, summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    args = parser.parse_args()

    def work():
        summary = summarise(load_settings(args.params).models)
        print("  ".join(f"{m} {v['acc']:.2f}%" for m, v in summary.items()), f"-> {SUMMARY}")

    run_main(work)


if __name__ == "__main__":
    main()
