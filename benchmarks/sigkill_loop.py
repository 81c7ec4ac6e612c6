"""A training killed with SIGKILL at random moments, again and again, then let finish: every
metric step is in MLflow exactly once, the final weights equal an uninterrupted training's,
and no temporary file is left (issue 35's loop).

Each kill falls uniformly over the expected life of its start (imports, store, the epochs it
has left, state and output writes, MLflow's finish), drawn from ``--seed``. A training that
finishes ends a round, checked against the uninterrupted one; rounds go on in fresh folders,
each with its own SQLite store, until ``--kills`` kills have landed.

    python -m benchmarks.sigkill_loop --data data/cifar10 --kills 20 --epochs 8 \\
        --out benchmarks/results/sigkill-<machine>-<date>
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from study.metrics import EPOCH_METRICS

ROOT = Path(__file__).resolve().parents[1]


def make_project(root: Path, data: Path, epochs: int, subset: int) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(epochs=epochs, models=["alexnet"])
    params["data"].update(source="tiny", train_subset=subset, test_subset=max(20, subset // 10))
    params["train"]["batch_size"] = 16
    params["runtime"]["device"] = "cpu"
    params["mlflow"].update(experiment="sigkill", system_metrics=False, log_model=False)
    (root / "data").mkdir(parents=True)
    os.symlink(data.resolve(), root / "data" / "cifar10")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def start(project: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.Popen([sys.executable, "-m", "stages.train", "--model", "alexnet"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:120] if lines else "(nothing printed yet)"


def leftovers(project: Path) -> list[str]:
    """Temporary files and folders of killed writes: the state's, the outputs', the store's."""
    found = []
    for folder in (project / ".train_state", project / "outputs" / "alexnet", project):
        if folder.is_dir():
            found += [p.relative_to(project).as_posix() for p in folder.iterdir()
                      if p.name.startswith(".") and (".tmp" in p.name or "-" in p.name.rsplit(".", 1)[-1]
                                                     or ".creating-" in p.name)]
    return sorted(found)


def metric_steps(project: Path) -> dict[str, list[int]]:
    """Per metric, the steps logged over every run of the experiment (killed runs included)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sigkill")
    steps: dict[str, list[int]] = {name: [] for name in EPOCH_METRICS}
    statuses = []
    for run in client.search_runs([experiment.experiment_id]):
        statuses.append(run.info.status)
        for name in EPOCH_METRICS:
            steps[name] += [m.step for m in client.get_metric_history(run.info.run_id, name)]
    return {name: sorted(s) for name, s in steps.items()}, sorted(statuses)


def epochs_saved(project: Path) -> int:
    import torch

    states = list((project / ".train_state").glob("*.pt"))
    if not states:
        return 0
    try:
        return torch.load(states[0], weights_only=True, mmap=True)["trainer"]["epochs_done"]
    except Exception:  # torn by the last kill: the start removes it
        return 0


def training_complete(project: Path) -> bool:
    """Whether the training ended whole: its outputs written and its run finished, after which the
    train stage removes its state (a kill in the process's last moments, its exit, lands here)."""
    return (project / "outputs/alexnet/record.json").exists() and not list((project / ".train_state").glob("*.pt"))


def logged_as_recorded(project: Path, history: list[dict]) -> bool:
    """Whether the finished run holds, per epoch metric, exactly the values of the record's history
    (what the report's tables and curves are drawn from), one per epoch in order."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sigkill")
    finished = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    if len(finished) != 1:
        return False
    run_id = finished[0].info.run_id
    return all(sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
               == [(h["epoch"], float(h[name])) for h in history] for name in EPOCH_METRICS)


def check_round(project: Path, reference: Path, epochs: int) -> dict:
    import torch

    steps, statuses = metric_steps(project)
    ours = torch.load(project / "outputs/alexnet/checkpoint.pt", weights_only=True)
    theirs = torch.load(reference / "outputs/alexnet/checkpoint.pt", weights_only=True)
    same = all(torch.equal(ours["state_dict"][k], theirs["state_dict"][k]) for k in theirs["state_dict"])
    history = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in ours["record"]["history"]]
    expected = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in theirs["record"]["history"]]
    return {"steps_once": all(s == list(range(1, epochs + 1)) for s in steps.values()), "steps": steps,
            "run_statuses": statuses, "weights_equal": same, "history_equal": history == expected,
            "logged_as_recorded": logged_as_recorded(project, ours["record"]["history"]),
            "leftovers": leftovers(project)}


def loop(workdir: Path, data: Path, kills: int, epochs: int, seed: int, subset: int = 300, log=print) -> dict:
    """The uninterrupted reference, then rounds of a training killed until it finishes, until
    ``kills`` SIGKILLs have landed; each round checked against the reference."""
    reference = make_project(workdir / "reference", data, epochs, subset)
    began = time.monotonic()
    proc = start(reference)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"the uninterrupted training failed: {err.strip()[-500:]}")
    lifetime = time.monotonic() - began
    epoch_s = json.loads((reference / "outputs/alexnet/record.json").read_text())["timings_s"]["epochs_s"] / epochs
    overhead = lifetime - epoch_s * epochs
    log(f"uninterrupted: {lifetime:.1f} s ({overhead:.1f} s outside the epochs, {epoch_s:.2f} s per epoch)")

    draw = random.Random(seed)
    landed, rounds = [], []
    while len(landed) < kills:
        project = make_project(workdir / f"round{len(rounds) + 1}", data, epochs, subset)
        starts = 0
        while True:
            done = epochs_saved(project)
            # a moment anywhere in this start's expected life: imports, store, the epochs left, the writes
            after = draw.uniform(0.0, overhead + epoch_s * (epochs - done))
            proc = start(project)
            starts += 1
            try:
                proc.wait(timeout=after if len(landed) < kills else None)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                out, _ = proc.communicate()
                whole = training_complete(project)
                landed.append({"round": len(rounds) + 1, "after_s": round(after, 2), "epochs_saved": done,
                               "last_printed": last_line(out), "after_the_training_ended_whole": whole})
                log(f"kill {len(landed)}/{kills} after {after:.2f} s ({done} epochs saved): {last_line(out)}")
                if whole:  # nothing left to resume: a start now would be a second training, not this one's rerun
                    break
                continue
            out, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"round {len(rounds) + 1}, start {starts} failed by itself: {err.strip()[-500:]}")
            break
        rounds.append({"starts": starts, **check_round(project, reference, epochs)})
        log(f"round {len(rounds)} finished after {starts} starts: every step once {rounds[-1]['steps_once']}, "
            f"weights equal {rounds[-1]['weights_equal']}, leftovers {rounds[-1]['leftovers'] or 'none'}")
    return {"kills": landed, "rounds": rounds, "uninterrupted_s": round(lifetime, 2), "epochs": epochs, "seed": seed,
            "steps_once": all(r["steps_once"] for r in rounds),
            "weights_equal": all(r["weights_equal"] for r in rounds),
            "history_equal": all(r["history_equal"] for r in rounds),
            "logged_as_recorded": all(r["logged_as_recorded"] for r in rounds),
            "leftovers": [x for r in rounds for x in r["leftovers"]]}


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}",
                                     description="Kill a tiny training with SIGKILL at random moments, then check "
                                     "its MLflow run, its weights and its folders.")
    parser.add_argument("--data", type=Path, required=True, help="a prepared data folder (data/cifar10)")
    parser.add_argument("--kills", type=int, default=20, help="how many SIGKILLs must land (default 20)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the training (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--subset", type=int, default=300, help="training images (default 300)")
    parser.add_argument("--out", type=Path, required=True, help="folder for sigkill_loop.json")
    parser.add_argument("--workdir", type=Path, help="where the two projects go (default: a temporary folder)")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = loop(args.workdir or Path(tmp), args.data, args.kills, args.epochs, args.seed, args.subset)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sigkill_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = (result["steps_once"] and result["weights_equal"] and result["logged_as_recorded"]
               and not result["leftovers"])
    print(f"{len(result['kills'])} kills in {len(result['rounds'])} rounds: every step once {result['steps_once']}, "
          f"weights equal {result['weights_equal']}, MLflow's values the record's {result['logged_as_recorded']}, "
          f"leftovers {result['leftovers'] or 'none'} -> "
          f"{args.out / 'sigkill_loop.json'}")
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
