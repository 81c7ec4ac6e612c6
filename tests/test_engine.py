import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import transforms

from study.errors import StageError
from study.training.batches import MEAN, STD, Normalizer, balanced_subset, random_crop_flip
from study.training.device import native_bf16_cpu, pick_device, precision_choice
from study.training.engine import Recipe, Trainer, cosine_lr, effective_runtime
from study.training.sgd import MomentumSGD


def recover_crop(original: torch.Tensor, augmented: torch.Tensor, padding: int = 4):
    """The (dy, dx, flipped) that turn the zero-padded original into ``augmented``, or None."""
    padded = torch.nn.functional.pad(original, (padding,) * 4)
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy:dy + 32, dx:dx + 32]
            if torch.equal(crop, augmented):
                return dy, dx, False
            if torch.equal(crop.flip(-1), augmented):
                return dy, dx, True
    return None


def test_every_augmented_image_is_a_flip_and_crop_of_the_padded_original():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2000, 3, 32, 32), dtype=torch.uint8, generator=gen)
    out = random_crop_flip(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    found = [recover_crop(images[i], out[i]) for i in range(len(images))]
    assert all(f is not None for f in found)
    # the same distribution as RandomCrop(32, padding=4) + RandomHorizontalFlip(): offsets
    # uniform over 0..8 in each axis, independent flips with p = 1/2
    dys = np.bincount([f[0] for f in found], minlength=9)
    dxs = np.bincount([f[1] for f in found], minlength=9)
    flips = sum(f[2] for f in found)
    expected = len(found) / 9
    for counts in (dys, dxs):
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < 26.1  # 99.9% quantile of chi-square with 8 degrees of freedom
    assert abs(flips - len(found) / 2) < 4 * np.sqrt(len(found) / 4)


def test_torchvision_pipeline_outputs_are_reachable_by_ours():
    """Whatever torchvision's transforms produce is one of the crops ours can produce."""
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    tv = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])
    for _ in range(50):
        assert recover_crop(image, tv(image)) is not None


def test_normalizer_equals_to_tensor_then_normalize():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    ours = Normalizer("cpu", channels_last=True)(images)
    reference = transforms.Normalize(MEAN, STD)(images.float() / 255)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert ours.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("graph_ready", "fused"), [(False, None), (False, True), (True, True)],
                         ids=["float lr", "float lr, fused (as on the CPU)", "tensor lr, fused (as on CUDA)"])
def test_momentum_sgd_updates_as_torch_sgd_bit_for_bit_and_resumes(graph_ready, fused):
    """study.training.sgd calls SGD's own functional: same parameters and buffers after every step, with
    a parameter left without a gradient, a changed lr, and a state saved and loaded midway, fused
    (the trainer's kernel on the CPU and CUDA) or not. As on CUDA (tensor lr, fused), the lr tensor
    a captured graph reads is changed in place and kept through a resume, and zero_grad leaves no
    gradient to accumulate into."""
    torch.manual_seed(0)
    # sizes past one vector register, with a remainder: the fused kernel's vector and scalar paths (whose
    # rounding differs from the per-tensor loop's in the last bit: fused and not are compared apart)
    ours, theirs = (nn.Sequential(nn.Linear(37, 35), nn.ReLU(), nn.Linear(35, 3), nn.Linear(3, 3)) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    lr = torch.tensor(0.1) if graph_ready else 0.1
    settings = {"momentum": 0.9, "weight_decay": 5e-4}
    opt = MomentumSGD(ours.parameters(), lr=lr, fused=fused, **settings)
    ref = torch.optim.SGD(theirs.parameters(), lr=torch.tensor(0.1) if graph_ready else 0.1, fused=fused,
                          **settings)
    x = torch.randn(8, 37)
    for step in range(6):
        if step == 3:  # a resume: a fresh optimizer from the saved state
            saved = opt.state_dict()
            opt = MomentumSGD(ours.parameters(), lr=lr, fused=fused, **settings)
            opt.load_state_dict(saved)
            opt.set_lr(0.05)
            ref.param_groups[0]["lr"] = torch.tensor(0.05) if graph_ready else 0.05
        for model, optimizer in ((ours, opt), (theirs, ref)):
            optimizer.zero_grad()
            model[:3](x).pow(2).mean().backward()  # the last layer gets no gradient
            optimizer.step()
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)
    assert opt.momentum_buffers[-1] is None and ours[3].weight.grad is None
    assert all(torch.equal(a, ref.state[p]["momentum_buffer"])
               for a, p in zip(opt.momentum_buffers[:4], theirs.parameters(), strict=False))
    assert (opt.lr is lr and lr.item() == pytest.approx(0.05)) if graph_ready else opt.lr == 0.05
    opt.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


def test_cosine_lr_matches_torch_scheduler():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    for epoch in range(7):
        assert cosine_lr(0.01, epoch, 7) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()


def test_balanced_subset_is_fixed_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    a = balanced_subset(labels, 103, seed=0)
    assert len(a) == 103 and len(set(a)) == 103
    counts = np.bincount(labels[a], minlength=10)
    assert counts.max() - counts.min() <= 1
    assert np.array_equal(a, balanced_subset(labels, 103, seed=0))
    assert not np.array_equal(a, balanced_subset(labels, 103, seed=1))
    assert len(balanced_subset(labels, 0, seed=0)) == 500
    too_many = r"data.train_subset is 501, .* holds only 500 images; set it to 0 \(all\) or at most 500"
    with pytest.raises(StageError, match=too_many):
        balanced_subset(labels, 501, seed=0, setting="data.train_subset")


def test_devices_and_the_runtime_that_really_runs():
    with pytest.raises(StageError, match="runtime.device 'tpu'"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(StageError, match="CUDA is not available"):
            pick_device("cuda")
        # on a CPU the request for CUDA graphs is not what runs, nor bf16 where the CPU lacks it
        assert effective_runtime(Recipe(device="auto", precision="bf16", cuda_graphs=True)) == {
            "device": "cpu", "precision": "bf16" if native_bf16_cpu() else "fp32", "channels_last": True,
            "compile": False, "cuda_graphs": False, "deterministic": False}
    assert pick_device("auto") in ("cuda", "mps", "cpu")


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected", "why"), [
    (False, False, "fp32", "no native bf16"), (False, True, "bf16", "AVX512-BF16"), (True, False, "bf16", "AMX")])
def test_bf16_runs_on_a_cpu_only_where_it_is_native(monkeypatch, amx, avx512_bf16, expected, why):
    """What torch reports about the CPU decides, and the record logs what was chosen."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    precision, line = precision_choice("cpu", "bf16")
    assert precision == expected and why in line
    assert precision_choice("cpu", "fp32")[0] == "fp32" and precision_choice("mps", "bf16")[0] == "fp32"
    assert effective_runtime(Recipe(device="cpu", precision="bf16"))["precision"] == expected
    trainer = Trainer("vgg8", Recipe(device="cpu", precision="bf16", epochs=1))
    assert trainer.precision == expected
    assert (trainer.autocast_dtype == torch.bfloat16) == (expected == "bf16")


PAGE_FAULTS = """
import resource, sys, torch
from study.training.device import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # a 64 MB gradient, made and freed as each training step does
        torch.ones(16 * 2**20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
print(applied, faults())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_a_cpu_training_reuses_the_memory_it_freed_instead_of_faulting_it_in_again():
    """glibc maps each block over 32 MB afresh and unmaps it when freed: every step then pays the
    kernel to zero its largest buffers again (a third of an AlexNet step on the CPU)."""
    def faults(mode):
        proc = subprocess.run([sys.executable, "-c", PAGE_FAULTS, mode], capture_output=True, text=True, timeout=120)
        applied, count = proc.stdout.split()
        return applied == "True", int(count)

    applied, reused = faults("reuse")
    default_applied, default = faults("default")
    assert applied and not default_applied
    # by default, at least a fault per 2 MiB page of every block (a 4-KiB page each without transparent
    # huge pages); reused, a block's worth at most (seen: none, or one block's pages now and then)
    assert default >= 20 * 32 and reused <= default // 10, (reused, default)
