"""Tiny random Stable Diffusion 1.x / SDXL pipelines built offline (tests, benchmarks, the README demo).

The weights are random: images are noise-like, but every code path is that of a real model
(``save_pretrained`` then ``DiffusionPipeline.from_pretrained``). Run
``python -m provgen.core.tiny_models PATH [--sdxl]`` to write one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["tiny_sd_pipeline", "tiny_sdxl_pipeline", "save_tiny_model"]


def _tokenizer() -> Any:
    """Byte-level CLIP BPE: any text tokenizes, no download (2 specials + 512 byte tokens + 3 merges)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [c + "</w>" for c in alphabet]
    tokens += ["ab", "cd</w>", "abcd</w>"]
    with tempfile.TemporaryDirectory() as folder:
        vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        Path(vocab).write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        Path(merges).write_text("#version: 0.2\na b\nc d</w>\nab cd</w>\n")
        # transformers 5: paths are positional; vocab_file=/merges_file= are silently ignored.
        return CLIPTokenizer(vocab, merges, model_max_length=77)


def _text_config(**overrides: Any) -> Any:
    from transformers import CLIPTextConfig

    config = dict(vocab_size=1000, bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                  intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77)
    return CLIPTextConfig(**{**config, **overrides})


def _unet(sdxl: bool) -> Any:
    from diffusers import UNet2DConditionModel

    kw: dict[str, Any] = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                              block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    if not sdxl:
        return UNet2DConditionModel(**kw, cross_attention_dim=32, attention_head_dim=8)
    return UNet2DConditionModel(**kw, attention_head_dim=(2, 4), use_linear_projection=True,
                                transformer_layers_per_block=(1, 2), cross_attention_dim=64,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=80)


def _vae() -> Any:
    from diffusers import AutoencoderKL

    blocks = (16, 16, 32, 32)  # vae_scale_factor 8, like real SD
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=blocks,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=16, sample_size=256)


def tiny_sd_pipeline(seed: int = 0) -> Any:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = _unet(False)
    torch.manual_seed(seed)
    vae = _vae()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_text_config())
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=_tokenizer(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)


def tiny_sdxl_pipeline(seed: int = 0) -> Any:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = _unet(True)
    torch.manual_seed(seed)
    vae = _vae()
    torch.manual_seed(seed)
    te1 = CLIPTextModel(_text_config(projection_dim=32))
    torch.manual_seed(seed + 1)
    te2 = CLIPTextModelWithProjection(_text_config(projection_dim=32))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=te1, text_encoder_2=te2,
                                     tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), scheduler=scheduler,
                                     image_encoder=None, feature_extractor=None, add_watermarker=False)


def save_tiny_model(path: Path, *, sdxl: bool = False, seed: int = 0) -> Path:
    """Build and ``save_pretrained`` a tiny random pipeline into ``path``."""
    pipeline = tiny_sdxl_pipeline(seed) if sdxl else tiny_sd_pipeline(seed)
    pipeline.save_pretrained(str(path))
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="folder to write the diffusers model to")
    parser.add_argument("--sdxl", action="store_true", help="build an SDXL pipeline instead of SD 1.x")
    args = parser.parse_args()
    save_tiny_model(args.path, sdxl=args.sdxl)
    print(f"wrote a tiny random {'SDXL' if args.sdxl else 'SD 1.x'} model to {args.path}")


if __name__ == "__main__":
    main()
