"""Where a training step's time goes: FLOPs per step, the step's time as one CUDA graph, and
the kernels of the same step run eagerly, grouped by kind, next to the device's bf16 floor.

  python -m benchmarks.profile_step --data data/cifar10 --models vgg16_bn --out benchmarks/results/x
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks.bench import environment, load_data, recipe_for, time_steps
from study.training.batches import to_device_images
from study.training.engine import Trainer

# dense bf16 tensor-core peak (no sparsity), TFLOP/s, from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0}
KINDS = (  # first match wins; names of cuDNN/cuBLAS/Triton/ATen kernels
    ("convolution / matmul", ("conv", "gemm", "xmma", "cutlass", "sm90", "sm80", "wgrad", "dgrad", "implicit")),
    ("batch norm", ("batch_norm", "batchnorm", "bn_", "welford")),
    ("optimizer (fused SGD)", ("sgd", "multi_tensor", "foreach")),
    ("augmentation / indexing", ("index", "gather", "scatter", "randperm", "pad", "flip", "distribution")),
    ("pooling", ("pool",)),
    ("loss / softmax", ("softmax", "nll", "cross_entropy", "log_softmax")),
    ("ReLU / elementwise / casts", ("elementwise", "relu", "threshold", "copy", "cast", "fill", "mul", "add",
                                    "triton", "vectorized", "reduce")),
)


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def step_flops(trainer: Trainer, x_u8: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward + backward (convs and matmuls, as torch's counter counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer._eager_step(x_u8, y)
    return counter.get_total_flops()


def kernel_breakdown(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, steps: int) -> dict:
    """Self CUDA time per kernel kind over ``steps`` eager steps, ms per step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    batch = trainer.recipe.batch_size
    sub = torch.arange(steps * batch, device=images.device) % len(labels)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        trainer.train_one_epoch(images[sub], labels[sub])
    by_kind, top = defaultdict(float), []
    for evt in prof.key_averages():
        if evt.device_type != DeviceType.CUDA or "#" in evt.key:  # kernels, memcpys, memsets; not the
            continue  # ranges such as `aten::mm#...` records that span kernels counted on their own
        us = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)
        name = evt.key.lower()
        kind = next((k for k, words in KINDS if any(w in name for w in words)), "other")
        by_kind[kind] += us / 1000 / steps
        top.append((us / 1000 / steps, evt.count // steps, evt.key[:110], kind))
    top.sort(reverse=True)
    return {"ms_per_step_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "kernel_ms_per_step": sum(by_kind.values()),
            "top_kernels": [{"ms_per_step": t, "calls_per_step": c, "name": n, "kind": k} for t, c, n, k in top[:25]],
            "table": prof.key_averages().table(sort_by="self_device_time_total", row_limit=30)}


def profile_model(arrays: dict, device: str, model: str, steps: int = 20, timed: int = 60) -> dict:
    images = to_device_images(arrays["train_images"][:20000], device)
    labels = torch.as_tensor(arrays["train_labels"][:20000], device=device)
    eager = Trainer(model, recipe_for("bf16+cl", epochs=1, device=device))
    flops = step_flops(eager, images[:128], labels[:128])
    eager_step_s = time_steps(eager, images, labels, warmup=max(2, timed // 6), steps=max(2, timed * 2 // 3))
    breakdown = kernel_breakdown(eager, images, labels, steps)
    del eager
    graph = Trainer(model, recipe_for("bf16+cl+graph", epochs=1, device=device))
    graph_step_s = time_steps(graph, images, labels, warmup=max(2, timed // 3), steps=timed)
    peak = peak_tflops(torch.cuda.get_device_name()) if device.startswith("cuda") else None
    achieved = flops / graph_step_s / 1e12
    return {"model": model, "flops_per_step": flops, "eager_step_ms": 1000 * eager_step_s,
            "graph_step_ms": 1000 * graph_step_s, "achieved_tflops": achieved, "peak_bf16_tflops": peak,
            "share_of_peak": achieved / peak if peak else None,
            "floor_step_ms": 1000 * flops / (peak * 1e12) if peak else None, **breakdown}


def markdown(env: dict, rows: list[dict]) -> str:
    lines = [f"# One training step (batch 128, bf16, channels_last) on {env['device_name']}", "",
             f"torch {env['torch_version']}. FLOPs by torch.utils.flop_counter (forward + backward); "
             "graph = the whole step replayed as one CUDA graph (the pipeline's default); kernels = the same "
             "step run eagerly under torch.profiler, self CUDA time per kind.", ""]
    for r in rows:
        peak = (f"{r['achieved_tflops']:.1f} TFLOP/s = {100 * r['share_of_peak']:.1f}% of the "
                f"{r['peak_bf16_tflops']:.0f} TFLOP/s dense bf16 peak (floor {r['floor_step_ms']:.3f} ms/step)"
                if r["share_of_peak"]
                else f"{r['achieved_tflops']:.2f} TFLOP/s")
        lines += [f"## {r['model']}: {r['flops_per_step'] / 1e9:.1f} GFLOP/step, graph {r['graph_step_ms']:.2f} "
                  f"ms/step, eager {r['eager_step_ms']:.2f} ms/step; {peak}", "",
                  "| kind | kernel ms/step | share |", "|---|---:|---:|"]
        total = r["kernel_ms_per_step"] or float("nan")  # no CUDA kernels on a CPU rehearsal
        lines += [f"| {k} | {v:.3f} | {100 * v / total:.0f}% |" for k, v in r["ms_per_step_by_kind"].items()]
        lines += ["", "| top kernels | ms/step | calls/step | kind |", "|---|---:|---:|---|"]
        lines += [f"| `{t['name'][:80]}` | {t['ms_per_step']:.3f} | {t['calls_per_step']} | {t['kind']} |"
                  for t in r["top_kernels"][:12]]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/cifar10")
    parser.add_argument("--models", nargs="+", default=["vgg16_bn"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results/latest")
    parser.add_argument("--steps", type=int, default=20, help="profiled eager steps")
    parser.add_argument("--timed", type=int, default=60, help="timed graph steps")
    args = parser.parse_args()
    from study.training.device import pick_device

    device = pick_device(args.device)
    arrays, sha = load_data(args.data)
    env = environment(device, sha, args.data)
    rows = []
    for model in args.models:
        start = time.perf_counter()
        rows.append(profile_model(arrays, device, model, args.steps, args.timed))
        print(f"{model} profiled in {time.perf_counter() - start:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        (out / f"profile_{r['model']}.txt").write_text(r.pop("table"))
    (out / "profile.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    (out / "profile.md").write_text(markdown(env, rows))
    print(markdown(env, rows))


if __name__ == "__main__":
    main()
