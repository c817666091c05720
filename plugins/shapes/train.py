"""Train the shapes text-to-image model (a standard diffusers StableDiffusionPipeline folder).

    python -m provgen.plugins.shapes.train [--out DIR] [--steps N] [--vae-steps N] [--seed S]

Two phases, both on data rendered on the fly from ``dataset`` (nothing on disk):
1. a small AutoencoderKL (x4: 64 px -> 16x16x4 latents), reconstruction + tiny KL; then its encoder is frozen,
   its latent scaling factor is measured and written into the VAE config (the decoder keeps being refined on
   the frozen latents during phase 2, every second step, which leaves the latent space unchanged);
2. a UNet2DConditionModel on the 16x16x4 latents and a 2-layer CLIPTextModel trained jointly, v-prediction
   on the scaled-linear DDPM schedule rescaled to zero terminal SNR (the one DPMSolverMultistepScheduler samples
   with, "trailing" timesteps), plain v-MSE loss, 10% empty captions for classifier-free guidance, AdamW with
   warm-up + cosine decay, EMA of UNet and text-encoder weights.
Checkpoints (full pipeline folders, EMA weights) go to ``OUT/../model_ckpt`` every ``--ckpt-every`` steps,
and the final one to ``OUT``, with ``training.json``.

``--init DIR`` continues from a saved pipeline folder instead (phase 2 only: tokenizer, text encoder, UNet and
VAE are loaded from DIR, the VAE encoder stays frozen and its scaling factor is kept, so the latent space does
not move); the optimiser state is not saved in a folder, so the run starts a fresh AdamW with its own warm-up
and cosine decay. DIR's ``training.json`` is kept under ``init`` in the new one, so the whole chain of runs
and commands is recorded with the weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from provgen.plugins.shapes import MODEL_DIR
from provgen.plugins.shapes.dataset import WORDS, render, sample_prompt

SIZE = 64
MAX_LEN = 32
# Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed"): the plain
# scaled-linear schedule keeps sqrt(alpha_bar) = 0.068 of the image at t = 999, and on 16x16 latents that leak
# carries the layout (a 7x7-cell shape is visible through the noise at SNR ~0.5), so a model trained on it reads
# the shape's position off the noise and never learns it from the text (the first model: position 9.8%, about
# chance). Rescaled to zero terminal SNR the last step holds no image at all; with v-prediction the model must
# then predict the whole image (v = -x0) from the caption alone. Sampling starts at t = 999 ("trailing").
SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    rescale_betas_zero_snr=True,
)
PREDICTION = "v_prediction"


# ----------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer() -> Any:
    """CLIP-format BPE: byte-level fallback (any text tokenizes) + merges that make every grammar word ONE token.

    The merges are learned with the ``tokenizers`` BPE trainer on the grammar's word list, so they are
    consistent; the result is written as vocab.json + merges.txt and loaded with CLIPTokenizer (paths
    positional: transformers 5 ignores vocab_file=/merges_file=).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=4000, min_frequency=1, end_of_word_suffix="</w>", show_progress=False, special_tokens=[]
    )
    bpe.train_from_iterator([" ".join(WORDS)] * 10, trainer)
    merges = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in json.loads(bpe.to_str())["model"]["merges"]
    ]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [c + "</w>" for c in alphabet]
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    with tempfile.TemporaryDirectory() as folder:
        vocab, merges_path = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        Path(vocab).write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
        Path(merges_path).write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        tok = CLIPTokenizer(vocab, merges_path, model_max_length=MAX_LEN)
    for w in WORDS:
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) == 1, (w, ids, tok.convert_ids_to_tokens(ids))
    return tok


# ----------------------------------------------------------------------------------------------- models
def build_models(tok: Any, seed: int) -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=1,
        sample_size=SIZE,
        mid_block_add_attention=False,
    )
    # GroupNorm with one channel per group erases flat colours (these images are mostly flat), hence 1 group;
    # start the posterior log-variance low so early latents are not drowned in sampling noise
    with torch.no_grad():
        vae.quant_conv.bias[4:].fill_(-6.0)
    torch.manual_seed(seed + 1)
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=MAX_LEN,
        )
    )
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 4,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=32,
        norm_num_groups=8,
    )
    return vae, te, unet


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------- data
def batch(rng: random.Random, n: int, p_drop: float = 0.0) -> tuple[list[str], torch.Tensor]:
    caps, imgs = [], []
    for _ in range(n):
        cap, spec = sample_prompt(rng)
        imgs.append(np.asarray(render(spec, SIZE), dtype=np.float32))
        caps.append("" if rng.random() < p_drop else cap)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return caps, x


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


# ----------------------------------------------------------------------------------------------- phases
def train_vae(vae: Any, steps: int, rng: random.Random, log: list, bs: int = 12) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0, betas=(0.9, 0.99))
    vae.train()
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 2e-3, 20)
        _, x = batch(rng, bs)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        l_rec = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        kl = post.kl().mean()
        loss = l_rec + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"vae {step:5d} rec {l_rec.item():.5f} kl {kl.item():.1f} {time.time() - t0:.0f}s", flush=True)
            log.append(
                {
                    "step": step,
                    "rec": round(l_rec.item(), 6),
                    "kl": round(kl.item(), 2),
                    "t": round(time.time() - t0, 1),
                }
            )


def freeze_encoder(vae: Any) -> torch.optim.Optimizer:
    """Freeze the VAE encoder (the latent space the UNet learns must not move); return the decoder's optimiser."""
    vae.eval()
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    dec_params = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
    return torch.optim.AdamW(dec_params, lr=5e-4, weight_decay=0.0, betas=(0.9, 0.99))


def load_models(folder: Path) -> tuple[Any, Any, Any, Any]:
    """Tokenizer, VAE, text encoder and UNet of a saved pipeline folder (to continue training it).

    The tokenizer must be the folder's own: ``build_tokenizer`` can number two tie-breaking sub-word merges
    differently from run to run (the grammar words themselves are single tokens either way).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": True}
    tok = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer", **kw)
    vae = AutoencoderKL.from_pretrained(str(folder), subfolder="vae", **kw)
    te = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder", **kw)
    unet = UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet", **kw)
    return tok, vae, te, unet


@torch.no_grad()
def measure_scale(vae: Any, rng: random.Random) -> float:
    lat = torch.cat([vae.encode(batch(rng, 64)[1]).latent_dist.sample() for _ in range(8)])
    return float(1.0 / lat.std())


def save_pipeline(out: Path, tok: Any, te: Any, unet: Any, vae: Any) -> None:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    sched = DPMSolverMultistepScheduler(
        **SCHEDULE,
        algorithm_type="dpmsolver++",
        solver_order=2,
        prediction_type=PREDICTION,
        timestep_spacing="trailing",
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODEL_DIR)
    ap.add_argument("--steps", type=int, default=2600, help="UNet steps")
    ap.add_argument("--vae-steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop the UNet phase after this wall time")
    ap.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="stop the UNet phase after this many steps (the learning-rate schedule still spans --steps): "
        "repeats a run that --max-minutes stopped",
    )
    ap.add_argument("--init", type=Path, default=None, help="continue from this pipeline folder (skips the VAE phase)")
    ap.add_argument("--warmup", type=int, default=200, help="UNet learning-rate warm-up steps")
    args = ap.parse_args()
    if args.init is not None and not (args.init / "model_index.json").is_file():
        ap.error(f"--init {args.init}: not a saved pipeline folder (no model_index.json); give one train wrote")
    if not 0 <= args.stop_after <= args.steps:
        ap.error(f"--stop-after {args.stop_after}: must be from 1 to --steps ({args.steps}), or 0 for no stop")

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t_start = time.time()
    info: dict[str, Any] = {
        "seed": args.seed,
        "steps": args.steps,
        "vae_steps": args.vae_steps,
        "batch_size": args.bs,
        "lr": args.lr,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "command": "python -m provgen.plugins.shapes.train "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    print(json.dumps(info), flush=True)

    if args.init is not None:
        tok, vae, te, unet = load_models(args.init)
        dec_opt = freeze_encoder(vae)
        scale = float(vae.config.scaling_factor)
        record = args.init / "training.json"  # absent in a folder this script did not write
        info["init"] = json.loads(record.read_text()) if record.is_file() else {"folder": str(args.init)}
        info["vae_seconds"] = 0.0
    else:
        tok = build_tokenizer()
        vae, te, unet = build_models(tok, args.seed)
        vae_log: list = []
        train_vae(vae, args.vae_steps, rng, vae_log)
        dec_opt = freeze_encoder(vae)
        scale = measure_scale(vae, rng)
        vae.register_to_config(scaling_factor=scale)
        info["vae_log"] = vae_log
        info["vae_seconds"] = round(time.time() - t_start, 1)
    info["scaling_factor"] = scale
    info["params"] = {"vae": n_params(vae), "text_encoder": n_params(te), "unet": n_params(unet)}
    print(info["params"], f"scaling_factor {scale:.4f}", flush=True)

    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler(**SCHEDULE)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_unet, ema_te = copy.deepcopy(unet).eval(), copy.deepcopy(te).eval()
    ema_unet.requires_grad_(False)
    ema_te.requires_grad_(False)
    ema_pairs = [(e, p) for e, p in zip(list(ema_unet.parameters()) + list(ema_te.parameters()), params, strict=True)]
    unet.train()
    te.train()
    log: list = []
    t1 = time.time()
    running = dec_running = None
    ckpt_dir = args.out.parent / (args.out.name + "_ckpt")
    step = 0
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        caps, x = batch(rng, args.bs, p_drop=0.1)
        with torch.no_grad():
            lat = vae.encode(x).latent_dist.sample() * scale
            ids = tok(caps, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
        noise = torch.randn_like(lat)
        t = torch.randint(0, 1000, (lat.shape[0],))
        noisy = noise_sched.add_noise(lat, noise, t)
        cond = te(ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        # plain v-MSE: equals (1 + SNR) x the x0 error, so the zero-SNR steps (where layout is decided) keep
        # full weight; min-SNR weights for v, min(SNR, 5) / (SNR + 1), would give them none
        loss = F.mse_loss(pred, noise_sched.get_velocity(lat, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in ema_pairs:
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        if step % 2 == 0:  # keep refining the decoder on the frozen encoder's latents (latent space unchanged)
            rec = vae.decode(lat[:12] / scale).sample
            dec_loss = F.mse_loss(rec, x[:12]) + 0.5 * F.l1_loss(rec, x[:12])
            dec_opt.zero_grad(set_to_none=True)
            dec_loss.backward()
            dec_opt.step()
            dec_running = dec_loss.item() if dec_running is None else 0.95 * dec_running + 0.05 * dec_loss.item()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        elapsed = time.time() - t1
        if step % 50 == 0:
            print(
                f"unet {step:6d} loss {running:.4f} lr {opt.param_groups[0]['lr']:.2e} {elapsed:.0f}s "
                f"({elapsed / (step + 1):.2f}s/it) dec {dec_running:.4f}",
                flush=True,
            )
        if step % 250 == 0:
            log.append(
                {
                    "step": step,
                    "loss_ema": round(running, 5),
                    "decoder_rec": round(dec_running, 5),
                    "t": round(elapsed, 1),
                }
            )
        stop = (args.max_minutes and elapsed > args.max_minutes * 60) or step + 1 == args.stop_after
        if (step + 1) % args.ckpt_every == 0 or stop:
            save_pipeline(ckpt_dir / f"step{step + 1:06d}", tok, ema_te, ema_unet, vae)
            print(f"checkpoint step {step + 1}", flush=True)
        if stop:
            print("stopped early (--max-minutes or --stop-after)", flush=True)
            break
    info["steps_done"] = step + 1
    info["unet_log"] = log
    info["final_loss_ema"] = running
    info["final_decoder_rec"] = dec_running
    info["unet_seconds"] = round(time.time() - t1, 1)
    info["wall_seconds"] = round(time.time() - t_start, 1)
    save_pipeline(args.out, tok, ema_te, ema_unet, vae)
    if args.init is not None:  # keep the tokenizer files byte-identical (a loaded tokenizer saves extra keys)
        shutil.copytree(args.init / "tokenizer", args.out / "tokenizer", dirs_exist_ok=True)
    (args.out / "training.json").write_text(json.dumps(info, indent=1))
    print(f"done in {info['wall_seconds']}s -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
