"""Watermark robustness, quality, speed and false positives: provgen-wm/1 vs provgen-grid/1 (vs imwatermark).

    python benchmarks/watermark_robustness.py                 # held-out set, 1024 px, all attacks
    python benchmarks/watermark_robustness.py --set dev       # the images the parameters were tuned on
    python benchmarks/watermark_robustness.py --size 512 --n 4
    python benchmarks/watermark_robustness.py --fp 10000      # false detections on unmarked images
    python benchmarks/watermark_robustness.py --sample 300    # provgen-wm/1 on 300 held-out images, with bounds

Images: scikit-image's bundled photographs (``skimage.data``, no download; the dev extra installs it), a
centre square of each resized to the benchmark size, plus four deterministic synthetic generators (a 1/f
colour field, a sky/ground scene with flat shapes, a Mandelbrot "natural" image and saturated shapes on a
gradient). The dev set (astronaut, coffee, rocket + seeds 0-2) is what provgen-wm/1 was tuned on; the
held-out set (chelsea, hubble_deep_field, immunohistochemistry, retina + seeds >= 1000) is never used for
tuning. Cells are "recovery rate / mean bit accuracy": recovery is the exact 48-bit payload; bit accuracy
compares the 48 payload bits of what was read (0.5 when nothing was). Visibility: CIEDE2000 colour
difference of the mean colour of every 8 x 8 block, over the flat blocks (luma std < 2) of all images.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from provgen.provenance.watermark import GridWatermark
from provgen.provenance.wm1 import RobustWatermark

# ------------------------------------------------------------------------------------------------ images


def pink(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :])
    f[0, 0] = 1
    chans = []
    for _ in range(3):
        spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f**1.1
        spec[0, 0] = 0
        x = np.fft.irfft2(spec, s=(h, w))
        chans.append(x / x.std())
    x = np.stack(chans, -1) @ (rng.normal(size=(3, 3)) * 0.3 + np.eye(3))
    x = 128 + 45 * x / x.std() + rng.uniform(-40, 40, 3) + rng.normal(0, 2, x.shape)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def scene(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, h)[:, None, None]
    img = np.repeat(np.array([90, 150, 230]) * (1 - t) + np.array([200, 220, 250]) * t, w, axis=1)
    horizon = int(h * rng.uniform(0.45, 0.7))
    img[horizon:] = np.asarray(pink(w, h, seed + 7), dtype=np.float64)[horizon:] * 0.6 + [40, 60, 20]
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0, r = rng.integers(0, w), rng.integers(0, h), rng.integers(w // 16, w // 4)
        draw.ellipse((int(x0), int(y0), int(x0 + r), int(y0 + r)), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(0.7))


def natural(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    cx, cy, s = rng.uniform(-0.8, -0.4), rng.uniform(-0.3, 0.3), rng.uniform(0.4, 1.2)
    m = np.asarray(Image.effect_mandelbrot((w, h), (cx - s, cy - s * h / w, cx + s, cy + s * h / w), 120),
                   dtype=np.float64)[..., None] / 255
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * xx[..., None] + rng.uniform(-60, 60, 3) * yy[..., None]
    rgb = base * 0.6 + 88 * (0.5 + 0.5 * np.sin(m * rng.uniform(4, 10) + rng.uniform(0, 6, 3)))
    rgb += rng.normal(0, 3, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def saturated(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    c0, c1 = rng.uniform(20, 235, (2, 3))
    t = np.linspace(0, 1, w)[None, :, None]
    image = Image.fromarray(np.repeat(c0 + (c1 - c0) * t, h, axis=0).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (0, 0, 0)]
    for i in range(10):
        x0, y0, r = rng.integers(-w // 8, w), rng.integers(-h // 8, h), rng.integers(20, w // 3)
        (draw.ellipse if i % 2 else draw.rectangle)((int(x0), int(y0), int(x0 + r), int(y0 + r)), fill=colours[i % 7])
    return image


KINDS = {"pink": pink, "scene": scene, "natural": natural, "saturated": saturated}
PHOTOS = {"dev": ("astronaut", "coffee", "rocket"),
          "held-out": ("chelsea", "hubble_deep_field", "immunohistochemistry", "retina")}


def _skimage_rgb(name: str) -> Image.Image:
    """A scikit-image photograph as RGB (grey and boolean ones too), whole."""
    from skimage import data

    array = getattr(data, name)()
    if array.dtype != np.uint8:
        array = (255 * (array > 0) if array.dtype == bool else array).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def photo(name: str, size: int) -> Image.Image:
    """Centre square of a scikit-image photograph, resized to size x size."""
    image = _skimage_rgb(name)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def image_set(which: str, size: int, n: int) -> list[tuple[str, Image.Image]]:
    """The set's photographs + n synthetic images per kind: dev = seeds 0.., held-out = seeds 1000.. (disjoint)."""
    base = 0 if which == "dev" else 1000
    photos = [(name, photo(name, size)) for name in PHOTOS[which]]
    synthetic = [(f"{kind}{base + i}", make(size, size, base + i)) for kind, make in KINDS.items() for i in range(n)]
    return photos + synthetic


# ----------------------------------------------------------------------------------------------- attacks


def reencode(image: Image.Image, fmt: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out.convert("RGB")


def crop(fraction: float) -> Callable[[Image.Image, np.random.Generator], Image.Image]:
    """Keep `fraction` of the area (same aspect) at a random position."""
    def attack(im: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = round(im.width * fraction**0.5), round(im.height * fraction**0.5)
        x0, y0 = int(rng.integers(0, im.width - w + 1)), int(rng.integers(0, im.height - h + 1))
        return im.crop((x0, y0, x0 + w, y0 + h))
    return attack


def resize(f: float, back: bool = False, resample: int = Image.Resampling.BICUBIC) -> Callable:
    def attack(im: Image.Image, rng: np.random.Generator) -> Image.Image:
        small = im.resize((round(im.width * f), round(im.height * f)), resample)
        return small.resize(im.size, resample) if back else small
    return attack


def noise(sigma: float) -> Callable:
    def attack(im: Image.Image, rng: np.random.Generator) -> Image.Image:
        x = np.asarray(im, dtype=np.float64) + rng.normal(0, sigma, (im.height, im.width, 3))
        return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return attack


def combo(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    return reencode(resize(0.75)(crop(0.9)(im, rng), rng), "JPEG", quality=75)


ATTACKS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "png": lambda im, r: reencode(im, "PNG"),
    "jpeg95": lambda im, r: reencode(im, "JPEG", quality=95),
    "jpeg90": lambda im, r: reencode(im, "JPEG", quality=90),
    "jpeg75": lambda im, r: reencode(im, "JPEG", quality=75),
    "jpeg50": lambda im, r: reencode(im, "JPEG", quality=50),
    "jpeg75-444": lambda im, r: reencode(im, "JPEG", quality=75, subsampling=0),
    "jpeg50-444": lambda im, r: reencode(im, "JPEG", quality=50, subsampling=0),
    "webp75": lambda im, r: reencode(im, "WEBP", quality=75),
    "webp90": lambda im, r: reencode(im, "WEBP", quality=90),
    "resize0.5": resize(0.5),
    "resize0.75-bilinear": resize(0.75, resample=Image.Resampling.BILINEAR),
    "resize1.5-lanczos": resize(1.5, resample=Image.Resampling.LANCZOS),
    "resize2-nearest": resize(2.0, resample=Image.Resampling.NEAREST),
    "resize0.5-and-back": resize(0.5, back=True),
    "crop80": crop(0.8),
    "crop90": crop(0.9),
    "bright+10%": lambda im, r: ImageEnhance.Brightness(im).enhance(1.1),
    "bright-10%": lambda im, r: ImageEnhance.Brightness(im).enhance(0.9),
    "contrast+10%": lambda im, r: ImageEnhance.Contrast(im).enhance(1.1),
    "contrast-10%": lambda im, r: ImageEnhance.Contrast(im).enhance(0.9),
    "blur_r1": lambda im, r: im.filter(ImageFilter.GaussianBlur(1)),
    "noise5": noise(5.0),
    "combo crop90+0.75x+jpeg75": combo,
    "rot2 (stretch)": lambda im, r: im.rotate(2, Image.Resampling.BICUBIC),
}


# ----------------------------------------------------------------------------------------------- methods


class ImWatermark:
    """invisible-watermark's dwtDct / dwtDctSvd, when importable (not a provgen dependency)."""

    payload_bits = 48

    def __init__(self, algo: str) -> None:
        from imwatermark import WatermarkDecoder, WatermarkEncoder  # noqa: F401

        self.name, self.algo = f"imwatermark {algo}", algo

    def embed(self, image: Image.Image, payload: int) -> Image.Image:
        from imwatermark import WatermarkEncoder

        enc = WatermarkEncoder()
        enc.set_watermark("bytes", payload.to_bytes(6, "big"))
        bgr = np.asarray(image.convert("RGB"))[:, :, ::-1]
        return Image.fromarray(np.ascontiguousarray(enc.encode(bgr, self.algo)[:, :, ::-1]))

    def read_bits(self, image: Image.Image) -> int | None:
        from imwatermark import WatermarkDecoder

        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        return int.from_bytes(WatermarkDecoder("bytes", 48).decode(bgr, self.algo), "big")


def methods() -> list[tuple[str, object | None]]:
    out: list[tuple[str, object | None]] = [("provgen-wm/1", RobustWatermark()), ("provgen-grid/1", GridWatermark())]
    for algo in ("dwtDct", "dwtDctSvd"):
        try:
            out.append((f"imwatermark {algo}", ImWatermark(algo)))
        except ImportError:
            out.append((f"imwatermark {algo}", None))
    return out


def read(method: object, image: Image.Image) -> int | None:
    if isinstance(method, ImWatermark):
        return method.read_bits(image)  # no check bits: always "reads" something
    reading = method.decode(image)  # type: ignore[attr-defined]
    return None if reading is None else reading.payload


# ------------------------------------------------------------------------------------------------- quality


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((x - y) ** 2)))


def ssim(a: Image.Image, b: Image.Image) -> float:
    from scipy.ndimage import uniform_filter

    x, y = np.asarray(a.convert("L"), dtype=np.float64), np.asarray(b.convert("L"), dtype=np.float64)
    mx, my = uniform_filter(x, 7), uniform_filter(y, 7)
    vx, vy, cxy = uniform_filter(x * x, 7) - mx**2, uniform_filter(y * y, 7) - my**2, uniform_filter(x * y, 7) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))[3:-3, 3:-3].mean())


def visibility(a: Image.Image, b: Image.Image, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """CIEDE2000 difference of the mean colour of every block x block square, and a mask of the flat ones."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    x, y = np.asarray(a.convert("RGB"), np.float64) / 255, np.asarray(b.convert("RGB"), np.float64) / 255
    h, w = x.shape[0] // block * block, x.shape[1] // block * block

    def means(z: np.ndarray) -> np.ndarray:
        return z[:h, :w].reshape(h // block, block, w // block, block, -1).mean(axis=(1, 3))

    de = deltaE_ciede2000(rgb2lab(means(x)), rgb2lab(means(y)))
    luma = np.asarray(a.convert("L"), np.float64)[:h, :w].reshape(h // block, block, w // block, block)
    return de, luma.std(axis=(1, 3)) < 2


# ---------------------------------------------------------------------------------------------------- runs


def robustness(which: str, size: int, n: int, attacks: list[str]) -> None:
    images = image_set(which, size, n)
    label = "DEV set (tuned on these)" if which == "dev" else "HELD-OUT set (never tuned on)"
    print(f"# {label}: {len(images)} images at {size}x{size} ({', '.join(PHOTOS[which])}; "
          f"{', '.join(KINDS)}: {n} each)\n")
    payloads = np.random.default_rng(7).integers(0, 2**48, len(images)).tolist()
    table: dict[str, dict[str, str]] = {}
    quality: dict[str, str] = {}
    for name, method in methods():
        if method is None:
            quality[name] = "not installed"
            continue
        marked, psnrs, ssims, t_embed, flat_de = [], [], [], [], []
        for (_, image), payload in zip(images, payloads, strict=True):
            start = time.perf_counter()
            out = method.embed(image, payload)  # type: ignore[attr-defined]
            t_embed.append(time.perf_counter() - start)
            marked.append(out)
            psnrs.append(psnr(image, out))
            ssims.append(ssim(image, out))
            de, flat = visibility(image, out)
            flat_de.append(de[flat])
        flat_de = np.concatenate(flat_de)
        t_decode = []
        for attack in attacks:
            rng = np.random.default_rng(zlib.crc32(attack.encode()))  # same crops in every run
            ok, acc = 0, []
            for image, payload in zip(marked, payloads, strict=True):
                attacked = ATTACKS[attack](image, rng)
                start = time.perf_counter()
                got = read(method, attacked)
                if attack == "png":
                    t_decode.append(time.perf_counter() - start)
                ok += got == payload
                acc.append(0.5 if got is None else 1 - bin(got ^ payload).count("1") / 48)
            table.setdefault(attack, {})[name] = f"{ok / len(marked):.0%} / {np.mean(acc):.2f}"
        quality[name] = (f"PSNR {np.mean(psnrs):.1f} (min {min(psnrs):.1f}) dB, SSIM {np.mean(ssims):.3f} "
                         f"(min {min(ssims):.3f}), flat-block dE00 mean {flat_de.mean():.2f} / p99 "
                         f"{np.percentile(flat_de, 99):.2f} / max {flat_de.max():.2f} ({flat_de.size} blocks), "
                         f"embed {statistics.median(t_embed) * 1e3:.0f} ms, "
                         f"decode {statistics.median(t_decode) * 1e3:.0f} ms (median)")
        print(f"{name}: {quality[name]}", flush=True)
    names = [name for name, _ in methods()]
    print("\n| attack | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for attack in attacks:
        print(f"| {attack} | " + " | ".join(table[attack].get(n, "not installed") for n in names) + " |")
    print()


def timing(size: int, repeats: int) -> None:
    """Median embed/decode time at size x size, untouched and attacked, over the held-out images."""
    wm = RobustWatermark()
    images = [im for _, im in image_set("held-out", size, 1)]
    for label, attack in (("png", ATTACKS["png"]), ("jpeg75", ATTACKS["jpeg75"]), ("crop90", ATTACKS["crop90"]),
                          ("unmarked", None)):
        t_e, t_d, c_e = [], [], []
        for image in images:
            for _ in range(repeats):
                start, cpu = time.perf_counter(), time.process_time()
                marked = wm.embed(image, 123)
                t_e.append(time.perf_counter() - start)
                c_e.append(time.process_time() - cpu)
                target = image if attack is None else attack(marked, np.random.default_rng(1))
                start = time.perf_counter()
                wm.decode(target)
                t_d.append(time.perf_counter() - start)
        print(f"provgen-wm/1 {size}px {label:9s} embed {statistics.median(t_e) * 1e3:5.0f} ms "
              f"(CPU {statistics.median(c_e) * 1e3:3.0f} ms)   "
              f"decode {statistics.median(t_d) * 1e3:5.0f} ms (median of {len(t_d)})")


#: photographs for the false-positive run (every bundled colour photo; crops and rescales make them distinct)
FP_PHOTOS = ("astronaut", "coffee", "rocket", "chelsea", "hubble_deep_field", "immunohistochemistry", "retina",
             "colorwheel", "horse", "camera", "moon", "page", "text", "coins", "grass", "gravel", "brick")


def _shapes_pipeline():
    """The shipped ``shapes`` model's diffusers pipeline (local files only), without a progress bar."""
    import provgen

    pipe = provgen.Engine(progress=False).load("shapes")[1]
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _fp_sources(generated: int) -> tuple[list[Image.Image], list[Image.Image]]:
    """The photographs, and ``generated`` images of the shipped ``shapes`` model (unmarked: sampled directly)."""
    photos = [_skimage_rgb(name) for name in FP_PHOTOS]
    images = []
    if generated:
        import torch

        from provgen.plugins.shapes.dataset import sample_prompt

        pipe = _shapes_pipeline()
        prompts = random.Random(7)
        for k in range(generated):
            prompt, _ = sample_prompt(prompts)
            seeded = torch.Generator().manual_seed(k)
            out = pipe(prompt, num_inference_steps=10, guidance_scale=6.0, generator=seeded)
            images.append(out.images[0])
    return photos, images


def false_positives(n: int, seed: int, budget_s: float = 0.0, methods: str = "all", generated: int = 100) -> None:
    """Decode n unmarked images with provgen's methods: random crops and rescales of scikit-image photographs
    (40%), generations of the shipped ``shapes`` model, rescaled to 128-900 px (10%), the synthetic generators
    (30%), noise (10%) and flat colour (10%)."""
    rng = np.random.default_rng(seed)
    decoders = {"provgen-wm/1": RobustWatermark(), "provgen-grid/1": GridWatermark()}
    if methods != "all":
        decoders = {name: method for name, method in decoders.items() if name in methods.split(",")}
    hits = dict.fromkeys(decoders, 0)
    kinds: dict[str, int] = {}
    photos, generated_images = _fp_sources(generated)
    start = time.perf_counter()
    for i in range(n):
        roll = rng.random()
        w, h = int(rng.integers(96, 900)), int(rng.integers(96, 900))
        if roll < 0.4:
            kind, source = "photo", photos[int(rng.integers(0, len(photos)))]
            cw, ch = int(source.width * rng.uniform(0.3, 1.0)), int(source.height * rng.uniform(0.3, 1.0))
            x0, y0 = int(rng.integers(0, source.width - cw + 1)), int(rng.integers(0, source.height - ch + 1))
            image = source.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
        elif roll < 0.5 and generated_images:
            kind = "generated"
            picked = generated_images[int(rng.integers(0, len(generated_images)))]
            image = picked.resize((w, w), Image.Resampling.BICUBIC)
        elif roll < 0.8:
            kind = "synthetic"
            image = list(KINDS.values())[int(rng.integers(0, 4))](w, h, int(rng.integers(10**6, 2 * 10**6)))
        elif roll < 0.9:
            kind, image = "noise", Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        else:
            kind, image = "flat", Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
        kinds[kind] = kinds.get(kind, 0) + 1
        for name, method in decoders.items():
            hits[name] += method.decode(image) is not None
        if budget_s and time.perf_counter() - start > budget_s:
            n = i + 1
            break
        if (i + 1) % 500 == 0:
            print(f"  {i + 1} images, {time.perf_counter() - start:.0f} s, false detections {hits}", flush=True)
    elapsed = time.perf_counter() - start
    print(f"false detections on {n} unmarked images {kinds}: {hits} ({elapsed:.0f} s, "
          f"{elapsed / n * 1e3:.0f} ms/image for {', '.join(decoders)})")


#: photographs never used for tuning (the dev set's are astronaut, coffee, rocket): the held-out colour ones and
#: the grey ones, which provgen marks like any other image (the mark is a chroma change)
SAMPLE_PHOTOS = ("chelsea", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel", "camera", "moon",
                 "page", "text", "coins", "grass", "gravel", "brick")


def _sample_images(size: int, n: int, seed: int) -> Iterator[tuple[str, str, Image.Image]]:
    """n held-out images (kind, label, image), made one at a time: half random square crops (50-100% of the
    shorter side, any position) of SAMPLE_PHOTOS, a quarter the synthetic generators at seeds 2000 + ..., a
    quarter generations of the shipped ``shapes`` model (64 px, resized like a user would upscale them)."""
    rng = np.random.default_rng(seed)
    sources: dict[str, Image.Image] = {}
    pipe = None
    prompts = random.Random(2026 + seed)
    for i in range(n):
        roll = rng.random()
        if roll < 0.5:
            name = SAMPLE_PHOTOS[int(rng.integers(0, len(SAMPLE_PHOTOS)))]
            if name not in sources:
                sources[name] = _skimage_rgb(name)
            source = sources[name]
            side = int(min(source.size) * rng.uniform(0.5, 1.0))
            x0 = int(rng.integers(0, source.width - side + 1))
            y0 = int(rng.integers(0, source.height - side + 1))
            image = source.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.LANCZOS)
            yield "photo", f"{name}@{x0},{y0}+{side}", image
        elif roll < 0.75:
            kind = list(KINDS)[int(rng.integers(0, len(KINDS)))]
            k = 2000 + seed * 100_000 + i
            yield "synthetic", f"{kind}{k}", KINDS[kind](size, size, k)
        else:
            import torch

            from provgen.plugins.shapes.dataset import sample_prompt

            if pipe is None:
                pipe = _shapes_pipeline()
            prompt, _ = sample_prompt(prompts)
            out = pipe(prompt, num_inference_steps=20, guidance_scale=3.0,
                       generator=torch.Generator().manual_seed(seed * 100_000 + i))
            yield "generated", f"shapes:{prompt!r}", out.images[0].resize((size, size), Image.Resampling.BICUBIC)


def _lower_bound(ok: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower confidence bound of a recovery rate from ok successes in n trials."""
    from scipy.stats import beta

    return 0.0 if ok == 0 else float(beta.ppf(1 - confidence, ok, n - ok + 1))


def sample(size: int, n: int, attacks: list[str], seed: int) -> None:
    """provgen-wm/1 alone on n held-out images (see _sample_images) x every attack: recovered / n, the 95%
    lower confidence bound of the recovery rate, the images that failed, and the median decode time over
    every attacked image (the table's own mix, not the untouched case)."""
    wm = RobustWatermark()
    ok = dict.fromkeys(attacks, 0)
    failed: dict[str, list[tuple[str, str]]] = {a: [] for a in attacks}  # (kind, label) of each lost image
    kinds: dict[str, int] = {}
    t_decode: dict[str, list[float]] = {a: [] for a in attacks}
    psnrs = []
    payloads = np.random.default_rng(seed + 7)
    start = time.perf_counter()
    for i, (kind, label, image) in enumerate(_sample_images(size, n, seed)):
        kinds[kind] = kinds.get(kind, 0) + 1
        payload = int(payloads.integers(0, 2**48))
        marked = wm.embed(image, payload)
        psnrs.append(psnr(image, marked))
        for attack in attacks:
            attacked = ATTACKS[attack](marked, np.random.default_rng([seed, i, zlib.crc32(attack.encode())]))
            t = time.perf_counter()
            got = read(wm, attacked)
            t_decode[attack].append(time.perf_counter() - t)
            if got == payload:
                ok[attack] += 1
            else:
                failed[attack].append((kind, label))
                print(f"  lost: image {i} ({kind} {label}), {attack}", flush=True)
        if (i + 1) % 25 == 0:
            lost = {a: len(f) for a, f in failed.items() if f}
            print(f"  {i + 1} images, {time.perf_counter() - start:.0f} s, lost {lost}", flush=True)
    every = [t for ts in t_decode.values() for t in ts]
    print(f"\n# provgen-wm/1, {n} held-out images at {size}x{size} {kinds}, seed {seed}: PSNR mean "
          f"{np.mean(psnrs):.1f} (min {min(psnrs):.1f}) dB; decode median {statistics.median(every) * 1e3:.0f} ms over "
          f"all {len(every)} attacked images ({time.perf_counter() - start:.0f} s)\n")
    print("| attack | recovered | rate | 95% lower bound | lost by kind | decode median |")
    print("|---|---|---|---|---|---|")
    for attack in attacks:
        by_kind = Counter(kind for kind, _ in failed[attack])
        lost = ", ".join(f"{kind} {k}/{kinds[kind]}" for kind, k in by_kind.items()) or "-"
        print(f"| {attack} | {ok[attack]}/{n} | {ok[attack] / n:.1%} | {_lower_bound(ok[attack], n):.1%} | {lost} | "
              f"{statistics.median(t_decode[attack]) * 1e3:.0f} ms |")
    for attack in attacks:
        if failed[attack]:
            print(f"lost on {attack}: " + "; ".join(f"{kind} {label}" for kind, label in failed[attack]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=["held-out", "dev"], default="held-out")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n", type=int, default=2, help="images per generator (4 generators)")
    names = ", ".join(ATTACKS).replace("%", "%%")  # argparse formats help with %
    parser.add_argument("--attacks", default="", help=f"comma-separated subset of: {names}")
    parser.add_argument("--timing", type=int, default=0, metavar="REPEATS", help="only the timing run")
    parser.add_argument("--fp", type=int, default=0, metavar="N", help="only the false-positive run on N images")
    parser.add_argument("--fp-seconds", type=float, default=0.0, help="stop the false-positive run after this long")
    parser.add_argument("--fp-methods", default="all", help="comma-separated method names for --fp (default all)")
    parser.add_argument("--fp-generated", type=int, default=100, help="shapes-model images in the --fp pool")
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="provgen-wm/1 alone on N held-out images (photo crops, synthetic, shapes model), "
                        "with 95%% bounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a] or list(ATTACKS)
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        sys.exit(f"unknown attacks: {', '.join(sorted(unknown))}")
    if args.fp:
        false_positives(args.fp, args.seed, args.fp_seconds, args.fp_methods, args.fp_generated)
    elif args.sample:
        sample(args.size, args.sample, attacks, args.seed)
    elif args.timing:
        timing(args.size, args.timing)
    else:
        robustness(args.set, args.size, args.n, attacks)


if __name__ == "__main__":
    main()
