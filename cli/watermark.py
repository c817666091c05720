"""``provgen watermark``: embed or read an invisible watermark directly (no registry, no signature)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from provgen.cli._common import emit_json, json_option, settings_from


@click.group()
def watermark() -> None:
    """Embed or read invisible watermarks (low-level; `provgen generate` and `provgen verify` do this for you)."""


def _methods() -> dict[str, Any]:
    from provgen.core.plugins import get_plugin_manager
    from provgen.core.registries import watermark_methods

    return {name: entry.item for name, entry in watermark_methods(get_plugin_manager()).items()}


def _method(name: str, option: str = "--method") -> Any:
    from provgen.core.errors import ValidationError

    methods = _methods()
    if name not in methods:
        raise ValidationError(option, f"unknown watermark method {name!r}; available: {', '.join(sorted(methods))}")
    return methods[name]


def _open(path: Path, option: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    from provgen.core.errors import InputImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InputImageError(
            f"`{option}`: {str(path)!r} is not a readable image ({type(error).__name__}: {error})") from error


@watermark.command("embed")
@click.argument("source", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--payload", required=True, help="Payload as hex (e.g. 0x1234abcd or 1234abcd), at most the "
              "method's payload_bits wide (48 bits for the built-in methods).")
@click.option("--method", "method_name", default=None,
              help="Watermark method (default: PROVGEN_WATERMARK, else provgen-wm/1).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="Quality for lossy output formats (JPEG, WebP).")
@json_option
def embed(source: Path, target: Path, payload: str, method_name: str | None, quality: int, as_json: bool) -> None:
    """Write a watermarked copy of IN to OUT (format from OUT's suffix; written atomically)."""
    from PIL import Image

    from provgen.core.errors import ValidationError

    method = _method(method_name or settings_from().watermark_method)
    value = _parse_payload(payload, method)
    fmt = Image.registered_extensions().get(target.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValidationError("OUT", f"cannot tell an image format from the suffix of {str(target)!r}; "
                              "use e.g. .png, .jpg or .webp")
    if not target.parent.is_dir():
        raise ValidationError("OUT", f"directory {str(target.parent)!r} does not exist")
    marked = method.embed(_open(source, "IN"), value)
    if fmt == "JPEG" and marked.mode not in ("RGB", "L"):
        marked = marked.convert("RGB")
    options: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            marked.save(handle, fmt, **options)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    data = {"file": str(target), "method": method.name, "payload": f"{value:0{-(-method.payload_bits // 4)}x}",
            "format": fmt}
    if as_json:
        emit_json(data)
    else:
        click.echo(f"{target}: embedded {data['payload']} with {method.name}")


def _parse_payload(text: str, method: Any) -> int:
    from provgen.core.errors import ValidationError

    digits = text.strip().lower().removeprefix("0x").replace("_", "")
    try:
        if not digits:
            raise ValueError
        value = int(digits, 16)
    except ValueError:
        raise ValidationError("--payload", f"{text!r} is not a hexadecimal number") from None
    if value.bit_length() > method.payload_bits:
        raise ValidationError("--payload", f"{text!r} is {value.bit_length()} bits wide; {method.name} carries "
                              f"{method.payload_bits} bits (at most {(1 << method.payload_bits) - 1:x})")
    return value


@watermark.command("decode")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--method", "method_name", default=None,
              help="Try only this method (default: every registered method, the first that reads wins).")
@json_option
def decode(files: tuple[Path, ...], method_name: str | None, as_json: bool) -> None:
    """Read the watermark of FILES. Exit status 0 when every file carries one, 1 otherwise."""
    # without --method: the methods that may be tried on any image, and the one new images are marked with
    # (the imwatermark-* methods have too few check bits to be tried blindly: auto_detect = False)
    marking = settings_from().watermark_method
    methods = ([_method(method_name)] if method_name
               else [m for m in _methods().values() if getattr(m, "auto_detect", True) or m.name == marking])
    results = []
    for path in files:
        result: dict[str, Any] = {"file": str(path), "found": False, "payload": None, "method": None,
                                  "confidence": None}
        try:
            image = _open(path, "FILES")
        except Exception as error:  # one unreadable file does not stop the others
            result["error"] = str(error)
            results.append(result)
            continue
        for method in methods:
            reading = method.decode(image)
            if reading is not None:
                result.update(found=True, payload=f"{reading.payload:0{-(-method.payload_bits // 4)}x}",
                              method=reading.method, confidence=round(reading.confidence, 4))
                break
        results.append(result)
    if as_json:
        emit_json(results)
    else:
        for r in results:
            if r["found"]:
                click.echo(f"{r['file']}: {r['payload']} ({r['method']}, confidence {r['confidence']})")
            elif "error" not in r:
                click.echo(f"{r['file']}: no watermark")
    for r in results:
        if "error" in r:
            click.echo(f"error: {r['file']}: {r['error']}", err=True)
    sys.exit(0 if all(r["found"] for r in results) else 1)


COMMANDS = [watermark]
