"""Measure prompt adherence of the shapes model by code.

    python -m provgen.plugins.shapes.evaluate [--model DIR] [--n 500] [--grid PATH] [--seed S]

Loads the folder with the ordinary ``StableDiffusionPipeline.from_pretrained(..., local_files_only=True)``,
draws ``n`` random prompts (``random.Random(seed)``), generates each with its own fixed-seed generator
(20 DPM++ steps, guidance 3: the scale the model is registered with), reads the images back with
``checker`` and prints JSON accuracies.

``--vae-ceiling`` instead measures what the VAE alone allows: the clean renders of the same prompts, encoded
and decoded (posterior mode), read by the same checker, with shape class per shape. A diffusion model in this
latent space cannot do better than that.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from provgen.plugins.shapes import MODEL_DIR
from provgen.plugins.shapes.checker import Tally, check
from provgen.plugins.shapes.dataset import sample_prompt


def load(model: Path):
    import torch  # noqa: F401
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, captions, seeds, steps=20, guidance=3.0, size=64):
    import torch

    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return pipe(
        captions, num_inference_steps=steps, guidance_scale=guidance, generator=gens, height=size, width=size
    ).images


def vae_ceiling(pipe, prompts, batch: int = 50) -> dict:
    """Checker accuracies on VAE round trips of the prompts' clean renders (the latent space's ceiling)."""
    import numpy as np
    import torch
    from PIL import Image

    from provgen.plugins.shapes.dataset import render

    tally = Tally()
    with torch.no_grad():
        for start in range(0, len(prompts), batch):
            chunk = prompts[start : start + batch]
            x = torch.from_numpy(np.stack([np.asarray(render(s, 64), dtype=np.float32) for _, s in chunk]))
            x = x.permute(0, 3, 1, 2) / 127.5 - 1.0
            rec = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample
            arr = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for (_, spec), a in zip(chunk, arr, strict=True):
                tally.add(check(Image.fromarray(a), spec), spec)
    ceiling = {**tally.accuracy(), "shape_by_class": tally.shape_by_class()}
    return {"vae_ceiling": ceiling, "n": tally.n, "n_position": tally.n_position}


def save_grid(path: Path, images, captions, cols: int = 4, scale: int = 3) -> None:
    import textwrap

    from PIL import Image, ImageDraw

    side = images[0].width * scale
    text_h = 40
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * side, rows * (side + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (im, cap) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % cols) * side, (i // cols) * (side + text_h)
        grid.paste(im.resize((side, side), Image.NEAREST), (x, y))
        draw.multiline_text((x + 3, y + side + 2), "\n".join(textwrap.wrap(cap, 34)[:3]), fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid", type=Path, default=None, help="write a PNG grid of the first 16 samples here")
    ap.add_argument("--vae-ceiling", action="store_true", help="measure VAE round trips of clean renders instead")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    pipe = load(args.model)
    rng = random.Random(args.seed)
    prompts = [sample_prompt(rng) for _ in range(args.n)]
    if args.vae_ceiling:
        print(json.dumps({**vae_ceiling(pipe, prompts), "seed": args.seed, "model": str(args.model)}, indent=1))
        return
    tally = Tally()
    grid_imgs, grid_caps = [], []
    failures = []
    t0 = time.time()
    for start in range(0, args.n, args.batch):
        chunk = prompts[start : start + args.batch]
        images = generate(
            pipe,
            [c for c, _ in chunk],
            [args.seed * 100000 + start + i for i in range(len(chunk))],
            steps=args.steps,
            guidance=args.guidance,
        )
        for (cap, spec), im in zip(chunk, images, strict=True):
            r = check(im, spec)
            tally.add(r, spec)
            if not all(v for v in r.values() if v is not None) and len(failures) < 20:
                failures.append({"caption": cap, **{k: v for k, v in r.items() if v is not None}})
            if len(grid_imgs) < 16:
                grid_imgs.append(im)
                grid_caps.append(cap)
    seconds = time.time() - t0
    # single-image latency: one prompt, 20 steps, guidance on (batch 2 through the UNet)
    cap, spec = prompts[0]
    generate(pipe, [cap], [0], steps=args.steps, guidance=args.guidance)
    lat = []
    for i in range(3):
        t = time.time()
        generate(pipe, [cap], [i], steps=args.steps, guidance=args.guidance)
        lat.append(time.time() - t)
    result = {
        "n": args.n,
        **tally.accuracy(),
        "n_position": tally.n_position,
        "shape_by_class": tally.shape_by_class(),
        "seconds_per_image_batched": round(seconds / args.n, 4),
        "seconds_single_image": round(min(lat), 3),
        "steps": args.steps,
        "guidance": args.guidance,
        "threads": args.threads,
        "seed": args.seed,
        "model": str(args.model),
    }
    if args.grid:
        save_grid(args.grid, grid_imgs, grid_caps)
    print(json.dumps(result, indent=1))
    print(json.dumps({"some_failures": failures[:10]}, indent=1))


if __name__ == "__main__":
    main()
