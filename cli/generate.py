"""``provgen generate``."""

from __future__ import annotations

from pathlib import Path

import click

from provgen.cli._common import emit_json, json_option, settings_from, signing_options
from provgen.core.request import OUTPUT_FORMATS, GenerationRequest, conditioning_options


@click.command()
@click.argument("prompt")
@click.option("--model", "-m", default=None,
              help="A model name from `provgen models list`, a local diffusers folder, or a hub id already in the "
                   "local Hugging Face cache (default: PROVGEN_MODEL, else `shapes`, the small model shipped with "
                   "provgen).")
@click.option("--negative-prompt", "-n", default=None, help="What to steer away from.")
@click.option("--width", "-W", type=int, default=None, help="Width in pixels (multiple of 8; default: model's).")
@click.option("--height", "-H", type=int, default=None, help="Height in pixels (multiple of 8; default: model's).")
@click.option("--steps", "num_inference_steps", type=int, default=30, show_default=True,
              help="Number of denoising steps.")
@click.option("--guidance", "--cfg", "guidance_scale", type=float, default=None,
              help="Classifier-free guidance scale.  [default: the model's recommended scale (`provgen models "
                   "list`), else 7.5]")
@click.option("--seed", type=int, default=None, help="Random seed (default: random, recorded).")
@click.option("--num-images", "-N", type=int, default=1, show_default=True, help="Images to generate.")
@click.option("--scheduler", "-s", default=None,
              help="Scheduler short name or class name (see `provgen schedulers list --model M`).")
@click.option("--out", "-o", "output_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out"),
              show_default=True, help="Folder to write the signed images to.")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default="png", show_default=True,
              help="Output file format.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG/WebP quality.")
@click.option("--post", "postprocess", multiple=True, metavar="NAME[:ARGS]",
              help="Post-processor to apply before signing (repeatable, applied in order): resize:1024x1024, "
                   "resize:2x, upscale:2, sharpen:0.5, color:saturation=1.1,contrast=1.05, or one a plugin adds.")
@click.option("--init-image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from this image (PNG, JPEG or WebP): img2img, or inpainting with --mask. It is recorded as "
                   "the parent of the output (C2PA parentOf ingredient, registry lineage).")
@click.option("--strength", type=float, default=None,
              help="How much of --init-image is re-noised, in (0, 1]: low keeps it, 1 ignores it.  [default: 0.8]")
@click.option("--mask", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Inpainting mask, the size of --init-image: white areas are repainted, black kept.")
@click.option("--lora", multiple=True, metavar="PATH[:SCALE]",
              help="LoRA weights to apply (repeatable): a .safetensors file or a folder holding one, with an optional "
                   "scale from -10 to 10 (default 1). Its sha256 is recorded. Needs: pip install 'provgen[lora]'.")
@click.option("--controlnet", multiple=True, metavar="MODEL=IMAGE[:SCALE]",
              help="Condition on IMAGE with the ControlNet in the local folder MODEL (repeatable; scale 0-10, default "
                   "1). The image is recorded as an input (C2PA inputTo ingredient, registry lineage).")
@click.option("--control-guidance-start", type=float, default=None,
              help="Fraction of the steps after which the ControlNet(s) start to apply, in [0, 1).  [default: 0]")
@click.option("--control-guidance-end", type=float, default=None,
              help="Fraction of the steps after which the ControlNet(s) stop applying, in (0, 1].  [default: 1]")
@click.option("--ip-adapter", multiple=True, metavar="PATH=IMAGE[:SCALE]",
              help="Use IMAGE as a reference through the IP-Adapter at PATH (weights .safetensors with an "
                   "image_encoder/ folder beside them, or a folder holding both; scale 0-10, default 1). The image "
                   "is recorded as an input.")
@click.option("--user", default=None, help="Requester recorded in the registry (default: PROVGEN_USER or login).")
@click.option("--device", default=None, help="torch device: cuda, cuda:N, mps or cpu (default: best available).")
@click.option("--dtype", default=None, help="float32, float16 or bfloat16 (default: float16 on CUDA).")
@signing_options
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def generate(prompt: str, model: str | None, negative_prompt: str | None, width: int | None, height: int | None,
             num_inference_steps: int, guidance_scale: float, seed: int | None, num_images: int,
             scheduler: str | None, output_dir: Path, fmt: str, quality: int, postprocess: tuple[str, ...],
             init_image: Path | None, strength: float | None, mask: Path | None, lora: tuple[str, ...],
             controlnet: tuple[str, ...], control_guidance_start: float | None,
             control_guidance_end: float | None, ip_adapter: tuple[str, ...], user: str | None,
             device: str | None, dtype: str | None, cert: Path | None, key: Path | None,
             as_json: bool, quiet: bool) -> None:
    """Generate images for PROMPT; each is watermarked, C2PA-signed, registered and written atomically."""
    from provgen.core.engine import Engine

    settings = settings_from(cert_path=cert, key_path=key)
    request = GenerationRequest(
        prompt=prompt, model=model, negative_prompt=negative_prompt, width=width, height=height,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
        num_images=num_images, scheduler=scheduler, output_dir=output_dir, format=fmt, quality=quality,
        postprocess=postprocess, init_image=init_image, strength=strength, mask=mask, user=user,
        plugin_options=conditioning_options(lora=lora or None, controlnet=controlnet or None,
                                            control_guidance_start=control_guidance_start,
                                            control_guidance_end=control_guidance_end, ip_adapter=ip_adapter or None),
    )
    request.check_inputs()  # fail on bad fields before torch is even imported
    engine = Engine(settings, device=device, dtype=dtype, progress=False if (as_json or quiet) else None)
    try:
        result = engine.generate(request)
    finally:
        engine.close()
    if as_json:
        emit_json(result.to_dict())
        return
    if quiet:
        return
    for image in result.images:
        click.echo(f"{image.path}  asset={image.asset_id}  watermark={image.watermark_id:012x}  seed={image.seed}")


COMMANDS = [generate]
