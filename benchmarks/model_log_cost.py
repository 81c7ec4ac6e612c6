"""What logging the trained model to MLflow (setting `mlflow.log_model`) adds to a run: the
seconds `study.tracking.model_log.log_model` takes and the megabytes it writes, per model, into a
fresh local store (SQLite and a folder of artifacts, as the pipeline's default), including
the check that the logged model loads back and gives the checkpoint's logits. Each model
is measured in a fresh process whose first call pays MLflow's imports, as the evaluate stage
(one process per model) does; later calls show the steady cost.

  python -m benchmarks.model_log_cost --out benchmarks/results/model-log-cpu [--repeats 3]

The weights are the builder's initial ones: the cost depends on the tensors' sizes, not values.
Needs MLflow (unlike bench.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.architectures import MODEL_NAMES
from models.network import build_model
from study.analysis.paper import PAPER_MODELS
from study.figures import md_table
from study.provenance import device_name


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def measure(model: str, workdir: Path, repeats: int) -> dict:
    """Seconds (median and range over ``repeats`` runs) and MB of one model's logging."""
    import mlflow

    from study.tracking.model_log import log_model

    checkpoint = workdir / f"{model}.pt"
    torch.save({"model_name": model, "state_dict": build_model(model).state_dict()}, checkpoint)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("cost") or client.get_experiment(client.create_experiment(
        "cost", artifact_location=(workdir / "mlartifacts").as_uri()))
    record = {"recipe": {"model": model}}
    seconds, sizes = [], []
    for _ in range(repeats):
        run_id = client.create_run(experiment.experiment_id).info.run_id
        client.set_terminated(run_id, "FINISHED")
        before = folder_mb(workdir / "mlartifacts")  # MLflow 3 keeps logged models beside the runs
        start = time.perf_counter()
        log_model(client, run_id, record, checkpoint)
        seconds.append(time.perf_counter() - start)
        sizes.append(folder_mb(workdir / "mlartifacts") - before)
    warm = seconds[1:]
    loads = {}  # how pyfunc loads it back here: on its default device (CUDA where there is one), and on the CPU
    for where, config in (("default", None), ("cpu", {"device": "cpu"})):
        try:
            with tempfile.TemporaryDirectory(prefix="model-check-") as copy:  # else MLflow leaves it in TMPDIR
                served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=copy, model_config=config)
                served.predict(np.zeros((2, 3, 32, 32), np.uint8))
            loads[where] = "ok"
        except Exception as err:
            loads[where] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return {"model": model, "parameters": sum(p.numel() for p in build_model(model).parameters()),
            "checkpoint_mb": checkpoint.stat().st_size / 1e6, "first_s": seconds[0],
            "warm_s": statistics.median(warm) if warm else None, "warm_s_min": min(warm, default=None),
            "warm_s_max": max(warm, default=None),
            "written_mb": statistics.median(sizes), "pyfunc_load_default_device": loads["default"],
            "pyfunc_load_cpu": loads["cpu"]}


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(PAPER_MODELS), choices=MODEL_NAMES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    import mlflow

    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(args.models[0], Path(tmp), args.repeats)))
        return
    env = {"device_name": device_name("cpu"), "cuda": device_name("cuda") if torch.cuda.is_available() else None,
           "torch_version": torch.__version__, "mlflow_version": mlflow.__version__, "repeats": args.repeats,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    rows = []
    for model in args.models:  # a fresh process each: the first call pays MLflow's imports, as evaluate does
        child = subprocess.run([sys.executable, "-m", "benchmarks.model_log_cost", "--one", "--models", model,
                                "--repeats", str(args.repeats), "--out", str(args.out)],
                               capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        later = f"then {r['warm_s']:.2f} s ({r['warm_s_min']:.2f}-{r['warm_s_max']:.2f})" if r["warm_s"] else ""
        print(f"{model}: first call {r['first_s']:.2f} s {later}; {r['written_mb']:.0f} MB written", flush=True)
        write(args.out, env, rows)  # each model as it ends: a timeout keeps what finished
    print((args.out / "model_log_cost.md").read_text())


def write(out: Path, env: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_log_cost.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    table = md_table(pd.DataFrame(
        [[r["model"], f"{r['parameters']:,}", f"{r['checkpoint_mb']:.0f}", f"{r['first_s']:.2f}",
          f"{r['warm_s']:.2f} ({r['warm_s_min']:.2f}-{r['warm_s_max']:.2f})" if r["warm_s"] else "-",
          f"{r['written_mb']:.0f}"] for r in rows],
        columns=["model", "parameters", "checkpoint MB", "first call in a process, s",
                 "later calls, s (median, range)", "MB written"]))
    loads = "\n".join(f"- {r['model']}: pyfunc.load_model on its default device: {r['pyfunc_load_default_device']}; "
                      f"with model_config={{'device': 'cpu'}}: {r['pyfunc_load_cpu']}" for r in rows)
    (out / "model_log_cost.md").write_text(f"# Cost of `mlflow.log_model` per run\n\n{json.dumps(env)}\n\n"
                                           f"{table}\n\n{loads}\n")


if __name__ == "__main__":
    main()
