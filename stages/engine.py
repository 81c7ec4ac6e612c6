"""The training hot path: data on the device, augmentation as batched tensor ops.

Importable and callable without MLflow or DVC (the benchmarks run it on bare GPU
machines); tracking attaches through the ``on_epoch`` callback of ``train``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import build_model, count_parameters
from stages.common import Diverged, StageError, atomic_path, device_name
from stages.sgd import MomentumSGD

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Recipe:
    """What the loop needs: the recipe (section 5.1) plus the knobs that only change speed.
    The pipeline fills every field from the validated params.yaml (stages.config); these
    defaults serve the benchmarks, which run without it."""

    epochs: int = 40
    seed: int = 0
    batch_size: int = 128
    lr: float = 0.01  # cosine-annealed to 0 over the run, stepped once per epoch
    momentum: float = 0.9
    weight_decay: float = 5e-4
    padding: int = 4  # random crop 32 from the zero-padded 40x40 image
    eval_batch_size: int = 1000
    device: str = "auto"
    precision: str = "bf16"  # bf16 autocast where it is native: CUDA, CPUs with AVX512-BF16 or AMX
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = True  # replay the training step as one CUDA graph (CUDA only)
    init: str = "default"


def pick_device(name: str = "auto") -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise StageError(f"runtime.device is {name!r} but CUDA is not available here; "
                         "use -S runtime.device=auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise StageError(f"runtime.device is {name!r} but this machine has {torch.cuda.device_count()} CUDA "
                         "device(s), numbered from 0; pick one that exists")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise StageError("runtime.device is 'mps' but Apple MPS is not available here; use -S runtime.device=auto")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise StageError(f"runtime.device {name!r} is not one of auto, cpu, cuda, cuda:N, mps")
    return name


def native_bf16_cpu() -> str | None:
    """The feature that gives this CPU native bf16 matrix math (x86: AMX or AVX512-BF16), as
    torch reports it, or None: there bf16 autocast would be emulated and slower than fp32."""
    for feature, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return feature
    return None


def precision_choice(device: str, requested: str) -> tuple[str, str]:
    """(precision that runs on ``device``, one line saying why) for ``runtime.precision``."""
    if requested == "fp32":
        return "fp32", "fp32, as runtime.precision asks"
    if device.startswith("cuda"):
        return "bf16", "bf16 autocast on CUDA"
    if device == "cpu":
        feature = native_bf16_cpu()
        if feature:
            return "bf16", f"bf16 autocast on the CPU, which has native bf16 ({feature})"
        return "fp32", "fp32: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 would be slower"
    return "fp32", "fp32 on Apple MPS (bf16 autocast there is not measured by this project)"


def effective_runtime(recipe: Recipe) -> dict:
    """What will actually run for ``recipe`` on this machine: the device resolved, and bf16
    and CUDA graphs only where they apply. This, not the request, is what gets logged."""
    device = pick_device(recipe.device)
    is_cuda = device.startswith("cuda")
    return {"device": device, "precision": precision_choice(device, recipe.precision)[0],
            "channels_last": recipe.channels_last, "compile": recipe.compile,
            "cuda_graphs": is_cuda and recipe.cuda_graphs}


def balanced_subset(labels: np.ndarray, size: int, seed: int, setting: str = "the subset") -> np.ndarray:
    """Indices of a fixed, seeded subset with (as near as possible) equal counts per class.
    ``size`` 0 means everything; ``setting`` names the parameter in errors."""
    if size == 0 or size >= len(labels):
        if size > len(labels):
            raise StageError(f"{setting} is {size}, but the prepared split holds only {len(labels)} images; "
                             f"set it to 0 (all) or at most {len(labels)}")
        return np.arange(len(labels))
    if size < 0:
        raise StageError(f"{setting} is {size}; it must be >= 0 (0 = all)")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    picks = []
    for cls, count in zip(classes, per_class, strict=True):
        members = np.flatnonzero(labels == cls)
        if count > len(members):
            raise StageError(f"subset of {size} needs {count} images of class {cls}, the split has {len(members)}")
        picks.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(picks))


def to_device_images(images_nhwc: np.ndarray, device: str) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor on the device (the whole split, once)."""
    return torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous().to(device)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Batched RandomCrop(32, padding) + RandomHorizontalFlip() on uint8 NCHW images:
    each image is cut at a uniform offset out of its zero-padded copy and mirrored
    with probability 1/2, all in a handful of kernels, with no host round trip."""
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=dev, generator=generator)
    flip = torch.rand((b, 1), device=dev, generator=generator) < 0.5
    rows = dy + torch.arange(h, device=dev)
    cols = dx + torch.arange(w, device=dev)
    cols = torch.where(flip, cols.flip(1), cols)  # a flip reads the crop's columns backwards
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


class Normalizer:
    """uint8 NCHW -> normalised float; mean and std live on the device once (building
    them per batch would copy from pageable host memory, a hidden host sync)."""

    def __init__(self, device: str, channels_last: bool):
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """CosineAnnealingLR(T_max=epochs, eta_min=0) in closed form, for 0-based ``epoch``."""
    return base_lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


class Trainer:
    """One model, one recipe: ``train_one_epoch`` and ``evaluate`` as the torchvision
    references have them, with data and augmentation on the device.

    On CUDA the training step (forward, backward, SGD update, loss bookkeeping) is
    captured once as a CUDA graph and replayed: at batch 128 these networks are
    launch-bound, and a replay costs one launch instead of a few hundred."""

    GRAPH_WARMUP_STEPS = 3  # eager steps before capture: cuDNN autotuning, momentum buffers

    def __init__(self, model_name: str, recipe: Recipe):
        self.recipe = recipe
        self.runtime = effective_runtime(recipe)
        self.device = self.runtime["device"]
        torch.manual_seed(recipe.seed)  # model init and dropout are part of the seeded run
        self.model = build_model(model_name, init=recipe.init).to(self.device)
        self.model_name = model_name
        self.num_parameters = count_parameters(self.model)
        if recipe.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        is_cuda = self.device.startswith("cuda")
        if is_cuda:
            torch.cuda.set_device(torch.device(self.device).index or 0)  # graphs and streams use it
            torch.backends.cudnn.benchmark = True
        self.precision = self.runtime["precision"]
        self.autocast_dtype = torch.bfloat16 if self.precision == "bf16" else None
        self.use_graph = self.runtime["cuda_graphs"]
        # a tensor lr lets the captured update read each epoch's rate from device memory
        lr = torch.tensor(recipe.lr, device=self.device) if self.use_graph else recipe.lr
        self.optimizer = MomentumSGD(self.model.parameters(), lr=lr, momentum=recipe.momentum,
                                     weight_decay=recipe.weight_decay, fused=True if is_cuda else None)
        # compiled code is built during the eager warm-up steps, then captured into the graph like any kernel
        self.step_model = torch.compile(self.model, dynamic=False) if recipe.compile else self.model
        self.normalize = Normalizer(self.device, recipe.channels_last)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(recipe.seed)
        self.epochs_done = 0
        self.steps_done = 0
        self.eager_warmup_done = 0  # per process: a resumed trainer warms up again before capture
        self._host_buffers: dict[str, torch.Tensor] = {}  # state_dict()'s pinned copies, reused
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.graph = None

    def _autocast(self):
        return torch.autocast(device_type=autocast_device(self.device), dtype=self.autocast_dtype,
                              enabled=self.autocast_dtype is not None, cache_enabled=False)

    def current_lr(self) -> float:
        return cosine_lr(self.recipe.lr, self.epochs_done, self.recipe.epochs)

    def _step(self, x_u8: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, backward, update; running sums stay on the device."""
        with self._autocast():
            logits = self.step_model(self.normalize(x_u8))
            loss = F.cross_entropy(logits, y)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach().float() * y.shape[0]
        self.correct += (logits.detach().argmax(1) == y).sum()

    def _eager_step(self, x_u8: torch.Tensor, y: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        self._step(x_u8, y)

    def _capture(self, x_u8: torch.Tensor, y: torch.Tensor) -> None:
        self.static_x, self.static_y = x_u8.clone(), y.clone()
        self.optimizer.zero_grad()  # grads are then allocated in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step(self.static_x, self.static_y)

    def _graph_step(self, x_u8: torch.Tensor, y: torch.Tensor) -> None:
        if self.graph is None:
            if self.eager_warmup_done < self.GRAPH_WARMUP_STEPS:
                self.eager_warmup_done += 1
                stream = torch.cuda.Stream(self.device)  # warm-up on a side stream, as capture requires
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    self._eager_step(x_u8, y)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                return
            self._capture(x_u8, y)  # capture records the step without running it
        self.static_x.copy_(x_u8)
        self.static_y.copy_(y)
        self.graph.replay()

    def epoch_batches(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole epoch's augmented images in a seeded random order, made in a few
        large kernels rather than a few small ones per batch."""
        order = torch.randperm(len(labels), device=self.device, generator=self.generator)
        chunks = [random_crop_flip(images[idx], self.generator, self.recipe.padding) for idx in order.split(8192)]
        return torch.cat(chunks), labels[order]

    def train_one_epoch(self, images: torch.Tensor, labels: torch.Tensor, progress=None) -> tuple[float, float]:
        """One pass with this epoch's cosine learning rate; returns (mean loss, accuracy %).
        The only host sync is at the end of the epoch."""
        batch = self.recipe.batch_size
        self.model.train()
        self.optimizer.set_lr(self.current_lr())
        self.loss_sum.zero_()
        self.correct.zero_()
        xs, ys = self.epoch_batches(images, labels)
        for start in range(0, len(ys), batch):
            x, y = xs[start:start + batch], ys[start:start + batch]
            if self.use_graph and y.shape[0] == batch:
                self._graph_step(x, y)
            else:  # CPU/MPS, compile, or the epoch's last, smaller batch
                self._eager_step(x, y)
            self.steps_done += 1
            if progress is not None:
                progress.update(1)
        self.epochs_done += 1
        return self.loss_sum.item() / len(ys), 100.0 * self.correct.item() / len(ys)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """(mean loss, accuracy %) on uint8 NCHW images already on the device."""
        logits = predict(self.model, images, self.normalize, self.autocast_dtype, self.recipe.eval_batch_size)
        loss = F.cross_entropy(logits, labels)
        correct = (logits.argmax(1) == labels).sum()
        return loss.item(), 100.0 * correct.item() / len(labels)

    def state_dict(self) -> dict:
        """Everything the loop needs to go on exactly where it stopped, as CPU tensors:
        weights, optimizer (momentum buffers), every RNG the loop draws from (the
        augmentation generator, dropout's global generator on the CPU or CUDA), counters.
        On CUDA the copies land in pinned host buffers kept from one call to the next
        (pinning memory anew each epoch costs more than the copy), so a caller must be done
        with the previous state before asking again; writing it to disk is the caller's."""
        def to_host(obj, key: str):
            if isinstance(obj, torch.Tensor) and obj.is_cuda:
                buffer = self._host_buffers.get(key)
                if buffer is None or buffer.shape != obj.shape or buffer.dtype != obj.dtype:
                    buffer = self._host_buffers[key] = torch.empty_like(obj, device="cpu", pin_memory=True)
                return buffer.copy_(obj, non_blocking=True)
            if isinstance(obj, torch.Tensor):
                return obj.detach().clone()
            if isinstance(obj, dict):
                return {k: to_host(v, f"{key}/{k}") for k, v in obj.items()}
            if isinstance(obj, list):
                return [to_host(v, f"{key}/{i}") for i, v in enumerate(obj)]
            return obj

        state = {"model": to_host(self.model.state_dict(), "model"),
                 "optimizer": to_host(self.optimizer.state_dict(), "optimizer"),
                 "generator": self.generator.get_state(), "cpu_rng": torch.get_rng_state(),
                 "epochs_done": self.epochs_done, "steps_done": self.steps_done}
        if self.device.startswith("cuda"):
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
            torch.cuda.current_stream(self.device).synchronize()  # the copies above have landed
        return state

    def load_state_dict(self, state: dict) -> None:
        """Go on from ``state_dict()``'s output; a CUDA graph is captured afresh on the
        first step (it must record the loaded parameters' update)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # the lr stays: each epoch sets it
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["cpu_rng"])
        if "cuda_rng" in state and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epochs_done, self.steps_done = state["epochs_done"], state["steps_done"]
        self.graph = None

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)


def autocast_device(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, normalize: Normalizer, autocast_dtype: torch.dtype | None,
            batch_size: int = 1000) -> torch.Tensor:
    """Float32 logits of ``model`` in eval mode for uint8 NCHW ``images`` on its device."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        with torch.autocast(device_type=autocast_device(images.device.type), dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            outputs.append(model(normalize(images[start:start + batch_size])).float())
    return torch.cat(outputs)


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)


def eta_line(model_name: str, remaining_s: float, next_epoch: int, epochs: int) -> str:
    """After the first epoch off the GPU: how long the rest will take, so that nobody waits a day unawares."""
    hours, minutes = divmod(round(remaining_s / 60), 60)
    pace = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min" if minutes else f"{remaining_s:.0f} s"
    hint = (" on this CPU; for a look at the study in minutes, run the quick demo (README)"
            if remaining_s > 1800 else "")
    rest = f"epochs {next_epoch}-{epochs} take" if next_epoch < epochs else f"epoch {epochs} takes"
    return f"{model_name}: at this pace {rest} about {pace}{hint}"


def train(model_name: str, arrays: dict[str, np.ndarray], recipe: Recipe, *, trainer: Trainer | None = None,
          history: list[dict] | None = None, on_epoch: Callable[[dict], None] | None = None,
          progress: bool | None = None, log: Callable[[str], None] = print) -> dict:
    """Train ``model_name`` on ``arrays`` (uint8 NHWC images, int labels) with ``recipe``.

    Returns the trained ``Trainer`` (model inside), the per-epoch history and summary
    metrics. ``on_epoch`` gets each epoch's record as soon as it is measured; ``trainer``
    is one already built for this model and recipe, possibly resumed, in which case
    ``history`` holds its finished epochs and training goes on after them."""
    trainer = trainer or Trainer(model_name, recipe)
    device = trainer.device
    train_x = to_device_images(arrays["train_images"], device)
    train_y = torch.as_tensor(arrays["train_labels"], dtype=torch.long, device=device)
    test_x = to_device_images(arrays["test_images"], device)
    test_y = torch.as_tensor(arrays["test_labels"], dtype=torch.long, device=device)
    if len(train_y) == 0 or len(test_y) == 0:
        raise StageError("the training or test split is empty; check data.train_subset / data.test_subset")
    progress = sys.stderr.isatty() if progress is None else progress
    batches = math.ceil(len(train_y) / recipe.batch_size)
    history = list(history or [])
    if len(history) != trainer.epochs_done:
        raise ValueError(f"history has {len(history)} epochs, the trainer {trainer.epochs_done}")
    first_epoch = trainer.epochs_done + 1
    for epoch in range(first_epoch, recipe.epochs + 1):
        epoch_start = time.perf_counter()
        lr = trainer.current_lr()
        bar = _progress_bar(batches, f"{model_name} {epoch}/{recipe.epochs}", progress)
        trainer.synchronize()
        start = time.perf_counter()
        train_loss, train_acc = trainer.train_one_epoch(train_x, train_y, bar)  # ends with a sync
        epoch_time = time.perf_counter() - start
        test_loss, test_acc = trainer.evaluate(test_x, test_y)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):  # read at the epoch's one sync
            bad = train_loss if not math.isfinite(train_loss) else test_loss
            raise Diverged(f"{model_name}: the loss became {bad} at epoch {epoch}/{recipe.epochs}, so the training "
                           f"diverged (train.lr {recipe.lr} is the usual cause; try a lower one); nothing was written")
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                  "test_acc": test_acc, "lr": lr, "epoch_time_s": epoch_time}
        history.append(record)
        summary = (f"loss {train_loss:.3f} acc {train_acc:.2f}% | test loss {test_loss:.3f} "
                   f"acc {test_acc:.2f}% | lr {lr:.5f} | {epoch_time:.1f}s")
        if bar is not None:
            bar.set_postfix_str(summary, refresh=True)
            bar.close()
        else:
            log(f"{model_name} epoch {epoch}/{recipe.epochs}: {summary}")
        if on_epoch is not None:
            on_epoch(record)
        if epoch == first_epoch and epoch < recipe.epochs and not device.startswith("cuda"):
            log(eta_line(model_name, (time.perf_counter() - epoch_start) * (recipe.epochs - epoch), epoch + 1,
                         recipe.epochs))
    times = [h["epoch_time_s"] for h in history]
    metrics = {
        "model": model_name,
        "epochs": recipe.epochs,
        "final_test_acc": history[-1]["test_acc"],
        "best_test_acc": max(h["test_acc"] for h in history),
        "final_train_loss": history[-1]["train_loss"],
        "num_parameters": trainer.num_parameters,
        "mean_epoch_time_s": sum(times) / len(times),
        # the first epoch carries cuDNN autotuning and compilation; report both
        "mean_epoch_time_s_after_first": sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0],
        "precision": trainer.precision,
        "train_images": int(len(train_y)),
        "test_images": int(len(test_y)),
    }
    return {"trainer": trainer, "history": history, "metrics": metrics, "recipe": asdict(recipe)}


# ---------------------------------------------------------------- persistent compile cache (issue 24)
def compile_cache_dir():
    """Where the train stage keeps compiled kernels between processes: ``STUDY_COMPILE_CACHE``, else
    the user's cache folder. Outside the project on purpose: DVC's queue trains in temporary copies,
    which should share one cache per machine."""
    if os.environ.get("STUDY_COMPILE_CACHE"):
        return Path(os.environ["STUDY_COMPILE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-vgg-cifar10" / "compile"


def compile_cache_file(folder, device: str):
    """Where Inductor's cache artifacts for this torch and this device live: compiled kernels are
    valid only for the torch version and the GPU (or CPU) that built them."""
    key = f"torch-{torch.__version__}-{device_name(device)}"
    return Path(folder) / f"{re.sub(r'[^A-Za-z0-9.+-]+', '_', key)}.bin"


def load_compile_cache(folder, device: str) -> str:
    """Before a process's first torch.compile: hot-load the artifacts an earlier process of this
    torch and device saved, so the first compile reads kernels instead of building them.
    Returns a line for the stage's log; an unusable file costs a cold compile, never the run."""
    path = compile_cache_file(folder, device)
    if not path.exists():
        return f"compile cache: none yet for this torch and device ({path.name}); this process builds it"
    try:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())  # None (and a warning) when unreadable
    except Exception as err:
        info, why = None, f" ({type(err).__name__}: {err})"
    else:
        why = ""
    if info is None:
        return f"compile cache: {path} is unusable{why}; compiling afresh"
    return f"compile cache: {sum(len(keys) for keys in info.artifacts.values())} artifacts loaded from {path}"


def save_compile_cache(folder, device: str) -> str:
    """After the compiled code ran: save every cache artifact this process built or loaded
    (atomically; an unchanged cache is not rewritten). Returns a line for the stage's log."""
    saved = torch.compiler.save_cache_artifacts()
    if not saved or saved[1].empty():
        return "compile cache: nothing compiled, nothing saved"
    blob, path = saved[0], compile_cache_file(folder, device)
    if path.exists() and path.read_bytes() == blob:
        return f"compile cache: {path} unchanged"
    try:  # a cache that cannot be written costs the next process a cold compile, never this training
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob)
    except OSError as err:
        return f"compile cache: not saved to {path} ({err.strerror or err}); the next process compiles afresh"
    return f"compile cache: {len(blob) / 1e6:.1f} MB saved to {path}"
