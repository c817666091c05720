"""Invisible watermarks for generated images.

The built-in method, :class:`GridWatermark` (``provgen-grid/1``), hides a 48-bit id in the smoothly windowed
mean colour of the cells of a 16x16 grid. Pure numpy + Pillow; no model, no download.

How it works
------------
* **Scale-invariant grid.** Cell boundaries are *relative* to the image size (pixel row ``y`` belongs to cell
  ``floor((y + 0.5) * 16 / height)``), so resizing the whole image keeps every cell in place.
* **Slots.** Each cell carries three slots: its weighted mean of Y, Cb and Cr (JFIF/JPEG YCbCr). 16 x 16 x 3 = 768
  slots in all.
* **Codeword.** ``payload`` (48 bits) + a keyed CRC-32 truncated to 24 check bits = 72 bits, convolutionally
  encoded (rate 1/2, K=7, the NASA 133/171 code, zero-terminated) into 156 coded bits and XORed with a keyed
  whitening sequence. A keyed permutation spreads them over the 768 slots (each coded bit lands on 4-5 slots
  scattered over the image).
* **Embedding (QIM).** Each slot mean is moved to the nearest point of a lattice with step ``delta`` that is
  offset by a keyed dither and by +delta/4 (bit 1) or -delta/4 (bit 0). The change is a smooth Tukey bump
  per cell that is zero at the cell edges, so there are no block edges. A low-resolution simulation then
  checks for slots that clipping (saturated colours) keeps from moving. For those slots it aims at the lattice
  point on the other side, or it pushes a little harder. The result is rounded with a keyed dither, and the
  distortion is capped at :data:`MIN_PSNR_DB`.
* **Decoding.** Soft vote per slot ``sin(2*pi*(mean - dither)/delta)`` (+1 at a bit-1 lattice point, -1 at a
  bit-0 point). Cells where saturated pixels meet edges get less weight, because a codec's ringing clips there.
  The weighted votes are summed per coded bit, then Viterbi (soft-decision ML) decoding. A reading is accepted
  only when the 24 check bits match; otherwise the result is ``None``. A random image passes the check with
  probability 2^-24 (6e-8) per decode.

Limits: the grid is not searched, so a crop or rotation, and anything that moves the content relative to the
image borders, defeats it (resize, re-encoding and mild filtering do not). It is an attribution aid, not DRM.
Anyone who knows the scheme and key can remove or forge it.
"""

from __future__ import annotations

import hashlib
import operator
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from provgen.core.errors import WatermarkError

__all__ = ["MIN_PSNR_DB", "GridWatermark", "WatermarkMethod", "WatermarkReading"]

#: embedding never distorts an image below this PSNR (dB) against the unmarked image
MIN_PSNR_DB = 40.2

_GRID = 16  # cells per side
_DECODE_TAPER = 0.1  # Tukey taper of the decode weights (nearly a box: robust to compression)
_EMBED_TAPER = 0.65  # Tukey taper of the embedded bump (smooth: no visible block edges)
_CHECK_BITS = 24
_K = 7  # constraint length of the convolutional code
_POLYS = (0o133, 0o171)  # its generator polynomials
_SIM_SIZE = 256  # the clipping simulation runs on the image reduced to about this size
_FLIP_MARGIN = 0.6  # flip blocked slots until each coded bit's mean vote reaches this
_PUSH_CAP = 0.5  # extra push against clipping, relative to the planned move
_DITHER_TILE = 64
_DECODE_MAX = 2048  # decode box-reduces larger images first (cell means survive a box reduction)
_SAT_BAND = 4  # pixel values within this of 0 or 255 count as clipped
_RISK_SCALE = 1.0  # clipped-edge activity (levels/px) at which a cell's weight is halfway down
_MIN_WEIGHT = 0.2  # ... and the least weight a cell keeps (a black-and-white drawing is all clipped edges)

# JFIF (JPEG) YCbCr: rows = (Y, Cb, Cr), columns = (R, G, B)
_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = np.linalg.inv(_RGB2YCC)


@dataclass(frozen=True)
class WatermarkReading:
    """A watermark found in an image.

    ``confidence`` is the correlation between the soft votes of all slots (-1..1 each) and the re-encoded
    codeword (+1/-1 each): the mean of their products, clipped to 0..1. Typical values: 0.85-1.0 on an
    untouched image, 0.4-0.85 after JPEG 75 or WebP 80, and decodes at 0.2 are still right. Validity is
    decided by the check bits, not by this number.
    """

    method: str  #: method name, e.g. "provgen-grid/1"
    payload: int  #: the decoded payload (check bits removed)
    confidence: float  #: 0..1, see above


@runtime_checkable
class WatermarkMethod(Protocol):
    """What a watermark method provides (see ``register_watermarks`` in :mod:`provgen.core.hookspecs`)."""

    name: str
    payload_bits: int
    soft_binding_alg: str

    def embed(self, image: Image.Image, payload: int) -> Image.Image: ...

    def decode(self, image: Image.Image) -> WatermarkReading | None: ...


# --------------------------------------------------------------------------------------------- grid geometry


def _tukey(t: np.ndarray, taper: float) -> np.ndarray:
    """Tukey window on t in [0, 1]: cosine ramps over taper/2 at each end, flat (1) in between."""
    ramp = np.clip(np.minimum(t, 1.0 - t) / (taper / 2.0), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * ramp)


@dataclass(frozen=True)
class _Axis:
    """One image axis of length n cut into _GRID cells; matrices are (n, _GRID), one non-zero per row."""

    dec: np.ndarray  # decode weight of each pixel, in its cell's column
    emb: np.ndarray  # embedding bump of each pixel, in its cell's column
    dec_sum: np.ndarray  # (G,) sum of decode weights per cell
    gain: np.ndarray  # (G,) sum(dec * emb) / sum(dec): what a unit bump adds to the cell's weighted mean
    cell: np.ndarray  # (n,) cell index of each pixel
    bump: np.ndarray  # (n,) embedding bump of each pixel


@lru_cache(maxsize=32)
def _axis(n: int) -> _Axis:
    u = (np.arange(n) + 0.5) * _GRID / n  # pixel centres in cell units: relative, so resize-invariant
    cell = np.minimum(u.astype(np.int64), _GRID - 1)
    wd, we = _tukey(u - cell, _DECODE_TAPER), _tukey(u - cell, _EMBED_TAPER)
    dec = np.zeros((n, _GRID), dtype=np.float32)
    emb = np.zeros((n, _GRID), dtype=np.float32)
    dec[np.arange(n), cell] = wd
    emb[np.arange(n), cell] = we
    dec_sum = np.maximum(np.bincount(cell, wd, _GRID), 1e-9)
    gain = np.maximum(np.bincount(cell, wd * we, _GRID) / dec_sum, 1e-9)
    return _Axis(dec, emb, dec_sum, gain, cell, we.astype(np.float32))


def _cell_means(x: np.ndarray) -> np.ndarray:
    """Decode-weighted mean of each channel of x (h, w, c) over each cell -> (c, G, G).

    The weights are separable, so the sum over a cell is A_y^T @ x @ A_x: two matrix products."""
    h, w, c = x.shape
    ay, ax = _axis(h), _axis(w)
    t = (ay.dec.T @ x.reshape(h, w * c)).reshape(_GRID, w, c).transpose(0, 2, 1)  # (G, c, w)
    return (t @ ax.dec).transpose(1, 0, 2) / np.outer(ay.dec_sum, ax.dec_sum)


def _ycc_means(x: np.ndarray) -> np.ndarray:
    """(3, G, G) cell means of Y, Cb, Cr of an RGB float array."""
    return np.tensordot(_RGB2YCC, _cell_means(x), axes=1)


def _field(d: np.ndarray, h: int, w: int) -> np.ndarray:
    """RGB float32 (h, w, 3) change that moves each cell's (Y, Cb, Cr) means by d (3, G, G), before clipping."""
    ay, ax = _axis(h), _axis(w)
    amp = d / np.outer(ay.gain, ax.gain)  # bump height per cell and channel
    rgb = np.tensordot(amp, _YCC2RGB, axes=([0], [1])).astype(np.float32)  # (G, G, 3)
    rows = rgb[:, ax.cell] * ax.bump[None, :, None]  # (G, w, 3): the bump along x for each cell row
    return (ay.emb @ rows.reshape(_GRID, w * 3)).reshape(h, w, 3)


# ------------------------------------------------------------------------------------------- keyed streams


def _stream(key: int, label: str, n: int) -> np.ndarray:
    """n keyed pseudo-random uint64 (SHAKE-256): stable across numpy versions, unlike np.random."""
    raw = hashlib.shake_256(f"provgen-grid/1:{key}:{label}".encode()).digest(8 * n)
    return np.frombuffer(raw, dtype="<u8")


def _uniform(key: int, label: str, n: int) -> np.ndarray:
    """n keyed floats in [0, 1) with 53 random bits each."""
    return (_stream(key, label, n) >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)


# -------------------------------------------------------------------------------------- convolutional code


def _parity(v: np.ndarray) -> np.ndarray:
    for s in (4, 2, 1):
        v = v ^ (v >> s)
    return v & 1


#: (2^K, 2) encoder outputs as ±1 for each K-bit shift-register content
_OUT = np.stack([_parity(np.arange(1 << _K) & g) for g in _POLYS], axis=1) * 2 - 1


def _conv_encode(bits: list[int]) -> np.ndarray:
    reg, out = 0, []
    for b in [*bits, *([0] * (_K - 1))]:  # K-1 zero tail bits return the encoder to state 0
        reg = ((reg << 1) | b) & ((1 << _K) - 1)
        out.extend(_OUT[reg] > 0)
    return np.array(out, dtype=np.int64)


def _viterbi(soft: np.ndarray, nbits: int) -> list[int]:
    """Soft-decision maximum-likelihood decoding of a zero-terminated code; soft > 0 favours a coded 1.

    State = the last K-1 input bits. Next state n is reached from p = n>>1 (register n) or from
    p = n>>1 | 2^(K-2) (register n + 2^(K-1)); the newest bit is n & 1."""
    ns, steps = 1 << (_K - 1), nbits + _K - 1
    metric = _OUT[None, :, 0] * soft[0::2, None] + _OUT[None, :, 1] * soft[1::2, None]  # (steps, 2^K)
    prev = np.arange(ns) >> 1
    pm = np.full(ns, -np.inf)
    pm[0] = 0.0
    choice = np.zeros((steps, ns), dtype=bool)
    for t in range(steps):
        a, b = pm[prev] + metric[t, :ns], pm[prev + ns // 2] + metric[t, ns:]
        choice[t] = b > a
        pm = np.maximum(a, b)
    bits, state = [], 0
    for t in range(steps - 1, -1, -1):
        bits.append(state & 1)
        state = (state >> 1) | (int(choice[t, state]) << (_K - 2))
    return bits[::-1][:nbits]


# ----------------------------------------------------------------------------------- embedding helpers


def _choose_flips(
    bit: np.ndarray, v0: np.ndarray, v1: np.ndarray, blocked: np.ndarray, cost: np.ndarray, nbits: int
) -> np.ndarray:
    """Which blocked slots to send to the far lattice point (all arrays flat, one entry per slot).

    Per coded bit, take the blocked slots in order of vote gain per unit of distortion until the bit's summed
    vote reaches _FLIP_MARGIN x its number of slots. Vectorised: sort by (bit, -priority), then a cumulative
    gain that restarts at each bit."""
    need = _FLIP_MARGIN * np.bincount(bit, minlength=nbits) - np.bincount(bit, v0, nbits)
    gain = np.where(blocked, v1 - v0, 0.0)
    useful = gain > 0
    order = np.lexsort((-np.where(useful, gain / cost, -1.0), bit))
    g, b = np.where(useful, gain, 0.0)[order], bit[order]
    before = np.cumsum(g) - g
    before -= before[np.searchsorted(b, np.arange(nbits))][b]  # restart the sum at each bit
    out = np.zeros(bit.size, dtype=bool)
    out[order] = useful[order] & (before < need[b])
    return out


@lru_cache(maxsize=4)
def _dither_rows(key: int, w: int) -> np.ndarray:
    """(T, w, 3) band of a keyed triangular (TPDF) dither tile, so rounding leaves no flat-area contours."""
    u = _uniform(key, "round", 2 * _DITHER_TILE * _DITHER_TILE * 3).reshape(2, _DITHER_TILE, _DITHER_TILE, 3)
    tile = (u[0] - u[1] + 1.0).astype(np.float32) * 0.5  # triangular on (0, 1), mean 0.5: +0.5 = rounding
    return np.tile(tile, (1, -(-w // _DITHER_TILE), 1))[:, :w]


def _round_into_uint8(x: np.ndarray, key: int) -> np.ndarray:
    """floor(x + dither) clipped to uint8, in place on x; the dither tile repeats every T rows."""
    band = _dither_rows(key, x.shape[1])
    for y in range(0, x.shape[0], _DITHER_TILE):  # one numpy op per band of T rows
        part = x[y : y + _DITHER_TILE]
        part += band[: part.shape[0]]
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _reliability(pixels: np.ndarray) -> np.ndarray:
    """(G, G) vote weight per cell of a (reduced) uint8 RGB image, low where saturated pixels meet edges.

    Codecs ring at sharp edges, and the decoded values clip at 0/255 there. That biases a cell's mean in a way
    no embedding can anticipate, so those cells get less say."""
    near_limit = ((pixels + np.uint8(_SAT_BAND)) <= 2 * _SAT_BAND).any(axis=2)  # uint8 wraps: v<=4 or v>=252
    y = pixels.sum(axis=2, dtype=np.float32) / 3
    edge = np.zeros_like(y)
    edge[:, 1:] += np.abs(np.diff(y, axis=1))
    edge[1:, :] += np.abs(np.diff(y, axis=0))
    risk = _cell_means((edge * near_limit)[..., None])[0]
    risk -= risk.min()  # relative: a uniformly risky image (e.g. pure noise) keeps uniform weights
    return _MIN_WEIGHT + (1.0 - _MIN_WEIGHT) / (1.0 + risk / _RISK_SCALE)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _check_payload(payload: object, bits: int) -> int:
    """``payload`` as an int in ``0..2**bits-1`` (ints and numpy ints, not floats), else WatermarkError."""
    try:
        value = operator.index(payload)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if not 0 <= value < 1 << bits:
        raise WatermarkError(f"`payload` must be an int in 0..2**{bits}-1, got {payload!r}")
    return value


def _embed_input(image: Image.Image, name: str, min_size: int) -> tuple[Image.Image, Image.Image | None]:
    """The RGB image an embedder works on and the alpha channel to put back (None when there is none); an image
    under ``min_size`` px per side, or one Pillow cannot convert, is a WatermarkError naming ``name``."""
    if min(image.size) < min_size:
        raise WatermarkError(f"image is {image.width}x{image.height}; {name} needs at least {min_size} px per side")
    try:
        alpha = image.convert("RGBA").getchannel("A") if _has_alpha(image) else None
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    except (ValueError, OSError) as e:
        raise WatermarkError(f"cannot watermark a {image.mode} image: {e}") from e
    return rgb, alpha


# ------------------------------------------------------------------------------------------------ method


class GridWatermark:
    """``provgen-grid/1``: 48-bit payload in a resize-invariant 16x16 grid of QIM-marked cell means.

    :param strength: QIM lattice step of every slot, in 8-bit levels. The default, 3.9, gives a PSNR of about
        40.5-41.5 dB. :data:`MIN_PSNR_DB` caps it anyway. Marks made with another strength need that strength
        again to decode.
    :param key: keys the slot layout, dithers and whitening. A different key reads nothing.
    """

    name = "provgen-grid/1"
    payload_bits = 48
    soft_binding_alg = "io.provgen.watermark.grid.v1"
    #: smallest image side (px) that :meth:`embed` accepts (cells of 4 px)
    min_size = 64

    def __init__(self, *, strength: float = 3.9, key: int = 0x5EED_0001) -> None:
        if not strength > 0:
            raise WatermarkError(f"`strength` must be > 0, got {strength}")
        self.strength = float(strength)
        self.key = int(key)
        self._info_len = self.payload_bits + _CHECK_BITS
        self._coded_len = 2 * (self._info_len + _K - 1)
        nslots = 3 * _GRID * _GRID
        order = np.argsort(_stream(key, "layout", nslots), kind="stable")
        bit_of = np.empty(nslots, np.int64)
        bit_of[order] = np.arange(nslots) % self._coded_len  # coded bit carried by each slot
        self._bit_of = bit_of.reshape(3, _GRID, _GRID)
        self._white = (_stream(key, "whiten", self._coded_len) & np.uint64(1)).astype(np.int64)
        self._delta = self.strength
        self._offset = _uniform(key, "dither", nslots).reshape(3, _GRID, _GRID) * self._delta

    # ------------------------------------------------------------------------------------------- payload

    def _info_bits(self, payload: int) -> list[int]:
        check = zlib.crc32(f"{self.key}:".encode() + payload.to_bytes(6, "big"))
        word = (payload << _CHECK_BITS) | (check & ((1 << _CHECK_BITS) - 1))
        return [(word >> i) & 1 for i in range(self._info_len - 1, -1, -1)]

    def _slot_bits(self, payload: int) -> np.ndarray:
        """(3, G, G) bit to embed in each slot."""
        coded = _conv_encode(self._info_bits(payload)) ^ self._white
        return coded[self._bit_of]

    # ----------------------------------------------------------------------------------------------- embed

    def embed(self, image: Image.Image, payload: int) -> Image.Image:
        """Return a marked copy of ``image`` (RGB, or RGBA with the alpha channel untouched)."""
        payload = _check_payload(payload, self.payload_bits)
        rgb, alpha = _embed_input(image, self.name, self.min_size)
        x = np.asarray(rgb, dtype=np.float32)
        k = max(1, min(rgb.size) // _SIM_SIZE)
        small = np.asarray(rgb.reduce(k) if k > 1 else rgb, dtype=np.float32)
        plan = self._plan(small, _ycc_means(x), self._slot_bits(payload))
        out = _field(plan, *x.shape[:2])
        out += x
        marked = Image.fromarray(_round_into_uint8(out, self.key), "RGB")
        if alpha is not None:
            marked.putalpha(alpha)
        return marked

    def _plan(self, small: np.ndarray, m: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """Change of each slot's mean to embed (3, G, G), given the slot means m of the full image."""
        q = self._offset + (2 * bits - 1) * self._delta / 4  # the lattice of each slot's bit: q + k * delta
        near = q + self._delta * np.round((m - q) / self._delta) - m  # move to the nearest lattice point, or
        far = near - np.where(near >= 0, 1.0, -1.0) * self._delta  # to the one on the other side of m
        return self._limit_distortion(self._fit_to_gamut(small, near, far), small)

    def _fit_to_gamut(self, small: np.ndarray, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        """Simulate the moves on the reduced image; where clipping blocks a slot, flip it to the far lattice
        point (greedily, see _choose_flips) and push harder (up to _PUSH_CAP) where clipping still bites."""
        h, w = small.shape[:2]
        base = _ycc_means(small)

        def achieved(d: np.ndarray) -> np.ndarray:
            return _ycc_means(np.clip(small + _field(d, h, w), 0, 255)) - base

        def vote(got: np.ndarray, target: np.ndarray) -> np.ndarray:
            return np.cos(2 * np.pi * (got - target) / self._delta)  # 1 on the lattice point, -1 between

        got = achieved(near)
        blocked = got * np.sign(near) < 0.5 * np.abs(near)  # clipping ate more than half of the move
        if not blocked.any():
            return near
        v_far = vote(achieved(np.where(blocked, far, near)), far)
        flip = _choose_flips(self._bit_of.ravel(), vote(got, near).ravel(), v_far.ravel(), blocked.ravel(),
                             (far**2).ravel(), self._coded_len).reshape(near.shape)
        plan = np.where(flip, far, near)
        cap = _PUSH_CAP * np.abs(plan)
        return plan + np.clip(plan - achieved(plan), -cap, cap)

    def _limit_distortion(self, plan: np.ndarray, small: np.ndarray) -> np.ndarray:
        """Scale the plan down if it would cost more than MIN_PSNR_DB (estimated on the reduced image)."""
        change = np.clip(small + _field(plan, *small.shape[:2]), 0, 255) - small
        mse = float(np.mean(change**2)) + 0.125  # + rounding with the dither: 1/12 + 1/24
        budget = 255.0**2 / 10 ** (MIN_PSNR_DB / 10)
        return plan if mse <= budget else plan * np.sqrt(max(budget - 0.125, 0.0) / (mse - 0.125))

    # ---------------------------------------------------------------------------------------------- decode

    def decode(self, image: Image.Image) -> WatermarkReading | None:
        """Read the payload, or ``None`` when no valid mark is found (never raises for a loaded image)."""
        read = self._slot_votes(image)
        if read is None:
            return None
        votes, weights = read
        summed = np.bincount(self._bit_of.ravel(), (votes * weights).ravel(), self._coded_len)
        info = _viterbi(summed * (1 - 2 * self._white), self._info_len)  # un-whiten: > 0 favours a 1
        payload = int("".join(map(str, info)), 2) >> _CHECK_BITS
        if self._info_bits(payload) != info:
            return None
        confidence = float(np.mean(votes * (2 * self._slot_bits(payload) - 1)))
        return WatermarkReading(self.name, payload, min(max(confidence, 0.0), 1.0))

    def _slot_votes(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray] | None:
        """Soft votes (3, G, G) in -1..1 (> 0: bit 1) and the (G, G) reliability of each cell in 0..1,
        or None for an image too small or not convertible."""
        if min(image.size) < 2 * _GRID:
            return None
        try:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
        except (ValueError, OSError):
            return None
        k = -(-min(rgb.size) // _DECODE_MAX)
        if k > 1:
            rgb = rgb.reduce(k)
        votes = np.sin(2 * np.pi * (_ycc_means(np.asarray(rgb, dtype=np.float32)) - self._offset) / self._delta)
        k = max(1, min(rgb.size) // _SIM_SIZE)
        return votes, _reliability(np.asarray(rgb.reduce(k) if k > 1 else rgb))
