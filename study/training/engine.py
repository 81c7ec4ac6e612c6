"""The training hot path: data on the device, augmentation as batched tensor ops.

Importable and callable without MLflow or DVC (the benchmarks run it on bare GPU
machines); tracking attaches through the ``on_epoch`` callback of ``train``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.network import build_model, count_parameters
from study.errors import Diverged, StageError
from study.recipe import EPOCHS, RECIPE
from study.training.batches import Normalizer, random_crop_flip, to_device_images
from study.training.device import autocast_device, pick_device, precision_choice
from study.training.sgd import OPTIMIZERS


@dataclass
class Recipe:
    """What the loop needs: the recipe (section 5.1) plus the knobs that only change speed.
    The pipeline fills every field from the validated params.yaml (study.config); the defaults,
    the paper's recipe (study.recipe.RECIPE), serve the benchmarks, which run without it."""

    epochs: int = EPOCHS[1]
    seed: int = 0
    batch_size: int = RECIPE["batch_size"]
    lr: float = RECIPE["lr"]  # cosine-annealed to 0 over the run, stepped once per epoch
    momentum: float = RECIPE["momentum"]
    weight_decay: float = RECIPE["weight_decay"]
    padding: int = 4  # random crop 32 from the zero-padded 40x40 image
    eval_batch_size: int = 1000
    device: str = "auto"
    precision: str = "bf16"  # bf16 autocast where it is native: CUDA, CPUs with AVX512-BF16 or AMX
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = True  # replay the training step as one CUDA graph (CUDA only)
    deterministic: bool = False  # bit-identical reruns of a seed on one machine (set_deterministic)
    init: str = RECIPE["init"]
    optimizer: str = RECIPE["optimizer"]  # or "adamw" (an ablation)


def effective_runtime(recipe: Recipe) -> dict:
    """What will actually run for ``recipe`` on this machine: the device resolved, and bf16
    and CUDA graphs only where they apply. This, not the request, is what gets logged."""
    device = pick_device(recipe.device)
    is_cuda = device.startswith("cuda")
    return {"device": device, "precision": precision_choice(device, recipe.precision)[0],
            "channels_last": recipe.channels_last, "compile": recipe.compile,
            # the captured step reads the lr from a tensor, which the project's SGD takes
            "cuda_graphs": is_cuda and recipe.cuda_graphs and recipe.optimizer == "sgd",
            "deterministic": recipe.deterministic}


def set_deterministic(on: bool) -> None:
    """On: what torch needs for bit-identical reruns of one seed on one machine: deterministic
    kernels (an op without one raises, never runs nondeterministically), no cuDNN autotuning (it
    may pick other algorithms run to run), cuBLAS's fixed workspace (read at its first call).
    Off: torch's defaults, with cuDNN's autotuning on CUDA for speed."""
    import os

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if on or torch.are_deterministic_algorithms_enabled():  # the call imports torch._dynamo: only when it changes
        torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


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
        set_deterministic(recipe.deterministic)
        torch.manual_seed(recipe.seed)  # model init and dropout are part of the seeded run
        self.model = build_model(model_name, init=recipe.init).to(self.device)
        self.model_name = model_name
        self.num_parameters = count_parameters(self.model)
        if recipe.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        is_cuda = self.device.startswith("cuda")
        if is_cuda:
            torch.cuda.set_device(torch.device(self.device).index or 0)  # graphs and streams use it
        self.precision = self.runtime["precision"]
        self.autocast_dtype = torch.bfloat16 if self.precision == "bf16" else None
        self.use_graph = self.runtime["cuda_graphs"]
        # a tensor lr lets the captured update read each epoch's rate from device memory
        lr = torch.tensor(recipe.lr, device=self.device) if self.use_graph else recipe.lr
        # one fused kernel per step on CUDA and the CPU: on the CPU 4x quicker than PyTorch's default
        # per-tensor loop (AlexNet's 23M parameters: 16 ms against 68 ms a step, one EPYC core), its
        # rounding differing from the loop's in the last bit; MPS keeps PyTorch's default
        fused = True if is_cuda or self.device == "cpu" else None
        self.optimizer = OPTIMIZERS[recipe.optimizer](self.model.parameters(), lr=lr, momentum=recipe.momentum,
                                                      weight_decay=recipe.weight_decay, fused=fused)
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
        loss = F.cross_entropy(logits.float(), y)  # in fp32: a bf16 loss would log 2.296875 for ln 10
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
    hint = (" on this CPU; for a look at the study in minutes, run the quick demo (README.md)"
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
        bar = _progress_bar(batches, f"{model_name} {epoch}/{recipe.epochs}", progress)
        record = train_epoch(trainer, epoch, (train_x, train_y), (test_x, test_y), bar)
        history.append(record)
        summary = (f"loss {record['train_loss']:.3f} acc {record['train_acc']:.2f}% | test loss "
                   f"{record['test_loss']:.3f} acc {record['test_acc']:.2f}% | lr {record['lr']:.5f} | "
                   f"{record['epoch_time_s']:.1f}s")
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
    return {"trainer": trainer, "history": history, "metrics": summary_metrics(trainer, history, len(train_y),
                                                                              len(test_y)), "recipe": asdict(recipe)}


def train_epoch(trainer: Trainer, epoch: int, train_set: tuple, test_set: tuple, bar) -> dict:
    """One epoch and its evaluation: the epoch's record (``study.metrics.HISTORY_COLUMNS``, which
    names these keys for every writer and reader); a non-finite loss stops the training."""
    recipe = trainer.recipe
    lr = trainer.current_lr()
    trainer.synchronize()
    start = time.perf_counter()
    train_loss, train_acc = trainer.train_one_epoch(*train_set, bar)  # ends with a sync
    epoch_time = time.perf_counter() - start
    test_loss, test_acc = trainer.evaluate(*test_set)
    if not (math.isfinite(train_loss) and math.isfinite(test_loss)):  # read at the epoch's one sync
        bad = train_loss if not math.isfinite(train_loss) else test_loss
        raise Diverged(f"{trainer.model_name}: the loss became {bad} at epoch {epoch}/{recipe.epochs}, so the "
                       f"training diverged (train.lr {recipe.lr} is the usual cause; try a lower one); nothing was "
                       "written")
    return {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
            "test_acc": test_acc, "lr": lr, "epoch_time_s": epoch_time}


def summary_metrics(trainer: Trainer, history: list[dict], train_images: int, test_images: int) -> dict:
    times = [h["epoch_time_s"] for h in history]
    return {
        "model": trainer.model_name,
        "epochs": trainer.recipe.epochs,
        "final_test_acc": history[-1]["test_acc"],
        "best_test_acc": max(h["test_acc"] for h in history),
        "final_train_loss": history[-1]["train_loss"],
        "num_parameters": trainer.num_parameters,
        "mean_epoch_time_s": sum(times) / len(times),
        # the first epoch carries cuDNN autotuning and compilation; report both
        "mean_epoch_time_s_after_first": sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0],
        "precision": trainer.precision,
        "train_images": int(train_images),
        "test_images": int(test_images),
    }
