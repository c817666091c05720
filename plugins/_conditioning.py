"""Shared helpers of the conditioning plugins (``lora``, ``controlnet``, ``ip_adapter``); not a plugin itself.

Spec parsing (``PATH[:SCALE]``, ``MODEL=IMAGE[:SCALE]``), input images read once (the bytes recorded are
the bytes used), file hashing, and a per-pipeline cache of loaded auxiliary models.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from provgen.core.errors import ValidationError

__all__ = ["InputImage", "split_scale", "split_pair", "check_scale", "spec_list", "sha256_bytes",
           "safetensors_keys", "cached_model", "call_accepts"]

#: formats C2PA can embed as an ingredient, by Pillow format name
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def spec_list(value: Any, field: str, option: str) -> list[str]:
    """A plugin option given as one spec string or a list of them."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValidationError(field, f"expected {option} specs as a string or a list of strings, got {value!r}")
    return [item.strip() for item in value]


def split_scale(text: str, field: str, option: str, spec: str) -> tuple[str, float | None]:
    """``PATH[:SCALE]`` -> ``(PATH, SCALE or None)``. A path that exists with its colon is taken as it is."""
    head, sep, tail = text.rpartition(":")
    if not sep or not head or Path(text).expanduser().exists():
        return text, None
    try:
        scale = float(tail)
    except ValueError:
        raise ValidationError(field, f"`{option} {spec}`: scale {tail!r} is not a number "
                                     f"(expected {_FORMS.get(option, 'PATH[:SCALE]')})") from None
    return head, scale


def split_pair(spec: str, field: str, option: str) -> tuple[str, str, float | None]:
    """``MODEL=IMAGE[:SCALE]`` -> ``(MODEL, IMAGE, SCALE or None)``; the first ``=`` separates."""
    model, sep, rest = spec.partition("=")
    if not sep or not model.strip() or not rest.strip():
        raise ValidationError(field, f"`{option} {spec}`: expected {_FORMS.get(option, 'MODEL=IMAGE[:SCALE]')}")
    image, scale = split_scale(rest.strip(), field, option, spec)
    return model.strip(), image, scale


_FORMS = {"--lora": "PATH[:SCALE]", "--controlnet": "MODEL=IMAGE[:SCALE]", "--ip-adapter": "PATH=IMAGE[:SCALE]"}


def check_scale(scale: float, low: float, high: float, field: str, option: str, spec: str) -> float:
    if not math.isfinite(scale) or not low <= scale <= high:
        raise ValidationError(field, f"`{option} {spec}`: scale must be a number from {low:g} to {high:g}, "
                                     f"got {scale:g}")
    return scale


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safetensors_keys(file: Path, field: str, option: str, spec: str) -> list[str]:
    """Tensor names from a safetensors header (8-byte length + JSON), without loading any tensor."""
    try:
        with file.open("rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= MAX_HEADER:
                raise ValueError("no safetensors header")
            header = json.loads(handle.read(size))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except OSError as error:
        raise ValidationError(field, f"`{option} {spec}`: cannot read {str(file)!r}: {error.strerror}") from error
    except ValueError as error:  # includes JSON and UTF-8 errors
        raise ValidationError(field, f"`{option} {spec}`: {str(file)!r} is not a safetensors file ({error})") from error
    return [key for key in header if key != "__metadata__"]


class InputImage:
    """A conditioning image, read once: the exact bytes recorded (hash, C2PA ingredient) are the bytes used."""

    def __init__(self, path: Path | str, field: str, option: str, spec: str) -> None:
        from PIL import Image, UnidentifiedImageError

        self.path = Path(path).expanduser()
        where = f"`{option} {spec}`: image {str(path)!r}"
        if not self.path.is_file():
            raise ValidationError(field, f"{where} does not exist or is not a file")
        try:
            self.data = self.path.read_bytes()
            with Image.open(io.BytesIO(self.data)) as image:
                image.load()
                self.format = image.format or ""
                self.image = image.convert("RGB")
        except OSError as error:  # includes Pillow's "cannot identify image file"
            kind = "an image Pillow can read" if isinstance(error, UnidentifiedImageError) else "readable"
            raise ValidationError(field, f"{where} is not {kind}: {error}") from error
        if self.format not in FORMATS:
            raise ValidationError(field, f"{where} is a {self.format or 'unknown'} image; use PNG, JPEG or WebP "
                                         "(formats a C2PA manifest can record as an ingredient)")
        self.sha256 = sha256_bytes(self.data)

    @property
    def mime(self) -> str:
        return FORMATS[self.format]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "sha256": self.sha256, "format": self.format.lower(),
                "width": self.image.width, "height": self.image.height}


def call_accepts(pipeline: Any, name: str) -> bool:
    import inspect

    return name in inspect.signature(pipeline.__call__).parameters


# ------------------------------------------------------------------------------------------------------------
# Loaded auxiliary models (ControlNets, image encoders), cached per base pipeline: the key object is the
# pipeline's UNet, shared by every ``from_pipe`` variant, so the cache lives exactly as long as the engine
# keeps that pipeline (``Engine.close`` or its LRU eviction frees both).

_CACHE: weakref.WeakKeyDictionary[Any, OrderedDict[Hashable, Any]] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
MAX_CACHED_PER_PIPELINE = 4


def cached_model(owner: Any, key: Hashable, load: Callable[[], Any]) -> Any:
    """``load()`` once per ``(owner, key)``; at most :data:`MAX_CACHED_PER_PIPELINE` models per owner."""
    with _CACHE_LOCK:
        models = _CACHE.setdefault(owner, OrderedDict())
        if key in models:
            models.move_to_end(key)
            return models[key]
    model = load()
    with _CACHE_LOCK:
        models = _CACHE.setdefault(owner, OrderedDict())
        models[key] = model
        while len(models) > MAX_CACHED_PER_PIPELINE:
            models.popitem(last=False)
    return model
