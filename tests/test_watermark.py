"""provgen.provenance.watermark: the built-in invisible watermark (GridWatermark, ``provgen-grid/1``).

Every image here is synthetic and deterministic (fixed seeds), so every outcome is too.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, features

from provgen.core.errors import WatermarkError
from provgen.provenance.watermark import MIN_PSNR_DB, GridWatermark, WatermarkMethod, WatermarkReading

WM = GridWatermark()
PAYLOAD = 0x1234_5678_9ABC
SATURATED = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (0, 0, 0)]


# ------------------------------------------------------------------------------------------------ images


def natural(width: int, height: int, seed: int = 0) -> Image.Image:
    """Colourised Mandelbrot detail over a gradient, with soft shapes and sensor-like noise."""
    rng = np.random.default_rng(seed)
    cx, cy, s = rng.uniform(-0.8, -0.4), rng.uniform(-0.3, 0.3), rng.uniform(0.4, 1.2)
    extent = (cx - s, cy - s * height / width, cx + s, cy + s * height / width)
    m = np.asarray(Image.effect_mandelbrot((width, height), extent, 120), dtype=np.float64)[..., None] / 255
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    base = rng.uniform(40, 200, 3) + rng.uniform(-60, 60, 3) * xx[..., None] + rng.uniform(-60, 60, 3) * yy[..., None]
    rgb = base * 0.6 + 110 * (0.5 + 0.5 * np.sin(m * rng.uniform(4, 10) + rng.uniform(0, 6, 3))) * 0.8
    rgb += rng.normal(0, 3, rgb.shape)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0, r = rng.integers(0, width), rng.integers(0, height), rng.integers(width // 12, width // 5)
        draw.ellipse((int(x0), int(y0), int(x0 + r), int(y0 + r)), fill=tuple(int(v) for v in rng.integers(30, 230, 3)))
    return image


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def gradient(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    c0, c1 = rng.uniform(20, 235, (2, 3))
    t = np.linspace(0, 1, width)[None, :, None]
    return Image.fromarray(np.repeat(c0 + (c1 - c0) * t, height, axis=0).astype(np.uint8))


def flat(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.new("RGB", (width, height), (176, 196, 222))


def saturated_shapes(width: int, height: int, seed: int = 0) -> Image.Image:
    """Pure primary/secondary colour shapes on a mid-grey gradient: lots of clipped pixels."""
    rng = np.random.default_rng(seed)
    image = gradient(width, height, seed)
    draw = ImageDraw.Draw(image)
    for i in range(10):
        x0, y0, r = rng.integers(-width // 8, width), rng.integers(-height // 8, height), rng.integers(20, width // 3)
        shape = draw.ellipse if i % 2 else draw.rectangle
        shape((int(x0), int(y0), int(x0 + r), int(y0 + r)), fill=SATURATED[i % len(SATURATED)])
    return image


KINDS = {"natural": natural, "noise": noise, "gradient": gradient, "flat": flat, "saturated": saturated_shapes}


def reencode(image: Image.Image, fmt: str, **options: object) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    buffer.seek(0)
    out = Image.open(buffer)
    out.load()
    return out


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((x - y) ** 2)))


def payload_of(image: Image.Image, method: GridWatermark = WM) -> int | None:
    reading = method.decode(image)
    return None if reading is None else reading.payload


# ---------------------------------------------------------------------------------------------- contract


def test_method_contract() -> None:
    assert isinstance(WM, WatermarkMethod)
    assert (WM.name, WM.payload_bits, WM.soft_binding_alg) == ("provgen-grid/1", 48, "io.provgen.watermark.grid.v1")
    assert WM.min_size == 64


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("size", [(256, 256), (512, 768)])
def test_png_round_trip(kind: str, size: tuple[int, int]) -> None:
    image = KINDS[kind](*size, seed=1)
    marked = reencode(WM.embed(image, PAYLOAD), "PNG")
    reading = WM.decode(marked)
    assert isinstance(reading, WatermarkReading)
    assert (reading.method, reading.payload) == ("provgen-grid/1", PAYLOAD)
    assert 0.7 < reading.confidence <= 1.0


def test_embed_returns_a_new_image_of_the_same_size_and_leaves_the_input_alone() -> None:
    image = natural(320, 200, seed=2)
    before = image.tobytes()
    marked = WM.embed(image, PAYLOAD)
    assert marked is not image and marked.size == image.size and marked.mode == "RGB"
    assert image.tobytes() == before
    assert marked.tobytes() != before
    assert WM.embed(image, PAYLOAD).tobytes() == marked.tobytes()  # deterministic


@pytest.mark.parametrize("kind", list(KINDS))
def test_psnr_at_least_40_db(kind: str) -> None:
    for size in [(256, 256), (640, 480)]:
        image = KINDS[kind](*size, seed=3)
        value = psnr(image, WM.embed(image, PAYLOAD))
        assert value >= 40.0, (kind, size, value)
        assert value < 50  # and the mark is really there
    assert MIN_PSNR_DB >= 40


def test_different_payloads_decode_to_themselves() -> None:
    image = natural(256, 256, seed=4)
    payloads = [0, 1, 2**48 - 1, 0xA5A5_A5A5_A5A5, *np.random.default_rng(4).integers(0, 2**48, 6).tolist()]
    marked = [WM.embed(image, p) for p in payloads]
    assert [payload_of(m) for m in marked] == payloads
    assert len({m.tobytes() for m in marked}) == len(payloads)


def test_another_key_reads_nothing() -> None:
    marked = WM.embed(natural(256, 256, seed=5), PAYLOAD)
    assert payload_of(marked, GridWatermark(key=12345)) is None
    assert payload_of(marked, GridWatermark()) == PAYLOAD


# ---------------------------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("quality", [75, 90])
@pytest.mark.parametrize(("kind", "size"), [("natural", 256), ("natural", 512), ("noise", 256), ("gradient", 256),
                                            ("flat", 512), ("saturated", 512)])
def test_survives_jpeg(kind: str, size: int, quality: int) -> None:
    marked = WM.embed(KINDS[kind](size, size, seed=6), PAYLOAD)
    assert payload_of(reencode(marked, "JPEG", quality=quality)) == PAYLOAD


@pytest.mark.parametrize("resample", [Image.Resampling.LANCZOS, Image.Resampling.BILINEAR])
@pytest.mark.parametrize(("kind", "size"), [("natural", (256, 256)), ("noise", (512, 384)),
                                            ("saturated", (512, 512))])
def test_survives_half_size_kept_small(kind: str, size: tuple[int, int], resample: Image.Resampling) -> None:
    marked = WM.embed(KINDS[kind](*size, seed=7), PAYLOAD)
    small = marked.resize((size[0] // 2, size[1] // 2), resample)
    assert payload_of(small) == PAYLOAD


def test_survives_upscaling_past_the_decode_size_limit() -> None:
    marked = WM.embed(natural(1024, 768, seed=8), PAYLOAD)
    big = marked.resize((2600, 1950), Image.Resampling.BICUBIC)  # decode box-reduces it first
    assert payload_of(big) == PAYLOAD


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
@pytest.mark.parametrize(("kind", "size"), [("natural", 256), ("natural", 512), ("gradient", 256), ("noise", 256)])
def test_survives_webp(kind: str, size: int) -> None:
    marked = WM.embed(KINDS[kind](size, size, seed=9), PAYLOAD)
    assert payload_of(reencode(marked, "WEBP", quality=80)) == PAYLOAD


def test_crop_defeats_it() -> None:
    """Documented limit: the grid is relative to the borders and is not searched."""
    marked = WM.embed(natural(512, 512, seed=10), PAYLOAD)
    assert payload_of(marked.crop((40, 40, 512, 512))) is None


# -------------------------------------------------------------------------------------- false positives


def unmarked_images() -> list[Image.Image]:
    images = []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        big = natural(600, 450, seed=100 + seed)
        x0, y0 = int(rng.integers(0, 200)), int(rng.integers(0, 150))
        images.append(big.crop((x0, y0, x0 + 300 + seed * 20, y0 + 260)))
        images.append(big.resize((int(rng.integers(70, 900)), int(rng.integers(70, 700)))))
        images.append(noise(128 + 32 * seed, 256, seed=seed))
        images.append(gradient(256, 128 + 40 * seed, seed=seed))
        images.append(saturated_shapes(256 + 16 * seed, 256, seed=seed))
    images += [flat(256, 256), Image.new("RGB", (512, 512)), Image.new("RGB", (300, 300), "white")]
    return images


def test_unmarked_images_read_none() -> None:
    images = unmarked_images()
    assert len(images) >= 40
    assert [payload_of(image) for image in images] == [None] * len(images)


def test_two_payloads_on_one_image_stay_apart_after_jpeg() -> None:
    image = natural(256, 256, seed=11)
    a, b = WM.embed(image, 111), WM.embed(image, 222)
    assert payload_of(reencode(a, "JPEG", quality=80)) == 111
    assert payload_of(reencode(b, "JPEG", quality=80)) == 222


# ---------------------------------------------------------------------------------------- bounds, modes


@pytest.mark.parametrize("payload", [-1, 2**48, 2**64, 1.5, "7", None])
def test_payload_out_of_range_is_refused(payload: object) -> None:
    with pytest.raises(WatermarkError, match="payload"):
        WM.embed(natural(256, 256), payload)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(63, 300), (300, 63), (10, 10)])
def test_too_small_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(WatermarkError, match="at least 64"):
        WM.embed(noise(*size), PAYLOAD)


def test_smallest_accepted_size_round_trips() -> None:
    assert payload_of(WM.embed(natural(64, 64, seed=12), PAYLOAD)) == PAYLOAD


def test_numpy_integer_payload_is_accepted() -> None:
    assert payload_of(WM.embed(natural(128, 128, seed=12), np.uint64(PAYLOAD))) == PAYLOAD  # type: ignore[arg-type]


@pytest.mark.parametrize("strength", [0, -1.0])
def test_nonpositive_strength_is_refused(strength: float) -> None:
    with pytest.raises(WatermarkError, match="strength"):
        GridWatermark(strength=strength)


def test_rgba_keeps_its_alpha() -> None:
    rgb = natural(256, 256, seed=13)
    alpha = Image.linear_gradient("L").resize((256, 256))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    marked = WM.embed(rgba, PAYLOAD)
    assert marked.mode == "RGBA"
    assert marked.getchannel("A").tobytes() == alpha.tobytes()
    assert payload_of(reencode(marked, "PNG")) == PAYLOAD


def test_black_and_white_drawing_round_trips() -> None:
    """Every pixel 0 or 255: the mark can only move pixels inwards, and every edge counts as clipped."""
    drawing = Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 60).convert("1")
    marked = WM.embed(drawing, PAYLOAD)
    assert payload_of(marked) == PAYLOAD
    assert payload_of(reencode(marked, "JPEG", quality=90)) == PAYLOAD


def test_grayscale_input_becomes_rgb_and_decodes() -> None:
    gray = natural(256, 256, seed=14).convert("L")
    marked = WM.embed(gray, PAYLOAD)
    assert marked.mode == "RGB" and marked.size == gray.size
    assert payload_of(marked) == PAYLOAD


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "I", "I;16", "F", "CMYK", "RGBA", "YCbCr", "HSV", "La"])
@pytest.mark.parametrize("size", [(1, 1), (31, 400), (40, 40), (300, 200)])
def test_decode_never_raises(mode: str, size: tuple[int, int]) -> None:
    image = Image.new(mode, size)
    assert WM.decode(image) is None


@pytest.mark.parametrize(("mode", "size"), [("L", (4000, 3000)), ("RGB", (30000, 40)), ("RGB", (40, 20000))])
def test_decode_of_huge_or_extreme_images_reads_none(mode: str, size: tuple[int, int]) -> None:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    assert WM.decode(image) is None
