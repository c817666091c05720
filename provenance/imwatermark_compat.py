"""invisible-watermark (``imwatermark`` 0.2.0) compatibility in numpy: no opencv-python, no torch.

PyPI's ``invisible-watermark`` declares ``opencv-python`` (the GUI build) and an unpinned ``torch`` (a CUDA build of
several GB), and a pip extra cannot say ``--no-deps``. Its two classic methods are small enough to re-implement
here, vectorised, on an RGB :class:`PIL.Image.Image`:

* ``dwtDct`` (what Stable Diffusion XL stamps on its outputs) and
* ``dwtDctSvd``,

both **readable by imwatermark's own decoder and able to read what its encoder wrote** (see
../shared/reference/watermark.md §8 and docs/watermark.md, "invisible-watermark compatibility").

What is reproduced from imwatermark, because decoding needs it
--------------------------------------------------------------
* Colour: ``cv2.cvtColor(bgr, COLOR_BGR2YUV)`` on uint8 pixels, bit for bit (OpenCV's 14-bit fixed point,
  :func:`u_plane`). Only the U plane is used: the default ``scales=[0, 36, 36]`` meets ``for channel in
  range(2)``, so **V is never used** (its quirk 3) and Y has scale 0.
* Layout: the U plane cropped to a multiple of 4 px, its Haar LL band (computed in pywt's floating-point order,
  :func:`haar_ll`), cut into 4 x 4 blocks of LL (8 x 8 px) in raster order; block ``k`` carries bit
  ``k % L`` (quirk 2: the bits form columns, so errors are correlated).
* Quantiser: step ``scale = 36``; a bit 1 is ``value % 36 > 18``. The value is, for ``dwtDct``, the largest
  ``|LL|`` of the block ignoring its first element (quirk 1: there is no DCT), and for ``dwtDctSvd`` the largest
  singular value of the block's DCT, which equals that of the block itself (the 4 x 4 DCT is orthonormal, so it
  is skipped). Per bit, the votes are averaged and ``mean * 255 > 127`` decides.
* Payload conventions: ``"bits"`` (a list of 0/1, used as is) and ``"bytes"`` (``np.unpackbits``: most
  significant bit first). Both are the same bit sequence on the image.

What is *not* reproduced (embedding only; imwatermark's decoder does not notice)
------------------------------------------------------------------------------
* Quirk 4: imwatermark calls ``idwt2((ca, (v, h, d)))`` with H and V swapped, which transposes every 2 x 2
  block of U, and truncates floats to uint8. Here the LL change goes straight into the pixels (a change ``d`` of
  one LL coefficient adds ``d / 2`` to each of its 2 x 2 U values), converted to RGB along the direction that
  changes U only (Y and V kept), and rounded. Less distortion, same decoded values.
* The embedder aims at the *nearest* lattice point of the bit's class (imwatermark always rounds down within
  the cell: up to 0.75 step of change), and for ``dwtDct`` it makes sure the marked coefficient stays the
  block's largest (imwatermark's does not: 15-27% of its blocks decode wrongly with no attack at all). For
  ``dwtDctSvd`` it keeps the largest singular value the largest.

``rivaGan`` (32 bits, ONNX models shipped inside the ``invisible-watermark`` wheel) is not re-implemented:
:class:`RivaGanWatermark` runs imwatermark's bundled ONNX files with onnxruntime, without importing imwatermark
(whose ``__init__`` imports torch). It exists only where both are installed (``pip install --no-deps
invisible-watermark onnxruntime``).

provgen methods (:class:`DwtDctWatermark`, :class:`DwtDctSvdWatermark`): 48-bit id + CRC-16 as 8 imwatermark
"bytes", read only with a valid CRC and a confidence >= 0.3. Too few check bits to try on every image, so
``auto_detect = False``: verify tries them only when they are the marking method (``PROVGEN_WATERMARK``).

Stock marks: :func:`detect_stock_marks` looks for the fixed message that diffusers' Stable Diffusion XL
pipelines embed with ``dwtDct`` when ``invisible-watermark`` is installed (``0xB3EC907BB19E``, 48 bits). SDXL
embeds it in the float domain, which stock imwatermark reads inverted on warm colours; three readings are
scored (:func:`_stock_accuracy`). diffusers' FLUX pipelines embed no invisible watermark.
"""

from __future__ import annotations

import binascii
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from provgen.core.errors import WatermarkError
from provgen.provenance.watermark import WatermarkReading

__all__ = [
    "DwtDctSvdWatermark",
    "DwtDctWatermark",
    "RivaGanWatermark",
    "SDXL_MESSAGE",
    "STOCK_MARKS",
    "STOCK_MIN_ACCURACY",
    "bits_from_bytes",
    "bytes_from_bits",
    "decode_bits",
    "detect_stock_marks",
    "embed_bits",
    "haar_ll",
    "message_bytes",
    "rivagan_available",
    "simulate_sdxl_watermark",
    "u_plane",
    "u_plane_float",
    "vote_means",
]

Algorithm = Literal["dwtDct", "dwtDctSvd"]
ALGORITHMS: tuple[Algorithm, ...] = ("dwtDct", "dwtDctSvd")

SCALE = 36.0  #: imwatermark's default quantisation step for U (``scales=[0, 36, 36]``)
MIN_PIXELS = 256 * 256  #: imwatermark refuses images with fewer pixels (``r * c < 256 * 256``)
MAX_PIXELS = 4096 * 4096  #: larger images are not decoded (the marks are read at full resolution: memory)
_BLOCK = 4  # LL block side
_HAAR = 0.7071067811865476  # pywt's Haar filter taps (float64)

# OpenCV's fixed-point BGR -> YUV (color_yuv.simd.hpp, yuv_shift = 14): Y = descale(B*B2Y + G*G2Y + R*R2Y),
# U = descale((B - Y) * B2UI + (128 << 14)), descale(x) = (x + (1 << 13)) >> 14.
_SHIFT = 14
_R2Y, _G2Y, _B2Y = 4899, 9617, 1868
_B2UI = 8061
# The RGB direction that raises U by one level and leaves Y (and V, since R does not move) unchanged.
_DB = (1 << _SHIFT) / _B2UI  # 2.0325
_DG = -_B2Y / _G2Y * _DB  # -0.3948
_ARGMAX_MARGIN = 3.0  # dwtDct: the marked LL value stays this far above the block's others (rounding noise)
_SVD_MARGIN = 3.0  # dwtDctSvd: the marked singular value stays this far above the second one


# ------------------------------------------------------------------------------------------ colour & layout


def u_plane(rgb: np.ndarray) -> np.ndarray:
    """The U plane (int32, 0..255) of an RGB uint8 array, exactly ``cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)[..., 1]``.

    Written out by hand (OpenCV's 14-bit fixed point, integer arithmetic, so bit-exact) so that provgen does not
    depend on opencv: ``invisible-watermark`` wants the GUI ``opencv-python`` build, which clashes with
    ``opencv-python-headless`` and pulls X11/Qt libraries onto servers."""
    x = rgb.astype(np.int32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = (b * _B2Y + g * _G2Y + r * _R2Y + (1 << (_SHIFT - 1))) >> _SHIFT
    u = ((b - y) * _B2UI + (128 << _SHIFT) + (1 << (_SHIFT - 1))) >> _SHIFT
    return np.clip(u, 0, 255)  # cv2's saturate_cast (never reached: U stays within 2..253)


def haar_ll(u: np.ndarray) -> np.ndarray:
    """Haar LL band of ``u`` cropped to a multiple of 4 px (the area imwatermark transforms), float64.

    Mathematically ``(a + b + c + d) / 2`` of each 2 x 2 block. Computed like ``pywt.dwt2(x, 'haar')[0]``: along
    rows first, then columns, each output ``c * x1 + c * x0`` with ``c = 1/sqrt(2)`` rounded, so the values agree
    with pywt's to the last bit and the ``% 36`` decisions at the quantiser boundary agree too."""
    h4, w4 = u.shape[0] // 4 * 4, u.shape[1] // 4 * 4
    x = u[:h4, :w4].astype(np.float64)
    t = _HAAR * x[1::2] + _HAAR * x[0::2]
    return _HAAR * t[:, 1::2] + _HAAR * t[:, 0::2]


def _blocks(ll: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(n, 16) LL blocks in raster order (imwatermark's block index ``num``), blocks per column, per row."""
    nbr, nbc = ll.shape[0] // _BLOCK, ll.shape[1] // _BLOCK
    b = ll[: nbr * _BLOCK, : nbc * _BLOCK].reshape(nbr, _BLOCK, nbc, _BLOCK).transpose(0, 2, 1, 3)
    return b.reshape(nbr * nbc, _BLOCK * _BLOCK), nbr, nbc


def bits_from_bytes(data: bytes) -> list[int]:
    """imwatermark's ``"bytes"`` convention: ``np.unpackbits``, most significant bit first."""
    return [int(b) for b in np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))]


def bytes_from_bits(bits: Sequence[int]) -> bytes:
    """The inverse (``WatermarkDecoder('bytes', L)``): ``np.packbits`` of the first ``L // 8 * 8`` bits."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)[: len(bits) // 8 * 8]).tobytes()


def _rgb_and_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        return rgba.convert("RGB"), alpha
    return (image if image.mode == "RGB" else image.convert("RGB")), alpha


# ------------------------------------------------------------------------------------------- decode


def _values(blocks: np.ndarray, algorithm: Algorithm) -> np.ndarray:
    """The quantised value of each block: ``dwtDct``'s largest |LL| past index 0, ``dwtDctSvd``'s sigma_max."""
    if algorithm == "dwtDct":
        pos = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
        return np.abs(blocks[np.arange(blocks.shape[0]), pos])
    # sigma_max = sqrt(largest eigenvalue of B^T B): twice as fast as a batched SVD, equal to ~1e-13
    b = blocks.reshape(-1, _BLOCK, _BLOCK)
    return np.sqrt(np.maximum(np.linalg.eigvalsh(np.einsum("nij,nik->njk", b, b))[:, -1], 0.0))


def u_plane_float(rgb: np.ndarray) -> np.ndarray:
    """U as ``cv2.cvtColor`` computes it for **float32** BGR: ``0.492 (B - Y) + 0.5`` (OpenCV's chroma offset for
    float images is 0.5, not 128). diffusers' SDXL watermarker hands imwatermark float32 pixels in 0..255, so
    its marks live in this domain."""
    f = rgb.astype(np.float32)
    y = np.float32(0.299) * f[..., 0] + np.float32(0.587) * f[..., 1] + np.float32(0.114) * f[..., 2]
    return (f[..., 2] - y) * np.float32(0.492) + np.float32(0.5)


def vote_means(image: Image.Image | np.ndarray, length: int, algorithm: Algorithm, scale: float = SCALE,
               domain: Literal["uint8", "float"] = "uint8") -> np.ndarray | None:
    """Per bit, the fraction of its blocks that read 1 (imwatermark's ``avgScores``); ``None`` when the image has
    fewer blocks than bits. ``image``: a PIL image or an RGB uint8 array. ``domain="float"`` reads U as for
    float32 input (:func:`u_plane_float`) instead of uint8 (what imwatermark's decoder sees in a file)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    rgb = image if isinstance(image, np.ndarray) else np.asarray(_rgb_and_alpha(image)[0], dtype=np.uint8)
    blocks, _, _ = _blocks(haar_ll(u_plane(rgb) if domain == "uint8" else u_plane_float(rgb)))
    n = blocks.shape[0]
    if n < length or length < 1:
        return None
    votes = (_values(blocks, algorithm) % scale > 0.5 * scale).astype(np.float64)
    idx = np.arange(n) % length
    return np.bincount(idx, votes, length) / np.bincount(idx, minlength=length)


def decode_bits(image: Image.Image | np.ndarray, length: int, algorithm: Algorithm,
                scale: float = SCALE) -> list[int] | None:
    """``WatermarkDecoder('bits', length).decode(bgr, algorithm)`` on an RGB image (``None``: too few blocks)."""
    means = vote_means(image, length, algorithm, scale)
    return None if means is None else [int(v) for v in (means * 255 > 127)]


# ------------------------------------------------------------------------------------------- embed


def _targets(values: np.ndarray, bits: np.ndarray, floor: np.ndarray, scale: float) -> np.ndarray:
    """Nearest point of the bit's lattice ``scale * (k + 0.25 + 0.5 * bit)`` that is above ``floor`` (and >= 0).

    imwatermark's encoder takes ``k = floor(value / scale)`` instead (never the cell below); its decoder reads
    both the same way."""
    off = 0.25 + 0.5 * bits
    q = scale * (np.rint(values / scale - off) + off)
    q = np.where(q <= floor, q + scale, q)
    return np.where(q <= floor, q + scale, q)  # a second step only when floor was above the value itself


def embed_bits(image: Image.Image, bits: Sequence[int], algorithm: Algorithm, scale: float = SCALE) -> Image.Image:
    """Mark ``image`` so that ``WatermarkDecoder('bits', len(bits)).decode(bgr, algorithm)`` returns ``bits``.

    Returns an RGB image (RGBA when the input had transparency; alpha is kept as is). Raises
    :class:`~provgen.core.errors.WatermarkError` for images under 256 x 256 px (imwatermark's limit)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    wm = np.asarray([int(b) % 2 for b in bits], dtype=np.float64)
    if wm.size == 0:
        raise WatermarkError("no bits to embed")
    if image.width * image.height < MIN_PIXELS:
        raise WatermarkError(f"image is {image.width}x{image.height}; imwatermark's {algorithm} needs at least "
                             f"{MIN_PIXELS} pixels (256 x 256)")
    rgb, alpha = _rgb_and_alpha(image)
    arr = np.asarray(rgb, dtype=np.uint8)
    ll = haar_ll(u_plane(arr))
    blocks, nbr, nbc = _blocks(ll)
    n = blocks.shape[0]
    bit = wm[np.arange(n) % wm.size]
    if algorithm == "dwtDct":
        mag = np.abs(blocks)
        pos = np.argmax(mag[:, 1:], axis=1) + 1
        rows = np.arange(n)
        value = mag[rows, pos]
        others = mag[:, 1:].copy()
        others[rows, pos - 1] = -np.inf
        target = _targets(value, bit, others.max(axis=1) + _ARGMAX_MARGIN, scale)
        delta = np.zeros_like(blocks)
        # LL >= 0 here (U >= 0); imwatermark keeps the sign of negative values: do the same
        delta[rows, pos] = (target - value) * np.where(blocks[rows, pos] < 0, -1.0, 1.0)
    else:
        uu, s, vt = np.linalg.svd(blocks.reshape(n, _BLOCK, _BLOCK))
        target = _targets(s[:, 0], bit, s[:, 1] + _SVD_MARGIN, scale)
        delta = ((target - s[:, 0])[:, None, None] * uu[:, :, 0, None] * vt[:, None, 0, :]).reshape(n, 16)
    # back to the LL plane, then to pixels: each LL coefficient is half the sum of its 2 x 2 U values
    dll = delta.reshape(nbr, nbc, _BLOCK, _BLOCK).transpose(0, 2, 1, 3).reshape(nbr * _BLOCK, nbc * _BLOCK)
    du = np.repeat(np.repeat(dll * 0.5, 2, axis=0), 2, axis=1)
    out = arr.astype(np.float32)
    h, w = du.shape
    out[:h, :w, 1] += (_DG * du).astype(np.float32)
    out[:h, :w, 2] += (_DB * du).astype(np.float32)
    marked = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")
    if alpha is not None:
        marked.putalpha(alpha)
    return marked


# ------------------------------------------------------------------------------------- provgen methods


def _crc16(payload: int) -> int:
    """CRC-16/CCITT-FALSE (``binascii.crc_hqx``, initial value 0xFFFF) of the payload's 6 big-endian bytes.

    Not keyed, so anyone with stock imwatermark can check a mark. The 0xFFFF start keeps an all-zero word (what
    flat grey images read as) from passing."""
    return binascii.crc_hqx(payload.to_bytes(6, "big"), 0xFFFF)


def message_bytes(payload: int) -> bytes:
    """The 8 bytes a provgen imwatermark mark carries: the 48-bit id then its CRC-16, big-endian. Read them with
    stock imwatermark as ``WatermarkDecoder('bytes', 64).decode(bgr, 'dwtDctSvd')``."""
    return payload.to_bytes(6, "big") + _crc16(payload).to_bytes(2, "big")


class _ImwatermarkMethod:
    """A provgen watermark method on top of imwatermark's ``dwtDct`` / ``dwtDctSvd`` layout.

    Payload: the 48-bit registry id + CRC-16 = 64 bits, in imwatermark's ``"bytes"`` order
    (:func:`message_bytes`). :meth:`decode` returns a reading only when the CRC matches **and** the bits were read
    with at least :attr:`min_confidence` (mean of ``|2 * vote_mean - 1|`` over the 64 bits): an unmarked image
    passes a 16-bit CRC once in 65,536, and the gate removes most of those (not flat images, whose votes are
    unanimous). That is too many to try on every image, so ``auto_detect`` is False (see ``verify_bytes``)."""

    algorithm: Algorithm
    name: str
    soft_binding_alg: str
    payload_bits = 48
    #: not tried on every image: a 16-bit CRC lets 1 unmarked image in 65,536 through (x the confidence gate).
    #: verify tries it when it is PROVGEN_WATERMARK; ``provgen watermark decode --method NAME`` always.
    auto_detect = False
    min_confidence: float
    min_size = 256  # px per side, for a useful number of blocks per bit

    def embed(self, image: Image.Image, payload: int) -> Image.Image:
        if isinstance(payload, bool) or not isinstance(payload, int) or not 0 <= payload < 1 << self.payload_bits:
            raise WatermarkError(f"`payload` must be an int in 0..2**{self.payload_bits}-1, got {payload!r}")
        if min(image.size) < self.min_size:
            raise WatermarkError(
                f"image is {image.width}x{image.height}; {self.name} needs at least {self.min_size} px per side")
        return embed_bits(image, bits_from_bytes(message_bytes(payload)), self.algorithm)

    def decode(self, image: Image.Image) -> WatermarkReading | None:
        if not MIN_PIXELS <= image.width * image.height <= MAX_PIXELS:
            return None
        try:
            means = vote_means(image, 64, self.algorithm)
        except (ValueError, OSError):
            return None
        if means is None:
            return None
        word = bytes_from_bits([int(v) for v in (means * 255 > 127)])
        payload, crc = int.from_bytes(word[:6], "big"), int.from_bytes(word[6:], "big")
        confidence = float(np.mean(np.abs(2.0 * means - 1.0)))
        if crc != _crc16(payload) or confidence < self.min_confidence:
            return None
        return WatermarkReading(self.name, payload, confidence)


class DwtDctWatermark(_ImwatermarkMethod):
    """``imwatermark-dwtdct``: imwatermark's ``dwtDct`` (Stable Diffusion's). Fragile: JPEG 95 erases it. For
    reading marks made elsewhere, not for marking new images."""

    algorithm: Algorithm = "dwtDct"
    name = "imwatermark-dwtdct"
    soft_binding_alg = "io.provgen.watermark.imwatermark.dwtdct.v1"
    min_confidence = 0.3


class DwtDctSvdWatermark(_ImwatermarkMethod):
    """``imwatermark-dwtdctsvd``: imwatermark's ``dwtDctSvd``; survives JPEG >= 75, resizing and blur, not crops."""

    algorithm: Algorithm = "dwtDctSvd"
    name = "imwatermark-dwtdctsvd"
    soft_binding_alg = "io.provgen.watermark.imwatermark.dwtdctsvd.v1"
    min_confidence = 0.3


# ------------------------------------------------------------------------------------------------ rivaGan


def _imwatermark_dir() -> Path | None:
    """The installed ``imwatermark`` package folder, found without importing it (its ``__init__`` imports torch)."""
    try:
        spec = importlib.util.find_spec("imwatermark")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def rivagan_available() -> bool:
    """True when onnxruntime is importable and imwatermark's RivaGAN ONNX files are installed."""
    folder = _imwatermark_dir()
    if folder is None or importlib.util.find_spec("onnxruntime") is None:
        return False
    return (folder / "rivagan_encoder.onnx").is_file() and (folder / "rivagan_decoder.onnx").is_file()


class RivaGanWatermark:
    """``imwatermark-rivagan``: imwatermark's RivaGAN (32 bits) through onnxruntime, without torch.

    32 bits is less than a registry id (48), so provgen cannot mark new images with it, and it has no check bits:
    any image decodes to *some* 32 bits. So it is never tried automatically (``auto_detect = False``); use
    ``provgen watermark decode --method imwatermark-rivagan``. Slow on CPU (about 5 s to embed and 7 s to decode
    at 1024² on 2 cores). ``confidence`` is the mean ``|2p - 1|`` of the decoder's bit probabilities; readings
    under :attr:`min_confidence` (not calibrated) are dropped."""

    name = "imwatermark-rivagan"
    payload_bits = 32
    soft_binding_alg = "io.provgen.watermark.imwatermark.rivagan.v1"
    auto_detect = False
    threshold = 0.52  # imwatermark's RivaWatermark default
    min_confidence = 0.3

    def __init__(self) -> None:
        self._sessions: tuple[Any, Any] | None = None

    def _models(self) -> tuple[Any, Any]:
        if self._sessions is None:
            import onnxruntime

            folder = _imwatermark_dir()
            if folder is None:
                raise WatermarkError("imwatermark is not installed: pip install --no-deps invisible-watermark")
            self._sessions = (onnxruntime.InferenceSession(str(folder / "rivagan_encoder.onnx")),
                              onnxruntime.InferenceSession(str(folder / "rivagan_decoder.onnx")))
        return self._sessions

    @staticmethod
    def _frame(rgb: Image.Image) -> np.ndarray:
        bgr = np.asarray(rgb, dtype=np.float32)[:, :, ::-1]
        return (bgr / 127.5 - 1.0).transpose(2, 0, 1)[None, :, None]  # (1, 3, 1, H, W)

    def embed(self, image: Image.Image, payload: int) -> Image.Image:
        if isinstance(payload, bool) or not isinstance(payload, int) or not 0 <= payload < 1 << self.payload_bits:
            raise WatermarkError(f"`payload` must be an int in 0..2**{self.payload_bits}-1, got {payload!r}")
        rgb, alpha = _rgb_and_alpha(image)
        encoder, _ = self._models()
        data = np.asarray([bits_from_bytes(payload.to_bytes(4, "big"))], dtype=np.float32)
        out = encoder.run(None, {"frame": self._frame(rgb), "data": data})[0]
        bgr = ((np.clip(out[0, :, 0], -1.0, 1.0).transpose(1, 2, 0) + 1.0) * 127.5).astype(np.uint8)
        marked = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]), "RGB")
        if alpha is not None:
            marked.putalpha(alpha)
        return marked

    def decode(self, image: Image.Image) -> WatermarkReading | None:
        if image.width * image.height < MIN_PIXELS:
            return None
        _, decoder = self._models()
        p = np.asarray(decoder.run(None, {"frame": self._frame(_rgb_and_alpha(image)[0])})[0][0], np.float64)
        confidence = float(np.mean(np.clip(np.abs(2.0 * p - 1.0), 0.0, 1.0)))
        if confidence < self.min_confidence:
            return None
        payload = int.from_bytes(bytes_from_bits([int(v) for v in p > self.threshold]), "big")
        return WatermarkReading(self.name, payload, confidence)


# ------------------------------------------------------------------------------------------ stock marks

#: the message of diffusers' StableDiffusionXLWatermarker (copied there from Stability's generative-models)
SDXL_MESSAGE = 0xB3EC907BB19E


@dataclass(frozen=True)
class StockMark:
    name: str  #: short name reported by verify, e.g. "sdxl"
    algorithm: Algorithm
    bits: tuple[int, ...]  #: the message, in imwatermark's bit order
    source: str


STOCK_MARKS: tuple[StockMark, ...] = (
    StockMark("sdxl", "dwtDct", tuple(int(c) for c in bin(SDXL_MESSAGE)[2:]),
              "diffusers StableDiffusionXL* pipelines (imwatermark dwtDct, 'bits', 48 bits)"),
)

#: a stock mark is reported when at least this fraction of its bits match (see docs/watermark.md)
STOCK_MIN_ACCURACY = 0.85


def detect_stock_marks(image: Image.Image) -> list[dict[str, Any]]:
    """The stock invisible-watermark messages found in ``image``, e.g. ``[{"name": "sdxl", "method": "dwtDct",
    "message": "b3ec907bb19e", "bit_accuracy": 0.979, "decoder": "imwatermark"}]``; ``[]`` when none, and for
    images under 256 x 256 px or over :data:`MAX_PIXELS`. A mark is reported when its best reading (see
    :func:`_stock_accuracy`) matches at least :data:`STOCK_MIN_ACCURACY` of its bits."""
    if not MIN_PIXELS <= image.width * image.height <= MAX_PIXELS:
        return []
    try:
        rgb = np.asarray(_rgb_and_alpha(image)[0], dtype=np.uint8)
    except (ValueError, OSError):
        return []
    found = []
    for mark in STOCK_MARKS:
        accuracy, decoder = _stock_accuracy(rgb, mark)
        if accuracy >= STOCK_MIN_ACCURACY:
            found.append({"name": mark.name, "method": mark.algorithm,
                          "message": f"{int(''.join(map(str, mark.bits)), 2):0{-(-len(mark.bits) // 4)}x}",
                          "bit_accuracy": round(accuracy, 4), "decoder": decoder})
    return found


def _stock_accuracy(rgb: np.ndarray, mark: StockMark) -> tuple[float, str]:
    """Best bit accuracy of ``mark`` over three readings, and which one gave it.

    SDXL marks in the float domain (U offset 0.5, see :func:`u_plane_float`) and keeps the sign of negative LL
    values, while a file's uint8 pixels have U offset 128. Stock imwatermark (``"imwatermark"``) therefore reads
    SDXL's bits right where the chroma is bluish (U > 128) and **inverted** where it is warm (U < 128): the
    quantiser offsets differ by 255 = 7 x 36 + 3 and the sign flips the lattice. So also try the inverted
    reading and the float-domain reading (``"float"``) that SDXL embedded in."""
    want = np.asarray(mark.bits)
    best = (0.0, "imwatermark")
    for domain in ("uint8", "float"):
        means = vote_means(rgb, len(mark.bits), mark.algorithm, domain=domain)
        if means is None:
            continue
        acc = float(np.mean((means * 255 > 127) == want))
        for value, decoder in ((acc, "imwatermark" if domain == "uint8" else "float"),
                               (1.0 - acc, "imwatermark-inverted") if domain == "uint8" else (0.0, "")):
            if value > best[0]:
                best = (value, decoder)
    return best


def simulate_sdxl_watermark(image: Image.Image) -> Image.Image:
    """What diffusers' ``StableDiffusionXLWatermarker`` does to a decoded image, without imwatermark (for tests
    and measurements): imwatermark ``dwtDct`` on **float32** BGR 0..255, where OpenCV's YUV uses an offset of
    0.5 rather than 128 (so LL values can be negative and the sign rule matters), the H/V-swapped inverse Haar
    (2 x 2 transpose), no truncation, then diffusers' ``round`` to uint8."""
    rgb = np.asarray(_rgb_and_alpha(image)[0], dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b
    u = (b - y) * np.float32(0.492) + np.float32(0.5)
    v = (r - y) * np.float32(0.877) + np.float32(0.5)
    h4, w4 = u.shape[0] // 4 * 4, u.shape[1] // 4 * 4
    x = u[:h4, :w4].astype(np.float64)
    a, bb, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    ll, h1, v1, d1 = (a + bb + c + d) / 2, (a + bb - c - d) / 2, (a - bb + c - d) / 2, (a - bb - c + d) / 2
    blocks, nbr, nbc = _blocks(ll)
    n = blocks.shape[0]
    bit = np.asarray(STOCK_MARKS[0].bits, dtype=np.float64)[np.arange(n) % len(STOCK_MARKS[0].bits)]
    rows = np.arange(n)
    pos = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1
    val = blocks[rows, pos]
    new = np.sign(val + (val == 0)) * ((np.abs(val) // SCALE + 0.25 + 0.5 * bit) * SCALE)
    blocks[rows, pos] = new
    ll2 = ll.copy()
    ll2[: nbr * 4, : nbc * 4] = blocks.reshape(nbr, nbc, 4, 4).transpose(0, 2, 1, 3).reshape(nbr * 4, nbc * 4)
    hh, vv = v1, h1  # imwatermark's idwt2((ca, (v, h, d))): H and V swapped
    out_u = np.empty_like(x)
    out_u[0::2, 0::2] = (ll2 + hh + vv + d1) / 2
    out_u[0::2, 1::2] = (ll2 + hh - vv - d1) / 2
    out_u[1::2, 0::2] = (ll2 - hh + vv - d1) / 2
    out_u[1::2, 1::2] = (ll2 - hh - vv + d1) / 2
    u2 = u.copy()
    u2[:h4, :w4] = out_u.astype(np.float32)
    # OpenCV float YUV -> BGR: B = Y + 2.032 (U - 0.5), G = Y - 0.395 (U - 0.5) - 0.581 (V - 0.5),
    # R = Y + 1.14 (V - 0.5)
    bo = y + np.float32(2.032) * (u2 - 0.5)
    go = y - np.float32(0.395) * (u2 - 0.5) - np.float32(0.581) * (v - 0.5)
    ro = y + np.float32(1.140) * (v - 0.5)
    out = np.stack([ro, go, bo], axis=-1)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8), "RGB")
