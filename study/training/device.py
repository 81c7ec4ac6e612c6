"""Where and how a training runs: the device, the precision that is native there, autocast's
device type, and the persistent compile cache (compiled kernels kept between processes)."""

from __future__ import annotations

import ctypes
import os
import platform
import re
from pathlib import Path

import torch

from study.errors import StageError
from study.files import atomic_path
from study.provenance import device_name


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



def reuse_freed_memory(device: str = "cpu") -> bool:
    """Keep the memory a training on the CPU (``device``) frees for its next step, where the C
    library is glibc; elsewhere, and on a GPU, nothing.
    glibc serves each block over 32 MB (AlexNet's and VGG's largest gradients) with a fresh mmap
    and returns it to the system when freed, so every step faulted in and zeroed its largest
    buffers again: 60 of an AlexNet step's 199 ms went to the kernel (batch 16, one core of the
    2-core EPYC VM), none after this. It changes where memory comes from, not what is computed.
    It is for the whole calling process, for good: its resident memory stays at its peak (a stage's
    process, or a notebook that calls the stage's function). Returns whether it applied."""
    if device != "cpu" or platform.libc_ver()[0] != "glibc":  # a GPU's; macOS, Windows, musl
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    # no block served by mmap (glibc still maps one its heap cannot grow to), and no heap trimmed below 2 GiB
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def autocast_device(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


# ---------------------------------------------------------------- persistent compile cache
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
