"""invisible-watermark compatibility in numpy (provgen.provenance.imwatermark_compat, plugin imwatermark-compat)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from provgen.core.errors import WatermarkError
from provgen.provenance import imwatermark_compat as iw
from provgen.provenance.imwatermark_compat import (
    SDXL_MESSAGE,
    STOCK_MARKS,
    DwtDctSvdWatermark,
    DwtDctWatermark,
    bits_from_bytes,
    bytes_from_bits,
    decode_bits,
    detect_stock_marks,
    embed_bits,
    message_bytes,
    simulate_sdxl_watermark,
)

PHOTOS = ("astronaut", "coffee", "chelsea")


def photo(name: str, size: int) -> Image.Image:
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    pytest.importorskip("skimage", reason="scikit-image (dev extra) ships the test photographs")
    return [photo(name, 512) for name in PHOTOS]


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def unmarked_images(photos: list[Image.Image]) -> Iterator[Image.Image]:
    rng = np.random.default_rng(5)
    yield from photos
    yield from (jpeg(p, 85) for p in photos)
    yield from (p.crop((13, 7, 500, 470)) for p in photos)
    yield Image.new("RGB", (512, 512), (128, 128, 128))
    yield Image.new("RGB", (512, 512), (20, 40, 220))
    yield Image.fromarray(rng.integers(0, 256, (384, 640, 3), dtype=np.uint8))
    ramp = np.linspace(0, 255, 512)
    yield Image.fromarray(np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), -1)
                          .astype(np.uint8))


# ----------------------------------------------------------------------------------- colour and layout


def test_u_plane_is_opencvs_fixed_point_bgr2yuv() -> None:
    rgb = np.array([[[0, 0, 255], [255, 255, 255], [0, 0, 0], [255, 0, 0], [12, 200, 77]]], dtype=np.uint8)
    # hand-computed with OpenCV's formula: Y = (B*1868 + G*9617 + R*4899 + 8192) >> 14,
    # U = ((B - Y) * 8061 + (128 << 14) + 8192) >> 14
    assert iw.u_plane(rgb).tolist() == [[239, 128, 128, 91, 102]]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    f = x.astype(np.float64)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    assert np.abs(iw.u_plane(x) - (0.492 * (f[..., 2] - y) + 128)).max() <= 1.0
    try:
        import cv2
    except ImportError:
        return
    assert np.array_equal(iw.u_plane(x), cv2.cvtColor(x[:, :, ::-1].copy(), cv2.COLOR_BGR2YUV)[..., 1])


def test_haar_ll_is_pywts_to_the_last_bit() -> None:
    pywt = pytest.importorskip("pywt", reason="PyWavelets is only needed to check the hand-written Haar LL")
    u = np.random.default_rng(1).integers(0, 256, (70, 90)).astype(np.uint8)
    ll = iw.haar_ll(u)
    assert np.array_equal(ll, pywt.dwt2(u[:68, :88], "haar")[0])  # imwatermark crops to a multiple of 4


def test_bits_and_bytes_conventions() -> None:
    assert bits_from_bytes(b"\x80\x01") == [1] + [0] * 14 + [1]
    assert bytes_from_bits(bits_from_bytes(b"ABCDEF")) == b"ABCDEF"
    assert message_bytes(0x123456789ABC)[:6] == bytes.fromhex("123456789abc")
    # neither an all-zero nor an all-one word (flat images) passes the CRC
    assert message_bytes(0)[6:] != b"\0\0"
    assert message_bytes((1 << 48) - 1)[6:] != b"\xff\xff"
    assert STOCK_MARKS[0].bits == tuple(int(c) for c in f"{SDXL_MESSAGE:048b}")


# --------------------------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", [DwtDctSvdWatermark(), DwtDctWatermark()], ids=lambda m: m.name)
def test_round_trip_on_photographs(photos: list[Image.Image], method) -> None:
    for i, image in enumerate(photos):
        payload = 0xC0FFEE000000 + 4099 * i
        marked = method.embed(image, payload)
        assert marked.size == image.size and marked.mode == "RGB"
        diff = np.asarray(marked, np.float64) - np.asarray(image, np.float64)
        assert 10 * np.log10(255**2 / np.mean(diff**2)) > 36.0  # PSNR
        reading = method.decode(marked)
        assert reading is not None and reading.payload == payload and reading.method == method.name
        # imwatermark "bytes" view: 8 bytes = id + CRC-16, read exactly
        assert bytes_from_bits(decode_bits(marked, 64, method.algorithm)) == message_bytes(payload)


def test_dwtdctsvd_survives_jpeg95_dwtdct_does_not_lie(photos: list[Image.Image]) -> None:
    svd, dct = DwtDctSvdWatermark(), DwtDctWatermark()
    for image in photos:
        reading = svd.decode(jpeg(svd.embed(image, 0x0123456789AB), 95))
        assert reading is not None and reading.payload == 0x0123456789AB
        # dwtDct is erased by JPEG 95 (reference §1); the CRC keeps it from reporting a wrong id
        reading = dct.decode(jpeg(dct.embed(image, 0x0123456789AB), 95))
        assert reading is None or reading.payload == 0x0123456789AB


def test_no_reading_on_unmarked_images(photos: list[Image.Image]) -> None:
    methods = (DwtDctSvdWatermark(), DwtDctWatermark())
    for image in unmarked_images(photos):
        assert [m.decode(image) for m in methods] == [None, None]


def test_embed_keeps_alpha_and_rejects_bad_input(photos: list[Image.Image]) -> None:
    method = DwtDctSvdWatermark()
    rgba = photos[0].convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 200))
    marked = method.embed(rgba, 42)
    assert marked.mode == "RGBA" and marked.getchannel("A").getextrema() == (200, 200)
    assert method.decode(marked).payload == 42
    with pytest.raises(WatermarkError):
        method.embed(photos[0], 1 << 48)
    with pytest.raises(WatermarkError):
        method.embed(photos[0].resize((200, 200)), 1)
    assert method.decode(photos[0].resize((200, 200))) is None


def test_any_length_bits_mode(photos: list[Image.Image]) -> None:
    bits = [int(b) for b in np.random.default_rng(3).integers(0, 2, 37)]
    for algorithm in ("dwtDct", "dwtDctSvd"):
        assert decode_bits(embed_bits(photos[1], bits, algorithm), 37, algorithm) == bits


def test_plugin_registers_both_but_not_as_default() -> None:
    from provgen.core.plugins import get_plugin_manager
    from provgen.core.registries import get_watermark_method, watermark_methods

    pm = get_plugin_manager()
    methods = watermark_methods(pm)
    assert {"imwatermark-dwtdct", "imwatermark-dwtdctsvd"} <= set(methods)
    assert methods["imwatermark-dwtdctsvd"].plugin == "imwatermark-compat"
    assert set(list(methods)[:2]) == {"provgen-wm/1", "provgen-grid/1"}  # verify tries the provgen marks first
    assert get_watermark_method(pm, "imwatermark-dwtdctsvd").item.payload_bits == 48
    assert ("imwatermark-rivagan" in methods) == iw.rivagan_available()
    assert not any(methods[name].item.auto_detect for name in ("imwatermark-dwtdct", "imwatermark-dwtdctsvd"))


def test_watermark_cli_decodes_with_method_or_when_configured(photos: list[Image.Image], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from provgen.cli.main import cli

    source, target = tmp_path / "in.png", tmp_path / "out.png"
    photos[2].save(source)
    runner = CliRunner()
    result = runner.invoke(cli, ["watermark", "embed", str(source), str(target), "--payload", "0xabc",
                                 "--method", "imwatermark-dwtdctsvd", "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["watermark", "decode", str(target), "--json"])
    assert result.exit_code == 1  # not tried blindly
    asked = ((["--method", "imwatermark-dwtdctsvd"], {}), ([], {"PROVGEN_WATERMARK": "imwatermark-dwtdctsvd"}))
    for args, env in asked:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        result = runner.invoke(cli, ["watermark", "decode", str(target), "--json", *args])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["payload"] == "000000000abc"
    sdxl = tmp_path / "sdxl.png"
    simulate_sdxl_watermark(photos[0]).save(sdxl)
    result = runner.invoke(cli, ["verify", "--no-record", str(sdxl)])
    assert result.exit_code == 1 and "UNKNOWN" in result.output
    assert "stock watermark sdxl (dwtDct, bit accuracy 1.0)" in result.output, result.output


# ----------------------------------------------------------------------------------------- stock marks


def test_stock_sdxl_mark_is_detected(photos: list[Image.Image]) -> None:
    bits = list(STOCK_MARKS[0].bits)
    for image in photos:
        for marked in (embed_bits(image, bits, "dwtDct"), simulate_sdxl_watermark(image)):
            found = detect_stock_marks(marked)
            assert [f["name"] for f in found] == ["sdxl"], found
            assert found[0]["method"] == "dwtDct" and found[0]["message"] == "b3ec907bb19e"
            assert found[0]["bit_accuracy"] >= iw.STOCK_MIN_ACCURACY


def test_no_stock_mark_on_unmarked_images(photos: list[Image.Image]) -> None:
    for image in unmarked_images(photos):
        assert detect_stock_marks(image) == []
    assert detect_stock_marks(Image.new("RGB", (100, 100))) == []


def test_verify_reports_stock_marks_and_tries_imwatermark_methods_only_when_asked(
        photos: list[Image.Image], tmp_path: Path) -> None:
    from provgen.provenance.registry import open_registry
    from provgen.provenance.verify import verify_file

    class ManualOnly:  # e.g. imwatermark-rivagan: never tried blindly
        name, payload_bits, soft_binding_alg, auto_detect = "manual", 32, "x", False

        def decode(self, image: Image.Image) -> None:
            raise AssertionError("verify must not try a method with auto_detect = False")

    marked, plain, ours = tmp_path / "sdxl.png", tmp_path / "plain.png", tmp_path / "ours.jpg"
    simulate_sdxl_watermark(photos[0]).save(marked)
    photos[0].save(plain)
    DwtDctSvdWatermark().embed(photos[1], 0x00C0FFEE1234).save(ours, quality=90)
    with open_registry(f"sqlite:///{tmp_path / 'registry.sqlite'}") as registry:
        kwargs = {"registry": registry, "trust_anchors_pem": b"", "max_distance": 7}
        report = verify_file(marked, methods=[ManualOnly(), DwtDctWatermark()], **kwargs)
        assert [s["name"] for s in report.stock_watermarks] == ["sdxl"]
        assert report.to_dict()["stock_watermarks"][0]["method"] == "dwtDct"
        assert report.watermark["found"] is False and report.verdict == "unknown"
        assert verify_file(plain, methods=[DwtDctSvdWatermark()], **kwargs).stock_watermarks == []
        # 16 check bits are too few to try on every image: only when it is the method images are marked with
        assert verify_file(ours, methods=[DwtDctSvdWatermark()], **kwargs).watermark["found"] is False
        report = verify_file(ours, methods=[DwtDctSvdWatermark()], marking_method="imwatermark-dwtdctsvd", **kwargs)
        assert report.watermark["found"] and report.watermark["id"] == "00c0ffee1234"
        assert report.watermark["method"] == "imwatermark-dwtdctsvd"


# -------------------------------------------------------------------------------- real invisible-watermark


def test_interoperates_with_real_invisible_watermark(photos: list[Image.Image]) -> None:
    pytest.importorskip("cv2", reason="interop check needs invisible-watermark + opencv, which provgen avoids")
    imwatermark = pytest.importorskip("imwatermark", reason="invisible-watermark is not installed (optional: "
                                      "pip install --no-deps invisible-watermark)")
    image = photos[0]
    bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    word = message_bytes(0xABCDEF012345)
    # ours -> theirs
    for algorithm in ("dwtDct", "dwtDctSvd"):
        ours = np.ascontiguousarray(np.asarray(embed_bits(image, bits_from_bytes(word), algorithm))[:, :, ::-1])
        assert imwatermark.WatermarkDecoder("bytes", 64).decode(ours, algorithm) == word
    # theirs -> ours (dwtDctSvd is exact; their dwtDct does not round-trip 64 bits reliably even by itself)
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bytes", word)
    theirs = Image.fromarray(np.ascontiguousarray(encoder.encode(bgr, "dwtDctSvd")[:, :, ::-1]))
    assert DwtDctSvdWatermark().decode(theirs).payload == 0xABCDEF012345
