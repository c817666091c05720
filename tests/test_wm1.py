"""provgen.provenance.wm1: the default watermark ``provgen-wm/1`` (crop-, resize- and re-encoding-robust).

Images: two of scikit-image's bundled photographs (``skimage.data``, the dev extra; skipped without it) and
deterministic synthetic ones: a 1/f colour field (photo-like texture), a scene (sky gradient, textured ground,
flat blurred shapes) and a flat sky gradient (visibility). The robustness table over more images lives in
benchmarks/watermark_robustness.py and docs/watermark.md.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, features

from provgen.core.errors import WatermarkError
from provgen.provenance.watermark import GridWatermark, WatermarkMethod
from provgen.provenance.wm1 import RobustWatermark, block_size

WM = RobustWatermark()
PAYLOAD = 0xC0FF_EE12_3456


# ------------------------------------------------------------------------------------------------ images


def pink(width: int, height: int, seed: int = 0) -> Image.Image:
    """1/f^2.2 colour field with correlated channels and a little sensor noise."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    f[0, 0] = 1
    chans = []
    for _ in range(3):
        spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f**1.1
        spec[0, 0] = 0
        x = np.fft.irfft2(spec, s=(height, width))
        chans.append(x / x.std())
    x = np.stack(chans, -1) @ (rng.normal(size=(3, 3)) * 0.3 + np.eye(3))
    x = 128 + 40 * x / x.std() + rng.uniform(-30, 30, 3) + rng.normal(0, 2, x.shape)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def scene(width: int, height: int, seed: int = 0) -> Image.Image:
    """Sky gradient over textured ground, with flat shapes: large flat areas, as in generated art."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, height)[:, None, None]
    img = np.repeat(np.array([90, 150, 230]) * (1 - t) + np.array([200, 220, 250]) * t, width, axis=1)
    horizon = int(height * rng.uniform(0.45, 0.7))
    img[horizon:] = np.asarray(pink(width, height, seed + 7), dtype=np.float64)[horizon:] * 0.6 + [40, 60, 20]
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0, r = rng.integers(0, width), rng.integers(0, height), rng.integers(width // 16, width // 4)
        draw.ellipse((int(x0), int(y0), int(x0 + r), int(y0 + r)), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(0.7))


def sky(size: int) -> Image.Image:
    """A clear-sky gradient: nothing masks a chroma change here."""
    t = np.linspace(0, 1, size)[:, None, None]
    img = np.repeat(np.array([90, 150, 230]) * (1 - t) + np.array([200, 220, 250]) * t, size, axis=1)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


def photo(name: str, size: int) -> Image.Image:
    """Centre square of a scikit-image photograph, resized to size x size."""
    data = pytest.importorskip("skimage.data")
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def flat_delta_e(a: Image.Image, b: Image.Image, block: int = 8) -> np.ndarray:
    """CIEDE2000 difference of the mean colour of every flat (luma std < 2) block x block square."""
    color = pytest.importorskip("skimage.color")
    x, y = np.asarray(a, np.float64) / 255, np.asarray(b, np.float64) / 255
    h, w = x.shape[0] // block * block, x.shape[1] // block * block

    def means(z: np.ndarray) -> np.ndarray:
        return z[:h, :w].reshape(h // block, block, w // block, block, -1).mean(axis=(1, 3))

    de = color.deltaE_ciede2000(color.rgb2lab(means(x)), color.rgb2lab(means(y)))
    luma = np.asarray(a.convert("L"), np.float64)[:h, :w].reshape(h // block, block, w // block, block)
    return de[luma.std(axis=(1, 3)) < 2]


def reencode(image: Image.Image, fmt: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((x - y) ** 2)))


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean SSIM of the luma, 7x7 uniform windows (as skimage's default), K1=0.01, K2=0.03."""
    from scipy.ndimage import uniform_filter

    x = np.asarray(a.convert("L"), dtype=np.float64)
    y = np.asarray(b.convert("L"), dtype=np.float64)
    mx, my = uniform_filter(x, 7), uniform_filter(y, 7)
    vx, vy = uniform_filter(x * x, 7) - mx**2, uniform_filter(y * y, 7) - my**2
    cxy = uniform_filter(x * y, 7) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean())


def payload_of(image: Image.Image, method: object = WM) -> int | None:
    reading = method.decode(image)  # type: ignore[attr-defined]
    return None if reading is None else reading.payload


@pytest.fixture(scope="module")
def marked() -> dict[str, tuple[Image.Image, Image.Image]]:
    """(original, marked) at 512 x 512: a textured field and a scene with flat areas."""
    out = {}
    for name, make, seed in (("pink", pink, 21), ("scene", scene, 22)):
        image = make(512, 512, seed)
        out[name] = (image, WM.embed(image, PAYLOAD))
    return out


# ---------------------------------------------------------------------------------------------- contract


def test_contract_and_default() -> None:
    from provgen.core.config import load_settings
    from provgen.core.plugins import get_plugin_manager
    from provgen.core.registries import watermark_methods

    assert isinstance(WM, WatermarkMethod)
    assert (WM.name, WM.payload_bits, WM.soft_binding_alg) == ("provgen-wm/1", 48, "io.provgen.watermark.wm.v1")
    assert load_settings().watermark_method == "provgen-wm/1"
    methods = watermark_methods(get_plugin_manager())
    assert {"provgen-wm/1", "provgen-grid/1"} <= set(methods)  # old images still verify


def test_block_size_rule() -> None:
    """Relative (48 blocks across the shorter side) from 768 px up, 16 px blocks (one 4:2:0 JPEG MCU) from 256
    to 768 px, one tile (16 blocks) across below 256 px."""
    assert block_size(1536) == 32 and block_size(1024) == 1024 / 48 and block_size(768) == 16
    assert block_size(512) == 16 and block_size(256) == 16 and block_size(192) == 12 and block_size(64) == 4


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_small_images_survive_jpeg75(size: int, kind: str) -> None:
    """Colour noise (like a tiny random diffusion model's output) and a flat colour, JPEG 75 4:2:0: both failed
    at 256 px with 8 px blocks and half-way moves on flat blocks."""
    rng = np.random.default_rng(size)
    if kind == "noise":
        image = Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    else:
        image = Image.new("RGB", (size, size), (90, 140, 220))
    marked = WM.embed(image, PAYLOAD)
    assert psnr(image, marked) >= 40.0
    assert payload_of(reencode(marked, "JPEG", quality=75)) == PAYLOAD


@pytest.mark.parametrize("name", ["pink", "scene"])
def test_invisible_by_the_numbers(marked: dict, name: str) -> None:
    original, image = marked[name]
    assert image.size == original.size and image.mode == "RGB"
    assert 40.0 <= psnr(original, image) < 50  # the mark is there, and within budget
    assert ssim(original, image) >= 0.98


def test_invisible_on_a_flat_sky() -> None:
    """No blocks or colour squares on flat areas: flat blocks move only part of the way (masking), and the
    change is a smooth interpolation between block centres. Before: mean 0.81, max 6.5 CIEDE2000 at 1024 px."""
    image = sky(512)
    marked = WM.embed(image, PAYLOAD)
    de = flat_delta_e(image, marked)
    assert de.size > 3000 and de.mean() < 0.6 and np.percentile(de, 99) < 2.0 and de.max() < 3.0
    assert payload_of(marked) == PAYLOAD
    assert payload_of(reencode(marked, "JPEG", quality=75)) == PAYLOAD


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[Image.Image, Image.Image]]:
    """(original, marked) scikit-image photographs at 768 x 768."""
    out = {}
    for name in ("astronaut", "coffee"):
        image = photo(name, 768)
        out[name] = (image, WM.embed(image, PAYLOAD))
    return out


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_photographs(photos: dict, name: str) -> None:
    original, image = photos[name]
    assert psnr(original, image) >= 40.0 and ssim(original, image) >= 0.98
    for attack in ("jpeg75", "crop80-odd", "resize0.75", "combo"):
        assert payload_of(ATTACKS[attack](image)) == PAYLOAD, (name, attack)


def test_deterministic_and_payload_dependent() -> None:
    image = scene(256, 256, 3)
    a, b = WM.embed(image, 1), WM.embed(image, 2)
    assert WM.embed(image, 1).tobytes() == a.tobytes() != b.tobytes()
    assert (payload_of(a), payload_of(b)) == (1, 2)


# ---------------------------------------------------------------------------------------------- attacks


def _crop(image: Image.Image, x0: int, y0: int, fraction: float) -> Image.Image:
    w, h = image.size
    return image.crop((x0, y0, x0 + int(w * fraction), y0 + int(h * fraction)))


ATTACKS = {
    "png": lambda im: reencode(im, "PNG"),
    "jpeg75": lambda im: reencode(im, "JPEG", quality=75),
    "jpeg90-444": lambda im: reencode(im, "JPEG", quality=90, subsampling=0),
    "resize0.75": lambda im: im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.BICUBIC),
    "resize1.5": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BILINEAR),
    "crop80-odd": lambda im: _crop(im, 23, 37, 0.894),
    "crop90-odd": lambda im: _crop(im, 7, 3, 0.949),
    "brightness1.1": lambda im: ImageEnhance.Brightness(im).enhance(1.1),
    "contrast0.9": lambda im: ImageEnhance.Contrast(im).enhance(0.9),
    "blur1": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
    "combo": lambda im: reencode(
        (c := _crop(im, 13, 29, 0.949)).resize((c.width * 3 // 4, c.height * 3 // 4), Image.Resampling.BICUBIC),
        "JPEG", quality=75),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_survives(marked: dict, attack: str) -> None:
    # limit (docs/watermark.md): strong chroma texture + crop + downscale + JPEG at 512 px (6 px blocks)
    for name in ("scene",) if attack == "combo" else ("pink", "scene"):
        reading = WM.decode(ATTACKS[attack](marked[name][1]))
        assert reading is not None and reading.payload == PAYLOAD, (name, attack)
        assert 0 < reading.confidence <= 1


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_survives_webp(marked: dict) -> None:
    assert payload_of(reencode(marked["scene"][1], "WEBP", quality=80)) == PAYLOAD


@pytest.fixture(scope="module")
def small_marked() -> dict[str, Image.Image]:
    """Marked images about one tile across (256 px: 16 blocks; 384 px: 24), where a tile class holds one or
    two blocks: a photograph and the scene."""
    out = {}
    for size in (256, 384):
        out[f"coffee{size}"] = WM.embed(photo("coffee", size), PAYLOAD)
        out[f"scene{size}"] = WM.embed(scene(size, size, size), PAYLOAD)
    return out


SMALL_ATTACKS = {
    "resize2-nearest": lambda im: im.resize((im.width * 2, im.height * 2), Image.Resampling.NEAREST),
    "resize1.5-lanczos": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.LANCZOS),
    "brightness1.1": lambda im: ImageEnhance.Brightness(im).enhance(1.1),
    "contrast1.1": lambda im: ImageEnhance.Contrast(im).enhance(1.1),
    "crop90-odd": ATTACKS["crop90-odd"],
    "crop80-odd": ATTACKS["crop80-odd"],
}


@pytest.mark.parametrize("attack", list(SMALL_ATTACKS))
def test_small_images_survive_resize_gain_and_crop(small_marked: dict, attack: str) -> None:
    """One tile across, phase coherence cannot rank phases and the 3% size grid misses the sync: before the
    phase-0 hypotheses (resized but not cropped), the sync-scored phases of plain-crop block sizes and phase 0
    at every gain, 43 of 276 decodes of 12 dev images at 256 px failed (resize 1.5x/2x, brightness/contrast,
    crops); these cases were among them."""
    for name, image in small_marked.items():
        assert payload_of(SMALL_ATTACKS[attack](image)) == PAYLOAD, (name, attack)


def test_flat_generated_image_survives_brightness_and_contrast(torch_one_thread: None) -> None:
    """A shapes-model generation upscaled to 512 px is flat saturated colour (a white triangle on green): its
    chroma lattice aliases at gain 0.92, whose phases outscored the true gain 1.1 after +10% brightness or
    contrast, and the decoder tried only the two best (gain, phase) pairs, both the alias's. It now tries the
    best of three gains more than 2.5% apart (before: lost on both attacks, at 512 and 1024 px; found in the
    300-image held-out sample of benchmarks/watermark_robustness.py --sample)."""
    import torch

    import provgen

    pipe = provgen.Engine(progress=False).load("shapes")[1]
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a large white triangle on a green background, left", num_inference_steps=20, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(100008))
    marked = WM.embed(out.images[0].resize((512, 512), Image.Resampling.BICUBIC), PAYLOAD)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast):
        for factor in (1.1, 0.9):
            assert payload_of(enhance(marked).enhance(factor)) == PAYLOAD, (enhance.__name__, factor)


def test_exact_2x_upscale_of_512_px_is_searched() -> None:
    """A 512 px image (16 px blocks) resized 2x is 1024 px with 32 blocks of 32 px: 0.4% above the largest
    block-size hypothesis (the 1.5% grid from 21.3 px stops at 31.9), and the resized-not-cropped hypotheses
    were clipped to the grid's extremes, so n = 32 was never tried; 3 of 50 held-out images at 512 px were
    lost after a 2x nearest-neighbour upscale (benchmarks/watermark_robustness.py --sample); of 16 test images
    (pink and scene, seeds 0-7) the old decoder lost this one."""
    marked = WM.embed(pink(512, 512, 4), PAYLOAD)
    for resample in (Image.Resampling.NEAREST, Image.Resampling.BICUBIC):
        assert payload_of(marked.resize((1024, 1024), resample)) == PAYLOAD, resample


def test_small_generated_sizes_round_trip() -> None:
    """The shipped model makes 64 px images; engine tests use 128-256 px."""
    for size in (64, 128, 256):
        image = scene(size, size, size)
        assert payload_of(WM.embed(image, PAYLOAD)) == PAYLOAD, size
    assert payload_of(reencode(WM.embed(scene(256, 256, 5), PAYLOAD), "JPEG", quality=90)) == PAYLOAD


def test_rgba_keeps_alpha_and_grayscale_becomes_rgb() -> None:
    rgba = scene(256, 256, 6).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((256, 256)))
    out = WM.embed(rgba, PAYLOAD)
    assert out.mode == "RGBA" and out.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()
    assert payload_of(out) == PAYLOAD
    gray = WM.embed(scene(256, 256, 7).convert("L"), PAYLOAD)
    assert gray.mode == "RGB" and payload_of(gray) == PAYLOAD


# ---------------------------------------------------------------------------------- fast embedding, same bytes


def reference_apply(self: RobustWatermark, x: np.ndarray, field, ay, ax) -> np.ndarray:  # type: ignore[no-untyped-def]
    """RobustWatermark._apply as it was before it was chunked and split over threads: one band loop (x + field
    + dither, the clipping loss summed per band), then the corrected bands rounded again."""
    import math

    from provgen.provenance import wm1

    h, w = x.shape[:2]
    x2, marked = x.reshape(h, w * 3), np.empty_like(x)
    m2 = marked.reshape(h, w * 3)
    dither = wm1._dither_rows(self.key, w).reshape(wm1._DITHER_TILE, w * 3)
    rows = wm1._chunk_rows(w)
    cuts = np.union1d(ay.starts, np.arange(0, h, rows)).tolist()
    tmp, tmp2 = np.empty((2, rows, w * 3), np.float32)
    r = math.ceil(field.reach) + 1
    lost_rows, clipped = np.zeros((len(ay.count), w * 3)), 0
    for y0, y1 in zip(cuts, cuts[1:] + [h], strict=True):
        xs = x2[y0:y1]
        o = field.rows(y0, y1, tmp[: y1 - y0])
        o += xs
        if xs.min() < r or xs.max() > 255 - r:
            lost = np.clip(o, 0, 255, out=tmp2[: y1 - y0])
            lost -= o
            k = np.count_nonzero(lost.view(np.int32))
            if k:
                clipped += k
                lost_rows[ay.block[y0]] += lost.sum(axis=0)
        o += dither[y0 % wm1._DITHER_TILE : y0 % wm1._DITHER_TILE + y1 - y0]
        np.clip(o, 0, 255, out=o)
        m2[y0:y1] = o
    correction = self._correction(lost_rows, ay, ax) if clipped > wm1._CLIP_FRACTION * x.size else None
    for y0 in range(0, h, rows) if correction is not None else ():
        y1 = min(h, y0 + rows)
        if not correction.live[y0:y1].any():
            continue
        o = field.rows(y0, y1, tmp[: y1 - y0])
        o += x2[y0:y1]
        np.clip(o, 0, 255, out=o)
        o += correction.rows(y0, y1, tmp2[: y1 - y0])
        o += dither[y0 % wm1._DITHER_TILE : y0 % wm1._DITHER_TILE + y1 - y0]
        np.clip(o, 0, 255, out=o)
        m2[y0:y1] = o
    return marked


def clipping_mix(width: int, height: int) -> Image.Image:
    """Light texture with a few black pixels on top (little clipping: rounded in the first pass), a saturated
    block lower left (much clipping: a correction, which also covers rows rounded already)."""
    rng = np.random.default_rng(5)
    x = np.full((height, width, 3), 128, np.uint8) + rng.integers(0, 20, (height, width, 1)).astype(np.uint8)
    x[rng.integers(0, height // 4, 40), rng.integers(0, width, 40)] = 0
    x[height // 2 :, : width // 2] = (255, 0, 40)
    return Image.fromarray(x)


def saturated_halves(width: int, height: int) -> Image.Image:
    """A grey ramp (no value near 0 or 255: nothing to clip) over saturated magenta."""
    x = np.empty((height, width, 3), np.uint8)
    x[:] = (250, 10, 250)
    x[: height // 2] = np.linspace(80, 170, width)[None, :, None].astype(np.uint8)
    return Image.fromarray(x)


EMBED_CASES = {
    "flat-saturated": lambda: Image.new("RGB", (300, 200), (255, 0, 40)),
    "halves": lambda: saturated_halves(320, 256),
    "mix": lambda: clipping_mix(320, 256),
    "mix-777x1024": lambda: clipping_mix(777, 1024),
    "wide-mix": lambda: clipping_mix(1500, 200),
    "pink": lambda: pink(320, 256, 1),
    "scene-rgba": lambda: scene(256, 320, 2).convert("RGBA"),
    "small": lambda: scene(100, 80, 3),
}


@pytest.mark.parametrize("name", list(EMBED_CASES))
def test_embedding_gives_the_bytes_of_the_reference_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked, two-pass, two-thread rounding changes no byte, with or without the clipping correction,
    whether rows are rounded in the first pass or the second, on one thread or two."""
    from provgen.provenance import _parallel, wm1

    image = EMBED_CASES[name]()
    with monkeypatch.context() as patch:
        patch.setattr(RobustWatermark, "_apply", reference_apply)
        expected = WM.embed(image, PAYLOAD).tobytes()
    for min_pixels, chunk_bytes in ((1, wm1._CHUNK_BYTES), (2**62, wm1._CHUNK_BYTES), (1, 2**16)):
        monkeypatch.setattr(_parallel, "MIN_PIXELS", min_pixels)  # 1: every image on two threads
        monkeypatch.setattr(wm1, "_CHUNK_BYTES", chunk_bytes)
        assert WM.embed(image, PAYLOAD).tobytes() == expected, (min_pixels, chunk_bytes)


def test_parallel_helpers_keep_order_and_raise() -> None:
    from provgen.provenance import _parallel

    assert _parallel.run_items(lambda i: i * i, range(200)) == [i * i for i in range(200)]
    assert _parallel.run_items(lambda i: i, [], parallel=True) == []
    assert _parallel.both(lambda: "f", lambda: "g") == ("f", "g")

    def fail_at_150(i: int) -> int:
        if i == 150:
            raise ValueError("item 150")
        return i

    with pytest.raises(ValueError, match="item 150"):
        _parallel.run_items(fail_at_150, range(200))
    with pytest.raises(ZeroDivisionError):
        _parallel.both(lambda: 1, lambda: 1 // 0)


# -------------------------------------------------------------------------------------- false positives


def test_unmarked_and_foreign_images_read_none() -> None:
    rng = np.random.default_rng(5)
    images = [Image.new("RGB", (300, 300), (176, 196, 222)), Image.new("RGB", (256, 256))]
    for seed in range(3):
        big = scene(700, 520, 40 + seed)
        x0, y0 = int(rng.integers(0, 150)), int(rng.integers(0, 100))
        images += [big, big.crop((x0, y0, x0 + 500, y0 + 400)), pink(384, 256, 50 + seed),
                   big.resize((int(rng.integers(80, 400)), int(rng.integers(80, 400))))]
    images.append(GridWatermark().embed(scene(512, 512, 60), PAYLOAD))  # another method's mark
    assert [payload_of(image) for image in images] == [None] * len(images)
    # and the old method does not read the new mark
    assert payload_of(WM.embed(scene(512, 512, 61), PAYLOAD), GridWatermark()) is None


@pytest.mark.parametrize("size", [(128, 128), (200, 150), (256, 256), (384, 300), (700, 520), (1024, 1024)])
def test_at_most_18_words_checked_per_image(size: tuple[int, int]) -> None:
    """The false-positive bound (docs/watermark.md: N = 18 checked words, N * 2**-32 per image) holds whatever
    the size: however many hypotheses are ranked and refined, at most 18 decoded words meet the check bits."""
    method = RobustWatermark()
    checked = []
    info_bits = method._info_bits

    def counting(payload: int) -> list[int]:
        checked.append(payload)
        return info_bits(payload)

    method._info_bits = counting  # type: ignore[method-assign]
    for image in (scene(*size, seed=70), pink(*size, seed=71)):
        checked.clear()
        assert payload_of(image, method) is None
        assert 1 <= len(checked) <= 18, (size, len(checked))


def test_another_key_reads_nothing(marked: dict) -> None:
    assert payload_of(marked["scene"][1], RobustWatermark(key=12345)) is None


# ---------------------------------------------------------------------------------------- bounds, modes


@pytest.mark.parametrize("payload", [-1, 2**48, 1.5, "7", None])
def test_payload_out_of_range_is_refused(payload: object) -> None:
    with pytest.raises(WatermarkError, match="payload"):
        WM.embed(scene(128, 128), payload)  # type: ignore[arg-type]


def test_too_small_is_refused() -> None:
    with pytest.raises(WatermarkError, match="at least 64"):
        WM.embed(Image.new("RGB", (63, 200)), PAYLOAD)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "I", "F", "CMYK", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (31, 400), (40, 40), (3000, 50)])
def test_decode_never_raises(mode: str, size: tuple[int, int]) -> None:
    assert WM.decode(Image.new(mode, size)) is None


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_embed_decode_round_trip(tmp_path: Path) -> None:
    from provgen.cli.main import cli

    source = tmp_path / "in.png"
    scene(384, 320, 8).save(source)
    runner = CliRunner()
    out = tmp_path / "out.jpg"
    result = runner.invoke(cli, ["watermark", "embed", str(source), str(out), "--payload", "0x00c0ffee1234", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["payload"] == "00c0ffee1234" and out.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing behind
    result = runner.invoke(cli, ["watermark", "decode", str(out), str(source), "--json"])
    assert result.exit_code == 1  # the unmarked input has no mark
    found, missing = json.loads(result.stdout)
    assert found == {"file": str(out), "found": True, "payload": "00c0ffee1234", "method": "provgen-wm/1",
                     "confidence": found["confidence"]} and 0 < found["confidence"] <= 1
    assert missing["found"] is False and missing["payload"] is None
    result = runner.invoke(cli, ["watermark", "decode", str(out), "--method", "provgen-grid/1"])
    assert result.exit_code == 1 and "no watermark" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--payload", "1ffffffffffff"], "`--payload`: '1ffffffffffff' is 49 bits wide"),
    (["--payload", "xyz"], "`--payload`: 'xyz' is not a hexadecimal number"),
    (["--payload", "12", "--method", "nope"], "`--method`: unknown watermark method 'nope'"),
])
def test_cli_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    from provgen.cli.main import cli

    source = tmp_path / "in.png"
    scene(128, 128).save(source)
    result = CliRunner().invoke(cli, ["watermark", "embed", str(source), str(tmp_path / "o.png"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "o.png").exists()
