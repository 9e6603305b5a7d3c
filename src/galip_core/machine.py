"""What the machine can do, read once: CPU name and flags, native bf16, thread counts, library versions.

Shared by ``galip benchmark`` (its report's environment), ``galip env``, the model cards' speed figures and the
``--dtype auto`` choice of ``galip generate`` and the demo. On a CPU without bf16 matrix instructions (no AVX512-BF16,
no AMX) PyTorch emulates bf16 matmuls and convolutions: the official-size GALIP took ~430 s per image in bf16 against
~5 s in fp32 on an AVX2-only AMD EPYC, so bf16 is only chosen where it is native, and asking for it elsewhere warns.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
from typing import Any

logger = logging.getLogger(__name__)

#: /proc/cpuinfo flags of native bf16 matrix instructions (without them, CPU bf16 matmuls are emulated and slower than fp32)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: the flags ``galip env`` lists (vector and matrix extensions that decide PyTorch's CPU kernels)
REPORTED_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                      "amx_tile", "amx_bf16", "amx_int8")  # fmt: skip
#: the distributions whose versions ``galip env`` prints (absent ones are shown as not installed)
PACKAGES = ("galip-diffusers", "torch", "torchvision", "diffusers", "transformers", "accelerate", "safetensors",
            "huggingface-hub", "tokenizers", "numpy", "gradio", "torchmetrics", "torch-fidelity", "bitsandbytes",
            "wandb", "tensorboard")  # fmt: skip


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` of a ``/proc/cpuinfo`` text (union over its processors)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return frozenset(flags)


def cpu_flags() -> frozenset[str]:
    """This CPU's flags (``/proc/cpuinfo``, read once per process; empty where there is none, e.g. macOS)."""
    return parse_cpu_flags(_cpuinfo())


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_support(cpuinfo: str | None = None) -> str:
    """``"native (amx_bf16)"``, ``"native (avx512_bf16)"``, ``"emulated (...)"`` or ``"unknown"``: whether this CPU
    has bf16 matrix instructions, from the flags of ``/proc/cpuinfo`` (Linux; elsewhere ``"unknown"``)."""
    flags = cpu_flags() if cpuinfo is None else parse_cpu_flags(cpuinfo)
    if not flags:
        return "unknown"
    native = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    if native:
        return f"native ({native[0]})"
    return "emulated (no " + " / ".join(CPU_BF16_FLAGS) + ": bf16 matmuls run slower than fp32 on this CPU)"


def native_bf16(device: Any = "cpu") -> bool:
    """Whether ``device`` computes bf16 natively: a CPU with AMX/AVX512-BF16, a CUDA GPU that supports it
    (compute capability >= 8.0); ``False`` for anything else (MPS, unknown CPUs)."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return cpu_bf16_support().startswith("native")
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def auto_dtype_name(device: Any = "cpu") -> str:
    """``--dtype auto``: ``"bf16"`` where ``device`` has native bf16, else ``"fp32"`` (fp16 is never picked
    automatically: on CPU it is emulated too, and GPUs with fp16 but no bf16 are better served explicitly)."""
    return "bf16" if native_bf16(device) else "fp32"


def emulated_bf16_warning(dtype: Any, device: Any = "cpu") -> str | None:
    """A warning text when ``dtype`` is bf16 on a CPU without native bf16 (``None`` otherwise)."""
    import torch

    if dtype not in (torch.bfloat16, "bf16") or torch.device(device).type != "cpu" or native_bf16("cpu"):
        return None
    return (f"bf16 on this CPU ({cpu_name()}) is emulated: {cpu_bf16_support()}. Expect it to be far slower than "
            "fp32 (about 430 s against 5 s per image for the official-size GALIP on an AVX2 CPU). Use fp32 here "
            "(--dtype auto or fp32 on the command line, torch_dtype=torch.float32 in Python), and bf16 on CPUs with "
            "AMX/AVX512-BF16 or on GPUs.")


def warn_if_emulated_bf16(dtype: Any, device: Any = "cpu") -> bool:
    """Log :func:`emulated_bf16_warning` (once per call site's call); returns whether it warned."""
    message = emulated_bf16_warning(dtype, device)
    if message:
        logger.warning(message)
    return message is not None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (``None``: not installed), read from package metadata without importing anything."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    """The machine and software of a measurement: the dictionary ``galip benchmark`` records and ``galip env``
    prints (versions, platform, CPU and its flags, native bf16, thread counts, GPU, load average)."""
    import torch

    versions = {**package_versions(), "torch": torch.__version__}  # the build's local tag too (e.g. +cu130)
    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "diffusers": versions["diffusers"],
        "transformers": versions["transformers"], "platform": platform.platform(), "cpu": cpu_name(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": cpu_bf16_support(),
        "cpu_flags": [flag for flag in REPORTED_CPU_FLAGS if flag in cpu_flags()],
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda, "auto_dtype": {"cpu": auto_dtype_name("cpu")},
        "packages": versions,
    }  # fmt: skip
    if torch.cuda.is_available():
        env["auto_dtype"]["cuda"] = auto_dtype_name("cuda")
    try:
        env["load_average"] = list(os.getloadavg())
    except OSError:
        env["load_average"] = None
    return env


def check_device(device: str, flag: str = "--device") -> None:
    """``ValueError`` naming ``flag`` when ``device`` is not a torch device string (``cpu``, ``cuda``, ``cuda:1``,
    ``mps``, ...) or names a CUDA/MPS device that this machine does not have: checked before a model loads."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{flag} {device!r} is not a torch device; use e.g. cpu, cuda, cuda:1 or mps.") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag} {device}: no CUDA GPU is available here (torch {torch.__version__}, built with CUDA "
                         f"{torch.version.cuda}); use --device cpu.")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"{flag} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{flag} {device}: MPS is not available here; use --device cpu.")


def available_bytes(device: Any) -> int | None:
    """Free memory on ``device`` (CUDA: the driver's figure; CPU: the system's available RAM, from /proc/meminfo),
    or ``None`` where it is not known."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:  # Linux; elsewhere the check is skipped
            with open("/proc/meminfo", encoding="ascii") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            return int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return None
