# SPDX-License-Identifier: GPL-3.0-or-later
"""Which device and dtype a request runs on, and how to recognise running out of memory there.

torch is imported inside the functions, never at module import.
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DevicePlan:
    """Where the models live.

    Attributes:
        device: "cuda", "mps" or "cpu".
        dtype: "float16", "bfloat16" or "float32".
        reason: Why this was chosen, for `result.info`.
    """

    device: str
    dtype: str
    reason: str

    def torch_dtype(self) -> Any:
        """The `torch.dtype` for `dtype`."""
        import torch

        return getattr(torch, self.dtype)


def choose_device(device: str = "auto", dtype: str = "auto") -> DevicePlan:
    """CUDA (float16), then Apple MPS (float16), then CPU (float32), unless overridden.

    Args:
        device: "auto", "cuda", "mps" or "cpu".
        dtype: "auto", "float16", "bfloat16" or "float32".

    Returns:
        The plan.

    Raises:
        ValueError: a device that torch cannot use here, or float16 on the CPU (many CPU kernels lack it and
            the rest are slower than float32); the message says what to choose instead.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if device == "auto":
        chosen = "cuda" if has_cuda else "mps" if has_mps else "cpu"
        reason = f"auto: {'CUDA' if has_cuda else 'Apple MPS' if has_mps else 'no GPU found'}"
    else:
        chosen, reason = device, "requested"
        if device == "cuda" and not has_cuda:
            build = (
                "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            )
            raise ValueError(
                f"Device 'cuda' is set but torch {torch.__version__} ({build}) sees no CUDA device; "
                "use device 'auto' or 'cpu'"
            )
        if device == "mps" and not has_mps:
            raise ValueError(
                "Device 'mps' is set but Apple MPS is not available here; use device 'auto' or 'cpu'"
            )
    if dtype == "auto":
        dtype = "float32" if chosen == "cpu" else "float16"
    elif dtype == "float16" and chosen == "cpu":
        raise ValueError("Precision float16 is not supported on the CPU; use float32 (or bfloat16)")
    return DevicePlan(chosen, dtype, reason)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is the device (or host) running out of memory."""
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def free_device_memory(device: str) -> None:
    """Return cached blocks to the driver after a failure or a release (no-op on the CPU)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
