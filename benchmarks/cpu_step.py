"""A training step on the CPU with and without the trainer's two CPU levers: the fused SGD kernel
(study.training.engine) and the freed memory kept for the next step (study.training.device.
reuse_freed_memory). Each setting runs in a fresh process (the allocator's setting is for the
whole process), on the prepared data, the project's own Trainer and recipe.

  python -m benchmarks.cpu_step --data data/cifar10 --out benchmarks/results/<machine>-<date>
  python -m benchmarks.cpu_step --data data/cifar10 --models alexnet --batch-size 16 --threads 1

Time it on a quiet machine only: nothing else running, no test suite, no helper.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {  # name: (fused SGD, freed memory reused)
    "before (per-tensor SGD, glibc's default)": (False, False),
    "fused SGD": (True, False),
    "fused SGD + freed memory reused (the trainer's)": (True, True),
}


def one_setting(data: str, model: str, batch_size: int, threads: int, fused: bool, reuse: bool,
                warmup: int, steps: int) -> dict:
    """Runs in its own process (``--child``): ms per step, and the kernel's share of it."""
    import torch

    from benchmarks.bench import load_data, recipe_for
    from study.training.batches import to_device_images
    from study.training.device import reuse_freed_memory
    from study.training.engine import Trainer
    from study.training.sgd import MomentumSGD

    torch.set_num_threads(threads)
    applied = reuse_freed_memory() if reuse else False
    arrays, _ = load_data(data)
    images, labels = to_device_images(arrays["train_images"], "cpu"), torch.as_tensor(arrays["train_labels"])
    trainer = Trainer(model, recipe_for("bf16+cl", epochs=1, device="cpu", batch_size=batch_size))
    if not fused:  # PyTorch's default on the CPU: the per-tensor loop
        recipe = trainer.recipe
        trainer.optimizer = MomentumSGD(trainer.model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                        weight_decay=recipe.weight_decay, fused=None)
    def run(n: int) -> None:  # as benchmarks.bench.time_steps: n steps of the recipe's batch
        sub = torch.arange(n * batch_size) % len(labels)
        trainer.train_one_epoch(images[sub], labels[sub])

    run(warmup)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run(steps)
    step_s = (time.perf_counter() - start) / steps
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"step_ms": round(step_s * 1000, 1),
            "user_ms_per_step": round((after.ru_utime - before.ru_utime) / steps * 1000, 1),
            "kernel_ms_per_step": round((after.ru_stime - before.ru_stime) / steps * 1000, 1),
            "page_faults_per_step": round((after.ru_minflt - before.ru_minflt) / steps),
            "memory_reuse_applied": applied, "precision": trainer.precision}


def measure(data: str, models, batch_size: int, threads: int, warmup: int, steps: int) -> list[dict]:
    rows = []
    for model in models:
        for name, (fused, reuse) in SETTINGS.items():
            args = [sys.executable, "-m", "benchmarks.cpu_step", "--child", json.dumps(
                [data, model, batch_size, threads, fused, reuse, warmup, steps])]
            proc = subprocess.run(args, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise SystemExit(f"error: {model} ({name}) failed:\n{proc.stderr[-2000:]}")
            rows.append({"model": model, "setting": name, **json.loads(proc.stdout.strip().splitlines()[-1])})
            print(f"{model:9s} {name:48s} {rows[-1]['step_ms']:8.1f} ms/step", flush=True)
    return rows


def markdown(env: dict, rows: list[dict], batch_size: int, threads: int) -> str:
    lines = [f"# A CPU training step, with and without the CPU levers ({env['device_name']}, torch "
             f"{env['torch_version']}, batch {batch_size}, {threads} thread(s))", "",
             f"`{env['command']}`: {env['steps']} timed steps after {env['warmup']}, each setting in its own process.", "",
             "| model | setting | ms/step | of which kernel (sys) ms | page faults/step |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['setting']} | {r['step_ms']} | {r['kernel_ms_per_step']} | "
              f"{r['page_faults_per_step']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/cifar10", help="a folder stages.prepare wrote, or any prepare source")
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg8", "vgg16_bn"])
    parser.add_argument("--batch-size", type=int, default=128, help="the recipe's, 128; the tests train with 16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: every core")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, help="folder for cpu_step.json and cpu_step.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_setting(*json.loads(args.child))))
        return
    import os

    from benchmarks.bench import environment, load_data, write_outputs

    threads = args.threads or os.cpu_count()
    rows = measure(args.data, args.models, args.batch_size, threads, args.warmup, args.steps)
    env = {**environment("cpu", load_data(args.data)[1], args.data), "steps": args.steps, "warmup": args.warmup,
           "command": " ".join(["python -m benchmarks.cpu_step", *sys.argv[1:]])}
    if args.out:
        write_outputs(args.out, "cpu_step", {"environment": env, "batch_size": args.batch_size,
                                             "threads": threads, "rows": rows}, markdown(env, rows, args.batch_size,
                                                                                         threads))
    print(markdown(env, rows, args.batch_size, threads))


if __name__ == "__main__":
    main()
