"""Shapes: a small text-to-image diffusion model of our own (issue 6).

Captions come from a closed grammar ("a small red circle on a blue background, top left"); images are
rendered anti-aliased shapes. ``dataset`` renders and samples prompts, ``checker`` reads colour, background,
shape class and position back from an image by code, ``train`` trains a standard diffusers
StableDiffusionPipeline folder (``MODEL_DIR``), ``evaluate`` measures prompt adherence.
"""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"
