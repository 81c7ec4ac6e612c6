"""The recipe's optimizers: SGD with momentum and weight decay (the study's), as PyTorch
computes it, and AdamW (an ablation), behind one small interface the loop calls.

``torch.optim.SGD``'s update is its public functional ``torch.optim.sgd.sgd``. Of the class
around it (parameter groups, hooks, GradScaler's scale and inf checks) this recipe uses only
the momentum buffers and the learning rate. The class's methods import ``torch._dynamo`` on
first use, for torch.compile's sake, a second or more of one core per training process
(benchmarks/results/ has the measurement); ``MomentumSGD`` calls the same functional with the
same arguments, so its updates are SGD's bit for bit (tests/test_engine.py checks it), and a
process that does not compile never imports the compiler.
"""

from __future__ import annotations

import torch
from torch.optim.sgd import sgd


class MomentumSGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay, fused=fused)`` for one group of
    parameters. ``lr`` may be a one-element tensor (a captured CUDA graph reads it)."""

    def __init__(self, params, *, lr: float | torch.Tensor, momentum: float, weight_decay: float,
                 fused: bool | None = None):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay, self.fused = lr, momentum, weight_decay, fused
        self.momentum_buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def set_lr(self, lr: float) -> None:
        if isinstance(self.lr, torch.Tensor):
            self.lr.fill_(lr)  # in place: a captured step keeps reading the same tensor
        else:
            self.lr = lr

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        # parameters without a gradient are left alone, as SGD leaves them
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        buffers = [self.momentum_buffers[i] for i in live]
        sgd([self.params[i] for i in live], [self.params[i].grad for i in live], buffers,
            fused=self.fused, weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr, dampening=0.0,
            nesterov=False, maximize=False)
        for i, buffer in zip(live, buffers, strict=True):  # the functional fills in the first step's buffers
            self.momentum_buffers[i] = buffer

    def state_dict(self) -> dict:
        return {"momentum_buffers": list(self.momentum_buffers)}

    def load_state_dict(self, state: dict) -> None:
        buffers = state["momentum_buffers"]
        if len(buffers) != len(self.params):
            raise ValueError(f"the state has {len(buffers)} momentum buffers, the model {len(self.params)} parameters")
        self.momentum_buffers = [None if b is None else b.to(p.device, p.dtype, copy=True)
                                 for b, p in zip(buffers, self.params, strict=True)]


class AdamW:
    """``torch.optim.AdamW(params, lr, weight_decay)`` (decoupled weight decay, PyTorch's default
    betas) behind ``MomentumSGD``'s interface. ``momentum`` is SGD's and is not used here."""

    def __init__(self, params, *, lr: float, momentum: float, weight_decay: float, fused: bool | None = None):
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


OPTIMIZERS = {"sgd": MomentumSGD, "adamw": AdamW}
