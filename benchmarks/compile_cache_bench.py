"""Cold against warm first compile (issue 24): one process trains a model for a few epochs with
``runtime.compile`` on random CIFAR-sized data, loading Inductor's cache artifacts from
``--cache`` before its first compile and saving them after, and prints one JSON line: its seconds
to import and start, its first epoch (compile, cuDNN autotuning, graph capture) and its later
epochs. Run it twice, each time with an empty ``TORCHINDUCTOR_CACHE_DIR``: the first process is
cold, the second warm only through the artifact file, as a fresh machine's second training is.

    CACHE=$(mktemp -d)   # empty, so that the first process is cold
    for run in cold warm; do TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) \
      python -m benchmarks.compile_cache_bench --model vgg16_bn --cache "$CACHE" --label $run; done

Random data: compile time and s/epoch do not depend on the pixels, and no dataset is needed.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402

import torch  # noqa: E402

from study.training.device import load_compile_cache, pick_device, save_compile_cache  # noqa: E402
from study.training.engine import Recipe, Trainer  # noqa: E402


def measure(model: str, cache: str, images: int, epochs: int) -> dict:
    device = pick_device("auto")
    cache_line = load_compile_cache(cache, device)
    recipe = Recipe(epochs=epochs, device=device, compile=True)
    trainer = Trainer(model, recipe)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    y = torch.randint(0, 10, (images,), generator=generator).to(device)
    started = time.perf_counter() - START
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        trainer.train_one_epoch(x, y)  # ends with a host sync (.item())
        times.append(time.perf_counter() - t0)
    return {"model": model, "device": trainer.runtime["device"], "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "images": images, "start_s": round(started, 2), "first_epoch_s": round(times[0], 2),
            "later_epoch_s": round(sum(times[1:]) / max(len(times) - 1, 1), 3),
            "cache_before": cache_line, "cache_after": save_compile_cache(cache, device)}


def main() -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg16_bn")
    parser.add_argument("--cache", required=True, help="folder of the saved cache artifacts")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--label", default="", help="written into the JSON line (cold, warm)")
    args = parser.parse_args()
    print(json.dumps({"label": args.label, **measure(args.model, args.cache, args.images, args.epochs)}), flush=True)


if __name__ == "__main__":
    main()
