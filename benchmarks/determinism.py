"""Does a seed rerun bit for bit? One network, one seed, trained RUNS times in fresh processes
with ``runtime.deterministic`` on and RUNS times off: the sha256 of the trained weights of each,
whether they agree within each mode, and the seconds per epoch (the later epochs' mean) that the
deterministic kernels cost. Needs only torch and this project (no MLflow, no DVC).

    python -m benchmarks.determinism --data ../shared/data/cifar10-jpeg.tar.gz --out benchmarks/results/x
    python -m benchmarks.determinism --data ... --model vgg8 --epochs 1 --train-subset 500 --out /tmp/d  # a CPU try
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path


def one_training(data: str, model: str, epochs: int, train_subset: int, deterministic: bool) -> dict:
    """In this process (a fresh one per training): the weights' sha256 and the seconds per epoch."""
    import torch

    from study.data import load_arrays
    from study.provenance import device_name
    from study.training.batches import balanced_subset
    from study.training.engine import Recipe, train

    arrays = load_arrays(data)
    if train_subset:
        keep = balanced_subset(arrays["train_labels"], train_subset, seed=0)
        arrays = {**arrays, "train_images": arrays["train_images"][keep], "train_labels": arrays["train_labels"][keep]}
    result = train(model, arrays, Recipe(epochs=epochs, deterministic=deterministic), progress=False,
                   log=lambda line: None)
    state = result["trainer"].model.state_dict()
    digest = hashlib.sha256(b"".join(state[k].detach().cpu().numpy().tobytes() for k in sorted(state)))
    times = [h["epoch_time_s"] for h in result["history"]]
    return {"deterministic": deterministic, "weights_sha256": digest.hexdigest(),
            "later_epochs_s": sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0],
            "device": device_name(result["trainer"].device), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", required=True, help="a data.source (the JPEG mirror, a variant, ...)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="vgg16_bn", help="default vgg16_bn: cuDNN's convolutions and BN")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=0)
    parser.add_argument("--runs", type=int, default=2, help="trainings per mode (default 2)")
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_training(args.data, args.model, args.epochs, args.train_subset, args.one == "on")))
        return
    rows = []
    for mode in ("on", "off"):
        for _ in range(args.runs):
            out = subprocess.run([sys.executable, "-m", "benchmarks.determinism", "--data", args.data, "--out",
                                  str(args.out), "--model", args.model, "--epochs", str(args.epochs),
                                  "--train-subset", str(args.train_subset), "--one", mode],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1])
    summary = {}
    for mode in ("on", "off"):
        mine = [r for r in rows if r["deterministic"] == (mode == "on")]
        summary[mode] = {"identical": len({r["weights_sha256"] for r in mine}) == 1,
                         "later_epochs_s": [r["later_epochs_s"] for r in mine]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "determinism.json").write_text(json.dumps({"runs": rows, "summary": summary, "model": args.model,
                                                           "epochs": args.epochs, "data": args.data}, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
