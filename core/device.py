"""Pick the torch device and dtype: CUDA, then Apple MPS, then CPU, unless told otherwise."""

from __future__ import annotations

from typing import Any

from provgen.core.errors import ValidationError

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(name: str | None) -> Any:
    import torch

    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        message = f"{name!r} is not a torch device ({error}); use cpu, cuda, cuda:N or mps"
        raise ValidationError("device", message) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError("device", "CUDA was asked for but torch sees no CUDA device; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValidationError("device", "MPS was asked for but is not available; use --device cpu")
    return device


def resolve_dtype(name: str | None, device: Any) -> Any:
    """float16 on CUDA, float32 elsewhere, unless ``name`` says otherwise."""
    import torch

    if name is None or name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    key = _DTYPES.get(name.lower())
    if key is None:
        raise ValidationError("dtype", f"unknown dtype {name!r}; use one of float32, float16, bfloat16")
    return getattr(torch, key)
