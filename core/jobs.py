"""Batch jobs: one :class:`GenerationRequest` per line of a JSONL file, each with a deterministic job key.

A line is a JSON object with the fields of :class:`GenerationRequest` (``prompt``, ``model``, ``seed``,
``num_inference_steps``, ...), the CLI's short names where they differ (``steps``, ``guidance``, ``post``,
``lora``, ``controlnet``, ``control_guidance_start``/``_end``, ``ip_adapter``) and an optional client
``job_id``. ``output_dir`` is the batch's ``--out``, not a line's.

The job key is the client's ``job_id``, or ``sha256:`` + the sha256 of the line's canonical JSON (keys sorted,
no spaces): the same line always gets the same key, whatever its formatting, and any change of a value is a
new job. A line that is not a valid request still becomes a job (it fails with the reason, and is recorded),
so a batch never stops on one bad line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from provgen.core.errors import ProvgenError, ValidationError
from provgen.core.request import MAX_JOB_KEY, GenerationRequest, canonical_sha256, conditioning_options

__all__ = ["Job", "read_jobs", "make_jobs", "job_from_fields", "JOB_FIELDS"]

#: GenerationRequest fields a line may not set (the batch decides them)
_BATCH_OWNED = ("output_dir", "job_key")
#: line key -> GenerationRequest field, where the CLI's name differs
_ALIASES = {"steps": "num_inference_steps", "guidance": "guidance_scale", "post": "postprocess",
            "negative": "negative_prompt"}
#: conditioning shorthands, as on ``provgen generate`` (turned into ``plugin_options``)
_CONDITIONING = ("lora", "controlnet", "control_guidance_start", "control_guidance_end", "ip_adapter")
_REQUEST_FIELDS = tuple(f.name for f in fields(GenerationRequest) if f.name not in _BATCH_OWNED)
#: every key a line may have
JOB_FIELDS = ("job_id", *_REQUEST_FIELDS, *_ALIASES, *_CONDITIONING)


@dataclass(frozen=True)
class Job:
    """One job of a batch. ``request`` is ``None`` when the line is not a valid request (``error`` says why)."""

    #: 1-based line number in the JSONL file (position in the list for the Python API)
    line: int
    job_key: str
    request: GenerationRequest | None
    #: sha256 of what the job asks for (``GenerationRequest.content_sha256``; of the raw line when invalid)
    request_sha256: str
    #: why the line is not a valid request
    error: str | None = None
    #: what the line said, JSON (recorded with a failure)
    source: Any = None

    def record(self) -> dict[str, Any]:
        """What the registry keeps of the request: the request as JSON, or the raw line when it is invalid."""
        return self.request.to_dict() if self.request is not None else {"line": self.source}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def job_from_fields(line: int, data: Any, *, output_dir: Path, default_model: str | None = None,
                    user: str | None = None) -> Job:
    """The job of one parsed line (a JSON object); never raises for bad content (the job carries the error)."""
    if not isinstance(data, Mapping):
        digest = canonical_sha256(data)
        return Job(line, "sha256:" + digest, None, digest,
                   f"must be a JSON object with at least a `prompt`, got {type(data).__name__}", data)
    digest = canonical_sha256(data)
    job_id = data.get("job_id")
    if job_id is None:
        key = "sha256:" + digest
    elif not isinstance(job_id, str) or not job_id.strip() or len(job_id) > MAX_JOB_KEY or not job_id.isprintable():
        return Job(line, "sha256:" + digest, None, digest,
                   f"`job_id` must be a non-empty printable string of at most {MAX_JOB_KEY} "
                   f"characters, got {job_id!r}", dict(data))
    else:
        key = job_id
    try:
        request = _request(data, output_dir=output_dir, default_model=default_model, user=user, job_key=key)
        request.check_inputs()
    except ProvgenError as error:
        return Job(line, key, None, digest, str(error), dict(data))
    return Job(line, key, request, request.content_sha256(), None, dict(data))


def _request(data: Mapping[str, Any], *, output_dir: Path, default_model: str | None, user: str | None,
             job_key: str) -> GenerationRequest:
    unknown = sorted(k for k in data if k not in JOB_FIELDS)
    if unknown:
        owned = [k for k in unknown if k in _BATCH_OWNED]
        if owned:
            raise ValidationError(owned[0], "is set for the whole batch (`--out`), not per line")
        raise ValidationError(unknown[0], f"is not a request field; a line may have: {', '.join(JOB_FIELDS)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "job_id" or key in _CONDITIONING:
            continue
        name = _ALIASES.get(key, key)
        if name in values:
            raise ValidationError(key, f"and `{name}` are the same field; give one")
        values[name] = value
    if "prompt" not in values:
        raise ValidationError("prompt", "is missing; every line needs a prompt")
    for name in ("postprocess",):
        if isinstance(values.get(name), str):
            values[name] = (values[name],)
        elif isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    for name in ("init_image", "mask"):  # absolute, so workers that run elsewhere (another cwd) find them
        if isinstance(values.get(name), str) and values[name].strip():
            values[name] = Path(values[name]).expanduser().resolve()
    options = dict(values.pop("plugin_options", None) or {})
    if not isinstance(options, dict):
        raise ValidationError("plugin_options", "must be an object keyed by plugin name")
    options.update(conditioning_options(**{k: data[k] for k in _CONDITIONING if k in data}))
    values.setdefault("model", default_model)
    if values.get("user") is None and user is not None:
        values["user"] = user
    return GenerationRequest(**values, plugin_options=options, output_dir=output_dir, job_key=job_key)


def read_jobs(path: Path, *, output_dir: Path, default_model: str | None = None,
              user: str | None = None) -> list[Job]:
    """The jobs of a JSONL file (blank lines and lines starting with ``#`` are skipped).

    :raises ValidationError: the file cannot be read or is not UTF-8 (a bad *line* is a failed job instead).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError("JOBS", f"{str(path)!r} does not exist; give a JSONL file, one request per line"
                              ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValidationError("JOBS", f"cannot read {str(path)!r}: {error}") from None
    jobs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as error:
            jobs.append(Job(number, "sha256:" + _sha256(stripped), None, _sha256(stripped),
                            f"not valid JSON ({error.msg} at column {error.colno})", stripped))
            continue
        jobs.append(job_from_fields(number, data, output_dir=output_dir, default_model=default_model, user=user))
    return jobs


def make_jobs(requests: Iterable[GenerationRequest | Mapping[str, Any]], *, output_dir: Path,
              default_model: str | None = None, user: str | None = None) -> list[Job]:
    """Jobs of the Python API: each item a :class:`GenerationRequest` (its ``job_key``, if set, is the job key;
    its ``output_dir`` is replaced by the batch's) or a mapping like a JSONL line."""
    jobs = []
    for number, item in enumerate(requests, start=1):
        if isinstance(item, GenerationRequest):
            data = item.to_dict()
            for name in ("output_dir", "job_key", "plugin_options"):
                data.pop(name, None)
            data = {k: v for k, v in data.items() if v is not None}
            if item.plugin_options:
                data["plugin_options"] = dict(item.plugin_options)
            if item.job_key is not None:
                data["job_id"] = item.job_key
            jobs.append(job_from_fields(number, data, output_dir=output_dir, default_model=default_model,
                                        user=user))
        else:
            jobs.append(job_from_fields(number, item, output_dir=output_dir, default_model=default_model,
                                        user=user))
    return jobs
