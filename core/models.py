"""Find, hash and load diffusers models, offline only."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provgen.core.errors import ModelLoadError, ValidationError

__all__ = ["LoadedModel", "resolve_model_path", "model_content_hash", "load_pipeline"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadedModel:
    model_id: str       # what the user asked for (folder path or hub id)
    path: Path          # the local folder it was loaded from
    content_hash: str   # sha256 over every file's relative path and sha256
    pipeline_class: str


def resolve_model_path(model: str, registered: Mapping[str, Any] | None = None) -> Path:
    """A local diffusers folder, a name registered by a plugin (``register_models``), or a hub id already in
    the local Hugging Face cache. Never downloads."""
    path = Path(model).expanduser()
    if not path.exists() and registered and model in registered:
        path = registered[model].item.path
    if path.exists():
        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"`model`: {model!r} is not a diffusers model folder (no model_index.json); "
                "pass a folder saved with `save_pretrained` or a hub id in the local cache"
            )
        return path.resolve()
    looks_like_path = model.startswith((".", "/", "~")) or os.sep in model.strip("/").split("/", 1)[-1]
    if looks_like_path or not _HUB_ID.match(model):
        raise ModelLoadError(f"`model`: folder {model!r} does not exist; check the path")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as error:  # huggingface_hub raises several types for "not cached"
        raise ModelLoadError(
            f"`model`: {model!r} is neither a local folder nor a model in the local Hugging Face cache "
            f"({type(error).__name__}). provgen never downloads at run time: fetch it first on a machine with "
            f"network access (`huggingface-cli download {model}`) or pass a local folder."
        ) from error


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_content_hash(folder: Path, cache_file: Path | None = None) -> str:
    """sha256 over ``relative path NUL file sha256 LF`` for every file, sorted.

    Per-file hashes are cached by (path, size, mtime) in ``cache_file`` so multi-GB models are read once.
    """
    cache: dict[str, str] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    digest = hashlib.sha256()
    changed = False
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))
    for file in files:
        stat = file.stat()
        real = file.resolve()
        key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
        file_hash = cache.get(key)
        if file_hash is None:
            file_hash = _file_sha256(real)
            cache[key] = file_hash
            changed = True
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file_hash}\n".encode())
    if changed and cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # the cache is an optimisation only
    return digest.hexdigest()


def load_pipeline(path: Path, *, device: Any, dtype: Any) -> Any:
    """``DiffusionPipeline.from_pretrained`` on a local folder, moved to ``device``."""
    _quiet_loading()
    from diffusers import DiffusionPipeline

    try:
        pipeline = DiffusionPipeline.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
        raise ModelLoadError(f"`model`: could not load {str(path)!r} with diffusers: {error}") from error
    try:
        pipeline = pipeline.to(device)
    except RuntimeError as error:
        raise ValidationError("device", f"could not move the model to {device}: {error}") from error
    return pipeline


def _quiet_loading() -> None:
    """No loading bars or library chatter: provgen's own progress bar is the one per generation."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
