"""Stage `receptive_fields`: the study's Tables 2-4 for every model, computed by walking
the real model's ``features``, checked by measuring gradients, compared with the paper
(the analysis: study.analysis.receptive_field).

Writes outputs/receptive_fields/<model>.csv, paper_differences.csv and growth.png.
"""

from __future__ import annotations

import argparse

from models.architectures import NETWORKS, Residual
from study.analysis.receptive_field import analyse
from study.config import load_settings
from study.console import run_main


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    args = parser.parse_args()

    def work():
        models = list(load_settings(args.params).models)
        tables = analyse(models)
        for model, table in tables.items():
            residual = isinstance(NETWORKS[model], Residual)  # its table gives the stem, then each stage
            steps = f"{len(table) - 2} stages past its stem" if residual else f"{len(table) - 1} conv/pool layers"
            print(f"{model}: receptive field {int(table['receptive_field'].iloc[-1])} px after {steps} "
                  "(walk and gradient measurement agree)")

    run_main(work)


if __name__ == "__main__":
    main()
