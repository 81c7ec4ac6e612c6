"""Speed and accuracy benchmarks; needs only this project, torch, torchvision, numpy,
pandas, pyyaml and matplotlib (no MLflow, no DVC), so it runs on a bare GPU machine.

  python -m benchmarks.bench calibrate --data ../shared/data/cifar10-jpeg.tar.gz --out benchmarks/results/x
  python -m benchmarks.bench study     --data ... --out ...   # 4 models x 5 and 40 epochs
  python -m benchmarks.bench compare   --data ... --out ...   # CPU: this loop vs DataLoader baseline
  python -m benchmarks.bench state-cost --data ... --out ...  # saving the resumable state each epoch
  python -m benchmarks.bench precision --data ... --out ...   # fp32 against bf16 autocast, same seed
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from study.analysis import paper
from study.data import arrays_sha256, load_arrays, load_prepared
from study.figures import md_table, plot_curves
from study.provenance import device_name
from study.training.batches import balanced_subset, to_device_images
from study.training.engine import Recipe, Trainer, train

SETTINGS = {  # name -> (precision, channels_last, torch.compile, CUDA graph of the step)
    "fp32": ("fp32", False, False, False),
    "fp32+cl": ("fp32", True, False, False),
    "bf16": ("bf16", False, False, False),
    "bf16+cl": ("bf16", True, False, False),
    "bf16+cl+compile": ("bf16", True, True, False),
    "fp32+cl+graph": ("fp32", True, False, True),
    "bf16+graph": ("bf16", False, False, True),
    "bf16+cl+graph": ("bf16", True, False, True),
    "bf16+cl+compile+graph": ("bf16", True, True, True),  # torch.compile'd model inside the captured step
}


def recipe_for(setting: str, **kwargs) -> Recipe:
    precision, channels_last, compile_, graphs = SETTINGS[setting]
    return Recipe(precision=precision, channels_last=channels_last, compile=compile_, cuda_graphs=graphs, **kwargs)


def load_data(source: str) -> tuple[dict, str]:
    """Arrays and their sha256, from a folder stages.prepare wrote or any prepare source."""
    if (Path(source) / "meta.json").exists():
        arrays, meta = load_prepared(Path(source))
        return arrays, meta["sha256"]
    arrays = load_arrays(source)
    return arrays, arrays_sha256(arrays)


def environment(device: str, data_sha256: str, source: str) -> dict:
    return {"device": device, "device_name": device_name(device), "torch_version": torch.__version__,
            "data_source": source, "data_sha256": data_sha256, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_outputs(out: Path, name: str, payload: dict, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)


def time_steps(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, warmup: int, steps: int) -> float:
    """Seconds per training step after ``warmup`` steps, device synchronised."""
    batch = trainer.recipe.batch_size

    def run(n: int) -> None:
        sub = torch.arange(n * batch, device=images.device) % len(labels)
        trainer.train_one_epoch(images[sub], labels[sub])  # ends with a host sync

    run(warmup)
    trainer.synchronize()
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


def calibrate(arrays: dict, device: str, models, settings, warmup: int, steps: int) -> list[dict]:
    images = to_device_images(arrays["train_images"], device)
    labels = torch.as_tensor(arrays["train_labels"], device=device)
    steps_per_epoch = -(-len(labels) // Recipe().batch_size)  # the study's batch, 128
    rows = []
    for model in models:
        for name in settings:
            recipe = recipe_for(name, epochs=1, device=device)
            start = time.perf_counter()
            trainer = Trainer(model, recipe)
            step_s = time_steps(trainer, images, labels, warmup, steps)
            rows.append({"model": model, "setting": name, "step_ms": 1000 * step_s,
                         "epoch_s": step_s * steps_per_epoch, "setup_and_warmup_s": time.perf_counter() - start
                         - step_s * steps})
            print(f"{model:9s} {name:16s} {1000 * step_s:7.2f} ms/step  {step_s * steps_per_epoch:6.2f} s/epoch",
                  flush=True)
            del trainer
    return rows


def calibrate_markdown(env: dict, rows: list[dict], settings) -> str:
    table = pd.DataFrame([{"model": model, **{s: next((f"{r['epoch_s']:.2f}" for r in rows
                                                       if r["model"] == model and r["setting"] == s), "-")
                                              for s in settings}}
                          for model in dict.fromkeys(r["model"] for r in rows)])
    return "\n".join([f"# Seconds per epoch (50,000 images, batch 128) on {env['device_name']}", "",
                      f"torch {env['torch_version']}; timed steps after warm-up, device synchronised; "
                      "epoch = step time x 391.", "", md_table(table)]) + "\n"


def study(arrays: dict, device: str, models, epoch_counts, setting: str, out: Path, env: dict, seed: int = 0) -> dict:
    results = {"environment": env, "setting": setting, "seed": seed, "runs": []}
    wall_start = time.perf_counter()
    for epochs in epoch_counts:
        for model in models:
            recipe = recipe_for(setting, epochs=epochs, device=device, seed=seed)
            start = time.perf_counter()
            out_run = train(model, arrays, recipe, progress=False, log=lambda s: print(s, flush=True))
            m = out_run["metrics"]
            results["runs"].append({"model": model, "epochs": epochs, "final_test_acc": m["final_test_acc"],
                                    "best_test_acc": m["best_test_acc"], "mean_epoch_time_s": m["mean_epoch_time_s"],
                                    "mean_epoch_time_s_after_first": m["mean_epoch_time_s_after_first"],
                                    "wall_s": time.perf_counter() - start, "history": out_run["history"]})
            results["total_wall_s"] = time.perf_counter() - wall_start
            write_outputs(out, "study", results, study_markdown(results))  # partial results survive a timeout
            del out_run
    plot_study(results, out / "learning_curves.png")
    print(study_markdown(results))
    return results


def _versus_paper(results: dict, title: str, key: str, published: dict) -> list[str]:
    """One markdown table: ours beside the paper's value for every epoch count run."""
    runs = {(r["model"], r["epochs"]): r for r in results["runs"]}
    counts = sorted({r["epochs"] for r in results["runs"]})
    rows = []
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        row = {"model": model}
        for e in counts:
            value = published[model][paper.EPOCHS.index(e)] if e in paper.EPOCHS else None
            run = runs.get((model, e))
            row[f"ours {e} ep"] = f"{run[key]:.2f}" if run else "-"
            row[f"paper {e} ep"] = f"{value:.2f}" if value is not None else "-"
        rows.append(row)
    return ["", f"## {title}", "", md_table(pd.DataFrame(rows))]


def study_markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"# The study on {env['device_name']} (CIFAR-10 JPEG mirror)", "",
             f"torch {env['torch_version']}, setting {results['setting']}, data sha256 {env['data_sha256'][:12]}, "
             f"total wall time {results.get('total_wall_s', 0):.0f} s for {len(results['runs'])} trainings."]
    lines += _versus_paper(results, "Table 5: test accuracy (%)", "final_test_acc", paper.ACCURACY)
    lines += _versus_paper(results, "Table 6: mean seconds per training epoch", "mean_epoch_time_s", paper.SECONDS)
    return "\n".join(lines) + "\n"


def check_graphs(arrays: dict, device: str, out: Path, env: dict, settings=("bf16+cl+graph",),
                 images: int = 10000) -> dict:
    """The graph-replayed step (and whatever else ``settings`` add, torch.compile inside it)
    must train like the eager one: same seed, 2 epochs of VGG-16-BN on 10,000 images
    (dropout and BN included), trajectories side by side."""
    idx = balanced_subset(arrays["train_labels"], images, 0)
    tidx = balanced_subset(arrays["test_labels"], images // 5, 0)
    sub = {"train_images": arrays["train_images"][idx], "train_labels": arrays["train_labels"][idx],
           "test_images": arrays["test_images"][tidx], "test_labels": arrays["test_labels"][tidx]}
    runs = {}
    for setting in ("bf16+cl", *settings):
        result = train("vgg16_bn", sub, recipe_for(setting, epochs=2, device=device), progress=False)
        runs[setting] = result["history"]
    eager, lines, ok = runs["bf16+cl"][-1], [], True
    for setting in settings:
        other = runs[setting][-1]
        agree = abs(eager["train_loss"] - other["train_loss"]) < 0.1 and abs(eager["test_acc"] - other["test_acc"]) < 5
        ok &= agree
        lines.append(f"{setting} vs eager: train loss {other['train_loss']:.4f} vs {eager['train_loss']:.4f}, test acc "
                     f"{other['test_acc']:.2f} vs {eager['test_acc']:.2f} -> {'AGREE' if agree else 'DIFFER'}")
    payload = {"environment": env, "runs": runs, "agree": ok}
    write_outputs(out, "check_graphs", payload, "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    if not ok:
        raise SystemExit(3)
    return payload


def plot_study(results: dict, path: Path) -> None:
    """Learning curves of the study's runs (the short runs dotted), drawn as the report draws its own."""
    counts = sorted({r["epochs"] for r in results["runs"]})
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r["model"] for r in results["runs"]))}
    env = results["environment"]
    plot_curves([{"epochs": [h["epoch"] for h in run["history"]],
                  "test_acc": [h["test_acc"] for h in run["history"]],
                  "train_loss": [h["train_loss"] for h in run["history"]],
                  "style": "-" if run["epochs"] == counts[-1] else ":", "color": colours[run["model"]],
                  "label": f"{run['model']} ({run['epochs']} ep)"} for run in results["runs"]],
                path, f"{env['device_name']}, torch {env['torch_version']}, {results['setting']}, "
                "CIFAR-10 JPEG mirror")


def compare(arrays: dict, model: str, subset: int, workers: int, epochs: int, device: str = "cpu") -> dict:
    """The project's loop (params.yaml's default runtime) against the DataLoader baseline,
    same model, subset, machine: one warm-up epoch each, then ``epochs`` epochs of each,
    interleaved so that drift of the machine hits both alike."""
    from benchmarks.baseline import BaselineLoop

    idx = balanced_subset(arrays["train_labels"], subset, 0)
    images, labels = arrays["train_images"][idx], arrays["train_labels"][idx]
    base = BaselineLoop(model, images, labels, device=device, workers=workers)
    trainer = Trainer(model, Recipe(epochs=epochs + 1, device=device))
    x, y = to_device_images(images, device), torch.as_tensor(labels, device=device)

    def ours_epoch() -> float:
        trainer.synchronize()
        start = time.perf_counter()
        trainer.train_one_epoch(x, y)  # ends with a host sync
        return time.perf_counter() - start

    base.epoch(), ours_epoch()  # warm-up: workers, allocator, cuDNN autotuning, graph capture
    base_s, ours_s = [], []
    for _ in range(epochs):
        base_s.append(base.epoch())
        ours_s.append(ours_epoch())
    ratios = [b / o for b, o in zip(base_s, ours_s, strict=True)]
    return {"model": model, "images": subset, "workers": workers, "threads": torch.get_num_threads(),
            "precision": trainer.precision, "baseline_epoch_s": base_s, "ours_epoch_s": ours_s,
            "speedup": statistics.median(base_s) / statistics.median(ours_s),
            "speedup_range": [min(ratios), max(ratios)]}


def precision_compare(arrays: dict, model: str, subset: int, test_subset: int, epochs: int, device: str) -> dict:
    """The same training in fp32 and under bf16 autocast: same subset, seed, order of batches."""
    idx = balanced_subset(arrays["train_labels"], subset, 0)
    tidx = balanced_subset(arrays["test_labels"], test_subset, 0)
    sub = {"train_images": arrays["train_images"][idx], "train_labels": arrays["train_labels"][idx],
           "test_images": arrays["test_images"][tidx], "test_labels": arrays["test_labels"][tidx]}
    runs = {}
    for precision in ("fp32", "bf16"):
        result = train(model, sub, Recipe(epochs=epochs, device=device, precision=precision), progress=False,
                       log=lambda line: print(line, flush=True))
        m = result["metrics"]
        runs[precision] = {"ran": m["precision"], "final_test_acc": m["final_test_acc"],
                           "mean_epoch_time_s": m["mean_epoch_time_s"], "history": result["history"]}
    return {"model": model, "images": subset, "test_images": test_subset, "epochs": epochs, "runs": runs}


def precision_markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"# fp32 against bf16 autocast on {env['device_name']}", "",
             f"torch {env['torch_version']}, seed 0, the study's recipe; the same class-balanced subsets for both. "
             "SE = the binomial standard error of one accuracy on this many test images (seed-to-seed spread "
             "adds to it).", "",
             "| model | images | epochs | fp32 acc | bf16 acc | diff | SE | fp32 s/epoch | bf16 s/epoch | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f, b = r["runs"]["fp32"], r["runs"]["bf16"]
        p = f["final_test_acc"] / 100
        se = 100 * (p * (1 - p) / r["test_images"]) ** 0.5
        lines.append(f"| {r['model']} | {r['images']} | {r['epochs']} | {f['final_test_acc']:.2f} | "
                     f"{b['final_test_acc']:.2f} ({b['ran']}) | {b['final_test_acc'] - f['final_test_acc']:+.2f} | "
                     f"{se:.2f} | {f['mean_epoch_time_s']:.2f} | {b['mean_epoch_time_s']:.2f} | "
                     f"{f['mean_epoch_time_s'] / b['mean_epoch_time_s']:.2f}x |")
    return "\n".join(lines) + "\n"


def state_cost(arrays: dict, device: str, model: str, subset: int, epochs: int, setting: str, state_dir: Path) -> dict:
    """What saving the resumable training state after every epoch costs (study.training.resume): the
    main thread's copy to host memory, the background write, and epoch times with and without
    saving, in alternating epochs of one training so that drift hits both alike."""
    from study.training.resume import StateWriter

    idx = balanced_subset(arrays["train_labels"], subset, 0)
    recipe = recipe_for(setting, epochs=2 * epochs + 1, device=device)
    trainer = Trainer(model, recipe)
    x, y = to_device_images(arrays["train_images"][idx], device), torch.as_tensor(arrays["train_labels"][idx],
                                                                                  device=device)
    writer = StateWriter(state_dir / f"{model}.pt")
    trainer.train_one_epoch(x, y)  # warm-up: autotuning, graph capture
    plain, saving, copy_s, write_s = [], [], [], []
    for epoch in range(2 * epochs):
        trainer.synchronize()
        start = time.perf_counter()
        trainer.train_one_epoch(x, y)
        if epoch % 2:
            writer.wait()  # as the train stage does: the previous write is done with the reused buffers
            t0 = time.perf_counter()
            state = trainer.state_dict()
            writer.save({"trainer": state, "history": []})
            copy_s.append(time.perf_counter() - t0)
        (saving if epoch % 2 else plain).append(time.perf_counter() - start)
        if epoch % 2 == 0 and epoch:
            t0 = time.perf_counter()
            writer.wait()  # normally overlapped by the next epoch; timed here once it has run
            write_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    writer.wait()
    size = writer.path.stat().st_size
    writer.remove()
    return {"model": model, "images": subset, "setting": setting, "plain_epoch_s": plain, "saving_epoch_s": saving,
            "copy_s": copy_s, "wait_after_next_epoch_s": write_s, "state_mb": size / 1e6,
            "overhead_pct": 100 * (statistics.median(saving) / statistics.median(plain) - 1),
            "copy_pct": 100 * statistics.median(copy_s) / statistics.median(plain)}


def state_cost_markdown(env: dict, rows: list[dict]) -> str:
    """The first save pins its host buffers (once per training); the later ones reuse them."""
    def steady(values: list[float]) -> float:
        return statistics.median(values[1:] or values)

    lines = [f"# Saving the training state after every epoch, on {env['device_name']}", "",
             f"torch {env['torch_version']}; alternating epochs of one training with and without saving. `copy` is "
             "what the epoch waits for (weights, momentum and RNG states copied to host memory); the first save "
             "also allocates the pinned buffers the later ones reuse; the write to disk runs in a background "
             "thread during the next epoch. Steady = median over the saves after the first.", "",
             "| model | images | setting | state MB | epoch s (no save) | epoch s (save, steady) | overhead "
             "| copy, first | copy, steady | steady share |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        plain = statistics.median(r["plain_epoch_s"])
        lines.append(f"| {r['model']} | {r['images']} | {r['setting']} | {r['state_mb']:.0f} | {plain:.3f} | "
                     f"{steady(r['saving_epoch_s']):.3f} | {100 * (steady(r['saving_epoch_s']) / plain - 1):+.1f}% | "
                     f"{r['copy_s'][0] * 1000:.1f} ms | {steady(r['copy_s']) * 1000:.1f} ms | "
                     f"{100 * steady(r['copy_s']) / plain:.2f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["calibrate", "study", "compare", "check-graphs", "state-cost", "precision"])
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--out", default="benchmarks/results/latest")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=list(paper.PAPER_MODELS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--warmup", type=int, default=20, help="calibrate: warm-up steps")
    parser.add_argument("--steps", type=int, default=60, help="calibrate: timed steps")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 40], help="study: epoch counts")
    parser.add_argument("--setting", default="bf16+cl", choices=list(SETTINGS), help="study: speed setting")
    parser.add_argument("--seed", type=int, default=0, help="study: the recipe's seed")
    parser.add_argument("--fastest-from", help="study: pick the fastest setting in this calibrate.json")
    parser.add_argument("--subset", type=int, default=2000, help="compare, state-cost, check-graphs: training images")
    parser.add_argument("--workers", type=int, default=2, help="compare: DataLoader workers of the baseline")
    parser.add_argument("--compare-epochs", type=int, default=2)
    parser.add_argument("--test-subset", type=int, default=2000, help="precision: test images")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = torch's default)")
    parser.add_argument("--check-with", nargs="+", default=["bf16+cl+graph"], choices=list(SETTINGS),
                        help="check-graphs: settings checked against eager bf16+cl")
    args = parser.parse_args()
    from study.training.device import pick_device

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    start = time.perf_counter()
    arrays, sha = load_data(args.data)
    print(f"data ready in {time.perf_counter() - start:.1f} s (sha256 {sha[:12]})", flush=True)
    env = environment(device, sha, args.data)
    if args.mode == "calibrate":
        rows = calibrate(arrays, device, args.models, args.settings, args.warmup, args.steps)
        md = calibrate_markdown(env, rows, args.settings)
        write_outputs(out, "calibrate", {"environment": env, "rows": rows}, md)
        print(md)
    elif args.mode == "study":
        setting = args.setting
        if args.fastest_from:  # the setting with the least summed epoch time in a calibration
            rows = json.loads(Path(args.fastest_from).read_text())["rows"]
            totals = {s: sum(r["epoch_s"] for r in rows if r["setting"] == s) for s in {r["setting"] for r in rows}}
            setting = min(totals, key=totals.get)
            print(f"fastest calibrated setting: {setting} ({totals[setting]:.2f} s per epoch of all models)")
        study(arrays, device, args.models, args.epochs, setting, out, env, args.seed)
    elif args.mode == "check-graphs":
        check_graphs(arrays, device, out, env, args.check_with, args.subset)
    elif args.mode == "precision":
        rows = [precision_compare(arrays, m, args.subset, args.test_subset, args.compare_epochs, device)
                for m in args.models]
        md = precision_markdown(env, rows)
        write_outputs(out, "precision", {"environment": env, "rows": rows}, md)
        print(md)
    elif args.mode == "state-cost":
        rows = [state_cost(arrays, device, m, args.subset, args.compare_epochs, args.setting, out / "state")
                for m in args.models]
        md = state_cost_markdown(env, rows)
        write_outputs(out, "state_cost", {"environment": env, "rows": rows}, md)
        print(md)
    else:
        rows = [compare(arrays, m, args.subset, args.workers, args.compare_epochs, device) for m in args.models]
        lines = [f"# This project's loop vs a DataLoader baseline on {env['device_name']}", "",
                 f"torch {env['torch_version']}, {args.subset} training images, {torch.get_num_threads()} threads; "
                 f"after one warm-up epoch each, {args.compare_epochs} epochs each, interleaved; medians, and the "
                 f"range of the per-pair ratios. Baseline = PIL transforms + DataLoader({args.workers} workers), "
                 "fp32; ours = params.yaml's default runtime (its precision in the table).", "",
                 "| model | ours precision | baseline s/epoch | ours s/epoch | speed-up (median) | range |",
                 "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['precision']} | {statistics.median(r['baseline_epoch_s']):.2f} | "
                  f"{statistics.median(r['ours_epoch_s']):.2f} | {r['speedup']:.2f}x | "
                  f"{r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}x |" for r in rows]
        md = "\n".join(lines) + "\n"
        write_outputs(out, "compare", {"environment": env, "rows": rows}, md)
        print(md)


if __name__ == "__main__":
    main()
