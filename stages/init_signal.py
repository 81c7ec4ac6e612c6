"""Stage `init_signal`: how the signal travels through each network at initialisation,
PyTorch's default init against Kaiming's and torchvision's VGG init, before any training (the analysis:
study.analysis.init_signal).

Writes outputs/init_signal/{signal.csv, signal.png}.
"""

from __future__ import annotations

import argparse

from study.analysis.init_signal import analyse, summary
from study.config import load_settings
from study.console import run_main


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--params", default="params.yaml", help="the params file to read (default: params.yaml)")
    args = parser.parse_args()

    def work():
        settings = load_settings(args.params)
        table = analyse(list(settings.models), settings.seed)
        for _, row in summary(table).iterrows():
            print(f"{row['model']} ({row['init']} init): activation std {row['activation std, first → last conv']}")

    run_main(work)


if __name__ == "__main__":
    main()
