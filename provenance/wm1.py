"""``provgen-wm/1``: the default invisible watermark; survives crops as well as re-encoding and resizing.

Pure numpy + Pillow; no model, no download. Measurements: docs/watermark.md and
benchmarks/watermark_robustness.py.

How it works
------------
* **Blocks and tiles.** The image is cut into square blocks of ``beta`` px: 48 blocks across the shorter side
  from 768 px up (so a plain resize keeps the grid: the decoder's first guess is exact), 16 px blocks between
  256 and 768 px (one 4:2:0 JPEG MCU), and one tile across below 256 px (:func:`block_size`). Block ``(i, j)``
  belongs to tile class ``(i mod 16, j mod 16)``; every 16 x 16 tile of blocks repeats the same layout, so any
  window of 16 x 16 blocks (any crop that keeps >= 80% of a >= 384 px image holds at least one) contains every
  class; below that a crop loses part of the payload.
* **Slots and codeword.** Each class carries two slots, the mean Cb and the mean Cr of its blocks (JFIF YCbCr):
  512 slots. ``payload`` (48 bits) + a keyed CRC-32 (32 check bits) = 80 bits, convolutionally encoded (rate
  1/2, K=7, the code of :mod:`provgen.provenance.watermark`) into 172 coded bits, XORed with a keyed whitening
  sequence and spread by a keyed permutation over the 512 slots (about 3 slots per coded bit).
* **Embedding (distortion-compensated QIM with a keyed dither).** Each block's Cb/Cr mean is aimed at the
  nearest point of a lattice of step ``strength`` (4.6 levels) offset by a keyed per-slot dither and by +/-
  step/4 for a 1 or 0 bit. Perceptual masking: a block moves only a fraction of the way, _floor() on flat
  blocks rising to 1 on textured ones (mean luma + chroma gradient of a 4x reduced copy, full at _TEXTURE);
  the decoder reads the lattice and needs no side information (the shortfall is self-noise the repetition
  averages out). The change is not a bump per block but a smooth cosine interpolation between block centres,
  pre-compensated (per-axis inverse of the block-mean operator) so each block mean still moves exactly as
  aimed: no block edges, no blobs, and a peak change about the size of the mean change. Converted to RGB
  (luma untouched). If clipping (saturated colours) ate part of the move in more than 0.2% of the values, the
  shortfall (block means of what was clipped) is pushed once more. Rounding uses a keyed TPDF dither; the
  expected distortion is capped at :data:`~provgen.provenance.watermark.MIN_PSNR_DB`.
* **Decoding.** The Cb/Cr integral images of the (box-reduced) image give exact box means of any block size
  at any sub-pixel position. Each block mean becomes a phasor ``exp(2 pi i mean / step)``; phasors are summed per
  tile class, so the dither and the bits cancel out of ``sum |class sum|``: a confidence statistic of the
  block size, chroma gain (brightness/contrast scale Cb/Cr about 128) and pixel phase that does not need the
  payload (phase contrast). In order: (0) block size ``block_size(shorter side)`` at phase 0 and gain 1
  (untouched, re-encoded, resized, filtered images); (1) the same size at gain 1, 8 x 8 phases, best 2 by phase
  contrast; then every gain of a 1% grid (0.85-1.15: a 5% gain error is a whole lattice step on saturated
  colours), its best 4 phases by phase contrast, ranked by *sync score* (the best repetition coherence over the
  256 tile shifts, normalised by the vote energy: about 1 at a wrong hypothesis whatever the content, which
  phase contrast is not on flat saturated shapes): the best of 3 gains more than 2.5% apart (flat saturated
  colours alias at other gains); (2) a 3% grid of block sizes covering crops to 80% and
  resizes of 0.5-2x (best 2 phases each), ranked by sync score; the best 3 and 4 hypotheses of (1) are
  refined (coordinate ascent of the sync score: 1/2-sample phase, gain, +-1/0.5/0.25% size, 1/8-sample
  phase) and the best 3 refined go on.
  For each candidate, all 256 cyclic tile shifts are scored (repetition coherence, then a batched Viterbi
  forward pass) and only the best 2 shifts are Viterbi-decoded and checked against the 32 check bits.

False positives
---------------
A reading is returned only when the 32 check bits match. Hypotheses are ranked by statistics that ignore the
check bits; only ``N`` decoded words are compared with them per image:
``N = 2 x (1 + 2 + 3 + 3) = 18`` (shifts checked x (phase-0 try + gain-1 candidates + fine-gain candidates +
refined candidates); refining more hypotheses checks none of them), so
``P(false detection) <= N x 2**-32 = 18 x 2.3e-10 = 4.2e-9`` per image decoded, well under 1e-6. (Every
registered method adds its own rate: provgen-grid/1 adds 2**-24 = 6e-8.)

Limits
------
* Rotation is not searched: +-2 degrees moves the corners of a large image by more than a block.
* Strong chroma texture (e.g. colour noise) combined with crop + downscale + JPEG can defeat it, and so can
  JPEG 50 with 4:2:0 subsampling once blocks are small (images under about 512 px).
* Crops that keep less than one whole tile (16 x 16 blocks), and images under 128 px that are cropped at all.
* Saturated colour: where a channel sits at 0 or 255, +10% brightness or contrast clips the change away, and
  flat saturated images (upscaled small generations) carry a weaker mark that JPEG 50 or the combo can defeat
  at 512 px (docs/watermark.md: held-out sample of 300 images per size).
* Decoding an image without a mark runs the whole search: about 0.5-0.9 s on 2 cores (a marked, uncropped
  image reads in tens of ms).
* It is an attribution aid, not DRM: anyone who knows the scheme and key can remove or forge it, and none of
  this survives regeneration ("diffusion washing").
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as _fft
from PIL import Image

from provgen.core.errors import WatermarkError
from provgen.provenance import _parallel
from provgen.provenance.watermark import (
    _DITHER_TILE,
    _K,
    _OUT,
    _RGB2YCC,
    _YCC2RGB,
    MIN_PSNR_DB,
    WatermarkReading,
    _check_payload,
    _conv_encode,
    _dither_rows,
    _embed_input,
    _viterbi,
)

__all__ = ["RobustWatermark", "block_size"]

_PER_SIDE = 48.0  # blocks across the shorter side of large images
_T = 16  # tile side, in blocks: the bit layout repeats every T x T blocks
_CHANNELS = (1, 2)  # rows of _RGB2YCC that carry the mark: Cb, Cr
_CHECK_BITS = 32
_FLOOR = 0.5  # QIM move fraction on flat blocks of large images (distortion-compensated QIM; 1 on textured blocks)
_MAX_BLOCK = 16.0  # px: block side cap between 256 and 768 px (one 4:2:0 JPEG chroma DCT block: its DC is the mean)
_TEXTURE = 12.0  # luma + chroma gradient (levels per 4 px) from which a block counts as fully textured
_A = 8  # decode: box-mean samples per block side (phase resolution 1/_A of a block)
_LUT = 256  # phasor lookup table size
# fine chroma gain grid: a gain error e moves a block of chroma c (about 128) by e * c, so on saturated colours
# (|c| ~ 100) 5% steps are a whole lattice step off; 1% keeps it under a quarter step
_GAINS_FINE = tuple(float(g) for g in np.round(np.arange(0.85, 1.1501, 0.01), 2))
_SURE = 2.0  # refined sync score (wrong hypotheses: about 1.2-1.5) that is shift-searched at once
_PHASES_SCORED = 4  # best phases (phase coherence) per gain whose sync score is computed (half per block size)
_STEP = 1.015  # ratio between successive block-size hypotheses
_MAX_TILES = 5  # decode reads at most this many tiles per axis (a central window)
_CANDIDATES = 2  # (gain, phase) candidates at the fast-path block size that go on to the shift search
_GAIN_CANDIDATES = 3  # candidates of the fine gain grid that go on to the shift search (best of distinct gains)
_GAIN_APART = 0.025  # ... whose gains differ by more than this (the sync score's peak in gain is about +-2% wide)
_COARSE = 1.03  # block-size grid of the search (then refined +-1%)
_REFINED = 3  # best-ranked (block size, gain, phase) of the search that are refined and shift-searched
_FITS = 2  # phase-0 hypotheses of a resized, uncropped image (see _fits) that are refined
_VITERBI_RANKED = 16  # shifts (best repetition coherence) whose Viterbi metric is computed
_SHIFTS_CHECKED = 2  # cyclic tile shifts (best Viterbi metrics) whose check bits are tested per candidate
_CLIP_ITER = 1  # correction passes (0 or 1) for blocks that clipping kept from reaching their target
_CLIP_FRACTION = 0.002  # ... run only when more than this fraction of the values clipped


def block_size(min_side: float) -> float:
    """Block side (px) used to mark an image whose shorter side is ``min_side`` px.

    48 blocks across the shorter side from 768 px up (relative: a plain resize keeps the grid), 16 px blocks
    between 256 and 768 px (aligned with the 16 px MCUs of 4:2:0 JPEG, whose chroma DC is exactly the block
    mean), and one tile (16 blocks) across below 256 px."""
    return max(min_side / _PER_SIDE, min(_MAX_BLOCK, min_side / _T))


def _floor(min_side: float) -> float:
    """QIM move fraction of flat blocks: _FLOOR with >= 32 blocks across (>= 512 px), rising to 1 with 16
    (one tile, <= 256 px). Fewer blocks means fewer repetitions of every slot, so less self-noise is averaged
    out; small images are also seen smaller, so the stronger change is less visible."""
    blocks = min_side / block_size(min_side)
    return min(1.0, max(_FLOOR, _FLOOR + (1 - _FLOOR) * (2 * _T - blocks) / _T))


def _stream(key: int, label: str, n: int) -> np.ndarray:
    raw = hashlib.shake_256(f"provgen-wm/1:{key}:{label}".encode()).digest(8 * n)
    return np.frombuffer(raw, dtype="<u8")


def _uniform(key: int, label: str, n: int) -> np.ndarray:
    return (_stream(key, label, n) >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class _Axis:
    """Block geometry of one image axis of n px with blocks of beta px (pixel centre decides the block), and the
    smooth interpolation that spreads per-block changes over it."""

    block: np.ndarray  # (n,) block index of each pixel
    starts: np.ndarray  # (nb,) first pixel of each block
    count: np.ndarray  # (nb,) pixels per block
    lo: np.ndarray  # (n,) block whose centre is at or before the pixel (clamped to the first/last block)
    hi: np.ndarray  # (n,) the next block (clamped)
    w_lo: np.ndarray  # (n,) float32 interpolation weight of lo (cosine: w_lo + w_hi = 1)
    w_hi: np.ndarray  # (n,) float32 interpolation weight of hi
    solve: np.ndarray  # (nb, nb) inverse of the block-mean operator of the interpolation
    gram: np.ndarray  # (nb, nb) M^T M of the (n, nb) interpolation matrix M (energy of a change field)
    lo3: np.ndarray  # (3n,) lo of each value of an interleaved RGB row, as an index into a (nb * 3) row
    hi3: np.ndarray  # (3n,) the same for hi
    w_lo3: np.ndarray  # (3n,) float32 w_lo of each value of an interleaved RGB row
    w_hi3: np.ndarray  # (3n,) float32 w_hi of each value of an interleaved RGB row
    w_step: np.ndarray  # (n, 1) float32 weight of f[lo + 1] - f[lo] in the field along this axis as y (see _axis)
    runs: tuple[int, ...]  # first pixel of each run of equal lo, then n


@lru_cache(maxsize=16)
def _axis(n: int, beta: float) -> _Axis:
    u = (np.arange(n) + 0.5) / beta
    block = u.astype(np.int64)
    nb = int(block[-1]) + 1
    count = np.bincount(block, minlength=nb)
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    c = u - 0.5  # position in block-centre coordinates
    lo = np.floor(c).astype(np.int64)
    f = c - lo
    w_hi = 0.5 - 0.5 * np.cos(np.pi * f)  # cosine interpolation: smooth, no block edges, no flat squares
    hi = np.clip(lo + 1, 0, nb - 1)
    lo = np.clip(lo, 0, nb - 1)
    m = np.zeros((n, nb))
    np.add.at(m, (np.arange(n), lo), 1 - w_hi)
    np.add.at(m, (np.arange(n), hi), w_hi)
    mean_op = np.add.reduceat(m, starts, axis=0) / count[:, None]  # (nb, nb): block means of the field
    w_lo32, w_hi32 = (1 - w_hi).astype(np.float32), w_hi.astype(np.float32)
    # w_step: the weight of the step to the next block row along y; zero above the first and below the last block
    # centre (lo == hi there), so the field is the same smooth interpolation that mean_op pre-compensates for
    return _Axis(block, starts, count, lo, hi, w_lo32, w_hi32, np.linalg.inv(mean_op), m.T @ m,
                 (3 * lo[:, None] + np.arange(3)).ravel(), (3 * hi[:, None] + np.arange(3)).ravel(),
                 np.repeat(w_lo32, 3), np.repeat(w_hi32, 3), np.where(hi != lo, w_hi32, 0)[:, None],
                 (*np.flatnonzero(np.diff(lo, prepend=-1)).tolist(), n))


def _block_means(x: np.ndarray, ay: _Axis, ax: _Axis) -> np.ndarray:
    """(nby, nbx, c) float64 mean of each block of x (h, w, c) uint8, summed exactly in integers."""
    h, w, c = x.shape
    x2 = x.reshape(h, w * c)
    rows = np.empty((ay.count.size, w * c), np.uint16 if int(ay.count.max()) * 255 < 2**16 else np.uint32)
    for i, (y0, n) in enumerate(zip(ay.starts.tolist(), ay.count.tolist(), strict=True)):
        x2[y0 : y0 + n].sum(axis=0, dtype=rows.dtype, out=rows[i])  # one block row at a time: stays in cache
    s = np.add.reduceat(rows.reshape(-1, w, c), ax.starts, axis=1, dtype=np.uint32)
    return s / np.multiply.outer(ay.count, ax.count)[..., None]


def _precompensate(d: np.ndarray, ay: _Axis, ax: _Axis) -> np.ndarray:
    """(nby, nbx, c) float64 values at the block centres of the smooth field whose block means are d."""
    nby, nbx, c = d.shape
    return np.matmul(ax.solve, (ay.solve @ d.reshape(nby, nbx * c)).reshape(nby, nbx, c))


class _Field:
    """The smooth change field (h, w, 3) float32 whose values at the block centres are v (nby, nbx, 3) (see
    _precompensate), produced a band of rows at a time: interpolated along x on the block rows once, then
    along y per run of rows between the same two block rows (no large temporaries).

    sparse: a correction; values under 0.02 level are dropped (rows of blocks then all zero add nothing)."""

    def __init__(self, v: np.ndarray, ay: _Axis, ax: _Axis, sparse: bool = False) -> None:
        v = v.astype(np.float32)
        if sparse:
            v[np.abs(v) < 0.02] = 0
        live = v.any(axis=(1, 2))
        self.live = live[ay.lo] | live[ay.hi]  # (h,) pixel rows the field touches
        v = v.reshape(v.shape[0], -1)
        self.cols = np.take(v, ax.lo3, axis=1)  # (nby, 3w), C order: along x on the block rows
        self.cols *= ax.w_lo3
        self.cols += np.take(v, ax.hi3, axis=1) * ax.w_hi3
        self.step = np.zeros_like(self.cols)  # cols[lo + 1] - cols[lo]; 0 on the last block row (clamped)
        np.subtract(self.cols[1:], self.cols[:-1], out=self.step[:-1])
        self.ay = ay
        self.reach = float(np.abs(v).max(initial=0.0))  # |field| <= reach (each value interpolates v)

    def rows(self, y0: int, y1: int, out: np.ndarray) -> np.ndarray:
        """Field rows y0:y1 as (y1 - y0, 3w) in out."""
        runs, lo = self.ay.runs, self.ay.lo
        a = y0
        while a < y1:  # one run of rows between the same two block rows at a time
            i = int(lo[a])
            b = min(y1, runs[bisect.bisect_right(runs, a)])
            o = out[a - y0 : b - y0]
            np.multiply(self.ay.w_step[a:b], self.step[i], out=o)
            o += self.cols[i]
            a = b
        return out


# embed sums what clipping takes back over bands of rows of about _BAND_BYTES (float32; other bands would give
# other float32 sums, so other marked images), but computes on chunks of up to _CHUNK_BYTES: fewer and longer
# numpy calls (less overhead per call, and two threads rarely wait for each other's GIL), still cache-sized
_BAND_BYTES = 2**19
_CHUNK_BYTES = 2**20

Bands = list[tuple[int, int]]  # consecutive (first row, end row) bands


def _chunk_rows(w: int, limit: int = _BAND_BYTES) -> int:
    """Rows per band of a (., w, 3) float32 image: a divisor of the rounding dither tile, <= limit bytes."""
    rows = _DITHER_TILE
    while rows > 1 and rows * w * 3 * 4 > limit:
        rows //= 2
    return rows


def _merge(groups: list[Bands], limit: int, key: Callable[[Bands], object] | None = None) -> list[Bands]:
    """Consecutive groups of bands joined while the result spans at most limit rows and keeps one key (a group
    longer than limit stays as it is)."""
    out: list[Bands] = []
    for group in groups:
        if out and group[-1][1] - out[-1][0][0] <= limit and (key is None or key(out[-1]) == key(group)):
            out[-1] = out[-1] + group
        else:
            out.append(list(group))
    return out


class _Rounding:
    """One image's x + field (+ a correction) rounded with the keyed dither into uint8, a chunk of rows at a time
    (cache-sized temporaries, no full-size float copy), for RobustWatermark._apply.

    loss() adds up what clipping takes back and, while a correction looks unlikely (few values clipped so
    far), rounds its rows at once, so an image without a correction is done in one pass; round() does the
    rest. Both take work items that either of two threads may run: every value is computed by the same
    float32 operations whichever thread computes it and whenever it is rounded, so the output is the same."""

    def __init__(self, x: np.ndarray, field: _Field, ay: _Axis, key: int) -> None:
        h, w = x.shape[:2]
        self.x2, self.field, self.ay, self.h = x.reshape(h, w * 3), field, ay, h
        self.rows = _chunk_rows(w)
        self.chunk = max(self.rows, _chunk_rows(w, _CHUNK_BYTES))  # rows per chunk: whole bands
        self.marked = np.empty_like(x)
        self.dither = _dither_rows(key, w).reshape(_DITHER_TILE, w * 3)
        r = math.ceil(field.reach) + 1  # only values within reach (|field| < r) of 0 or 255 can clip
        # rows with such values: elsewhere 0 < x + field < 255 and 0 < x + field + dither < 256, so clipping
        # changes nothing and is skipped
        self.near = (self.x2.min(axis=1) < r) | (self.x2.max(axis=1) > 255 - r)
        self.rounded = np.zeros(h, bool)  # rows whose output is floor(clip(x + field + dither)) already
        self.lost_rows = np.zeros((len(ay.count), w * 3))  # float64 sums of what clipping takes back, per band
        self.budget = _CLIP_FRACTION * x.size  # more values clipped than this: a correction is considered
        self.seen = 0  # values clipped so far by both threads (a race may miss some: it only steers rounding)
        self.correction: _Field | None = None
        self._scratch = threading.local()

    def _temporaries(self) -> np.ndarray:
        """Two chunk-sized float32 arrays of the calling thread."""
        if not hasattr(self._scratch, "tmp"):
            self._scratch.tmp = np.empty((2, self.chunk, self.x2.shape[1]), np.float32)
        return self._scratch.tmp

    def _finish(self, o: np.ndarray, y0: int, y1: int, clip: bool) -> None:
        """Rows y0:y1 of the output from o (their x + field, maybe corrected): + dither, clipped, truncated."""
        a = y0
        while a < y1:  # one tile of the dither at a time
            b = min(y1, (a // _DITHER_TILE + 1) * _DITHER_TILE)
            o[a - y0 : b - y0] += self.dither[a % _DITHER_TILE : a % _DITHER_TILE + b - a]
            a = b
        if clip:
            np.clip(o, 0, 255, out=o)
        self.marked.reshape(self.x2.shape)[y0:y1] = o  # truncates: floor(... + dither)

    def loss_items(self) -> list[Bands]:
        """Work items of loss(): runs of whole block rows, each cut into bands within one block row and one
        dither tile (the bands over which the loss is summed in float32: they fix the marked image)."""
        ay = self.ay
        cuts = np.union1d(ay.starts, np.arange(0, self.h, self.rows)).tolist()
        bands = list(zip(cuts, cuts[1:] + [self.h], strict=True))
        block_rows = [list(g) for _, g in itertools.groupby(bands, key=lambda band: int(ay.block[band[0]]))]
        return _merge(block_rows, self.chunk)

    def loss(self, item: Bands) -> int:
        """Add what clipping takes back from item's bands to lost_rows (a block row's bands are summed in order,
        by one thread, as they are all in one item); return how many values clip."""
        tmp, tmp2 = self._temporaries()
        clipped = 0
        for part in _merge([[band] for band in item], self.chunk):
            c0, c1 = part[0][0], part[-1][1]
            if not self.near[c0:c1].any():
                continue
            o = self.field.rows(c0, c1, tmp[: c1 - c0])
            o += self.x2[c0:c1]
            lost = np.clip(o, 0, 255, out=tmp2[: c1 - c0])
            lost -= o  # what clipping takes back: +0.0 where nothing clips (counted faster as int32)
            k = np.count_nonzero(lost.view(np.int32))
            if k:  # (a band without clipping would add +0.0: nothing)
                clipped += k
                self.seen += k
                for y0, y1 in part:  # float32 over <= 64 rows, then float64
                    self.lost_rows[self.ay.block[y0]] += lost[y0 - c0 : y1 - c0].sum(axis=0)
            if self.seen <= self.budget:  # no correction in sight: round these rows now
                self._finish(o, c0, c1, True)
                self.rounded[c0:c1] = True
        return clipped

    def _corrected(self, group: Bands) -> bool:
        return self.correction is not None and bool(self.correction.live[group[0][0] : group[-1][1]].any())

    def round_items(self) -> list[Bands]:
        """Work items of round(): bands of `rows` rows (the correction applies to a whole band or not at all),
        joined into chunks of bands alike (corrected or not; rounded already or not)."""

        def kind(group: Bands) -> tuple[bool, bool]:
            live = self._corrected(group)
            return live, live or bool(self.rounded[group[0][0] : group[-1][1]].all())

        bands = [[(y, min(self.h, y + self.rows))] for y in range(0, self.h, self.rows)]
        return _merge(bands, self.chunk, kind)

    def round(self, item: Bands) -> None:
        """Output rows of item not rounded yet: floor(clip(x + field + dither)), or on corrected bands
        floor(clip(clip(x + field) + correction + dither))."""
        y0, y1 = item[0][0], item[-1][1]
        live = self._corrected(item)
        if not live and self.rounded[y0:y1].all():
            return
        tmp, tmp2 = self._temporaries()
        o = self.field.rows(y0, y1, tmp[: y1 - y0])
        o += self.x2[y0:y1]
        clip = bool(self.near[y0:y1].any())
        if self.correction is not None and live:
            if clip:
                np.clip(o, 0, 255, out=o)
            o += self.correction.rows(y0, y1, tmp2[: y1 - y0])
            clip = True  # the correction has a reach of its own
        self._finish(o, y0, y1, clip)


class RobustWatermark:
    """``provgen-wm/1``: 48-bit payload + 32 check bits, tiled block-mean QIM on Cb/Cr with sync search.

    :param strength: QIM lattice step (8-bit levels) of every block's Cb and Cr mean.
    :param key: keys the layout, dithers and whitening. A different key reads nothing.
    """

    name = "provgen-wm/1"
    payload_bits = 48
    soft_binding_alg = "io.provgen.watermark.wm.v1"
    #: smallest image side (px) that :meth:`embed` accepts
    min_size = 64

    def __init__(self, *, strength: float = 4.6, key: int = 0x5EED_0001) -> None:
        if not strength > 0:
            raise WatermarkError(f"`strength` must be > 0, got {strength}")
        self.strength = self._delta = float(strength)
        self.key = int(key)
        self._info_len = self.payload_bits + _CHECK_BITS
        self._coded_len = 2 * (self._info_len + _K - 1)
        nc = len(_CHANNELS)
        nslots = nc * _T * _T
        order = np.argsort(_stream(key, "layout", nslots), kind="stable")
        bit_of = np.empty(nslots, np.int64)
        bit_of[order] = np.arange(nslots) % self._coded_len
        self._bit_of = bit_of.reshape(nc, _T, _T)
        self._white = (_stream(key, "whiten", self._coded_len) & np.uint64(1)).astype(np.int64)
        self._dither = (_uniform(key, "dither", nslots) * self._delta).reshape(nc, _T, _T)
        # decode tables
        self._slot_onehot = np.zeros((nslots, self._coded_len), np.float32)
        self._slot_onehot[np.arange(nslots), bit_of] = 1.0
        self._slot_onehot *= (1 - 2 * self._white)[None, :].astype(np.float32)  # un-whiten: > 0 favours a 1
        self._dither_conj = np.exp(-2j * np.pi * self._dither / self._delta).astype(np.complex64)
        w = self._dither_conj.astype(np.complex128)  # (nc, T, T)
        onehot = (self._bit_of[None] == np.arange(self._coded_len)[:, None, None, None])  # (coded, nc, T, T)
        # per coded bit: the imaginary and real parts of its slots' conj(dither), in frequency (real FFTs: a vote
        # Im(z conj(d)) = Re(z) Im(conj d) + Im(z) Re(conj d) is a sum of two real correlations); (coded, 2, nc,
        # T, T//2+1)
        self._bit_rfft = np.stack([np.fft.rfft2(onehot * w.imag[None]),
                                   np.fft.rfft2(onehot * w.real[None])], axis=1).astype(np.complex64)
        self._dither2_fft = np.fft.fft2(w * w).astype(np.complex64)
        lut = np.exp(2j * np.pi * np.arange(_LUT) / _LUT).astype(np.complex64)
        self._lut = lut
        ty, tx = np.divmod(np.arange(_T * _T), _T)
        sy, sx = np.divmod(np.arange(_T * _T), _T)
        # fold index holding embedded slot (ty, tx) under cyclic shift (sy, sx)
        self._shift_index = ((ty[None] - sy[:, None]) % _T) * _T + (tx[None] - sx[:, None]) % _T

    # ------------------------------------------------------------------------------------------- payload

    def _info_bits(self, payload: int) -> list[int]:
        check = zlib.crc32(f"provgen-wm/1:{self.key}:".encode() + payload.to_bytes(6, "big"))
        word = (payload << _CHECK_BITS) | (check & ((1 << _CHECK_BITS) - 1))
        return [(word >> i) & 1 for i in range(self._info_len - 1, -1, -1)]

    def _slot_bits(self, payload: int) -> np.ndarray:
        coded = _conv_encode(self._info_bits(payload)) ^ self._white
        return coded[self._bit_of]  # (nc, T, T)

    # ----------------------------------------------------------------------------------------------- embed

    def embed(self, image: Image.Image, payload: int) -> Image.Image:
        """Return a marked copy of ``image`` (RGB, or RGBA with the alpha channel untouched)."""
        payload = _check_payload(payload, self.payload_bits)
        rgb, alpha = _embed_input(image, self.name, self.min_size)
        rgb.load()  # before two threads read it (a lazily opened file is loaded once, here)
        w, h = rgb.size
        beta = block_size(min(h, w))
        ay, ax = _axis(h, beta), _axis(w, beta)

        def pixels() -> tuple[np.ndarray, np.ndarray]:
            x = np.asarray(rgb)
            return x, _block_means(x, ay, ax)

        # the masking (mostly Pillow's reduce) runs on the pool meanwhile
        (x, block_means), masking = _parallel.both(
            pixels, lambda: _masking(rgb, ay, ax, _floor(min(h, w))), h * w >= _parallel.MIN_PIXELS
        )
        cy, cx = ay.block[ay.starts] % _T, ax.block[ax.starts] % _T  # tile class of each block
        bits = self._slot_bits(payload)[:, cy[:, None], cx[None, :]]  # (nc, nby, nbx)
        dither = self._dither[:, cy[:, None], cx[None, :]]
        mat = _RGB2YCC[list(_CHANNELS)]  # (nc, 3)
        means = np.tensordot(mat, block_means, axes=([1], [2])) + 128.0  # (nc, nby, nbx)
        q = dither + (2 * bits - 1) * self._delta / 4
        target = q + self._delta * np.round((means - q) / self._delta)
        # distortion-compensated QIM: flat blocks move only part of the way (the decoder reads the lattice and
        # needs no side information; the rest of the way is self-noise that the repetition averages out)
        target = means + (target - means) * masking[None]
        inv = _YCC2RGB[:, list(_CHANNELS)]  # (3, nc)
        change = np.tensordot(target - means, inv, axes=([0], [1]))  # (nby, nbx, 3) RGB
        v = _precompensate(change, ay, ax)  # values at the block centres
        v *= self._distortion_scale(v, ay, ax)
        marked = Image.fromarray(self._apply(x, _Field(v, ay, ax), ay, ax), "RGB")
        if alpha is not None:
            marked.putalpha(alpha)
        return marked

    def _apply(self, x: np.ndarray, field: _Field, ay: _Axis, ax: _Axis) -> np.ndarray:
        """x (h, w, 3) uint8 + field, rounded with the keyed dither into a new uint8 image.

        If clipping (saturated colours) would take back part of the change in more than _CLIP_FRACTION of the
        values, and that moved some block's chroma mean by delta/8 or more, the shortfall is pushed once more
        (on the clipped values): the bands of rows it touches are rounded from clip(x + field) + correction.
        Two passes over chunks of rows (see _Rounding): what clipping takes back, then the rounding. On images
        of _parallel.MIN_PIXELS or more two threads share each pass."""
        job = _Rounding(x, field, ay, self.key)
        parallel = x.shape[0] * x.shape[1] >= _parallel.MIN_PIXELS
        if _CLIP_ITER > 0 and job.near.any():
            if sum(_parallel.run_items(job.loss, job.loss_items(), parallel)) > job.budget:
                job.correction = self._correction(job.lost_rows, ay, ax)
        _parallel.run_items(job.round, job.round_items(), parallel)
        return job.marked

    def _correction(self, lost_rows: np.ndarray, ay: _Axis, ax: _Axis) -> _Field | None:
        """The field that pushes once more what clipping took back (lost_rows: (nby, 3w) per block row and
        value column), or None when no block's chroma mean missed its target by delta/8 or more."""
        w = lost_rows.shape[1] // 3
        loss = np.add.reduceat(lost_rows.reshape(-1, w, 3), ax.starts, axis=1)
        loss /= np.multiply.outer(ay.count, ax.count)[..., None]
        miss = -np.tensordot(_RGB2YCC[list(_CHANNELS)], loss, axes=([1], [2]))  # (nc, nby, nbx)
        if np.abs(miss).max() < self._delta / 8:
            return None
        change = np.tensordot(miss, _YCC2RGB[:, list(_CHANNELS)], axes=([0], [1]))
        return _Field(_precompensate(change, ay, ax), ay, ax, sparse=True)

    @staticmethod
    def _distortion_scale(v: np.ndarray, ay: _Axis, ax: _Axis) -> float:
        """Factor (<= 1) of the field with centre values v (nby, nbx, c) that keeps the expected PSNR at
        MIN_PSNR_DB or above (clipping only lowers the MSE)."""
        nby, nbx, c = v.shape
        gv = np.matmul(ax.gram, (ay.gram @ v.reshape(nby, nbx * c)).reshape(nby, nbx, c))
        energy = float(np.vdot(v, gv))  # sum over c of trace(v_c^T Gy v_c Gx)
        energy /= 3 * ay.block.size * ax.block.size
        budget = 255.0**2 / 10 ** (MIN_PSNR_DB / 10) - 0.125  # rounding with the dither: 1/12 + 1/24
        return 1.0 if energy <= budget else math.sqrt(budget / energy)

    # ---------------------------------------------------------------------------------------------- decode

    def decode(self, image: Image.Image) -> WatermarkReading | None:
        """Read the payload, or ``None`` when no valid mark is found (never raises for a loaded image)."""
        if min(image.size) < 32:
            return None
        try:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
        except (ValueError, OSError):
            return None
        betas = _hypotheses(min(rgb.size))
        if not betas:
            return None
        k = max(1, int(min(betas) / _A))
        span = int(_MAX_TILES * _T * max(betas)) + 2  # a central window of at most _MAX_TILES tiles per axis
        w, h = rgb.size
        left = top = 0
        if w > span or h > span:
            left, top = max(0, (w - span) // 2), max(0, (h - span) // 2)
            rgb = rgb.crop((left, top, left + min(w, span), top + min(h, span)))
        if k > 1:
            rgb = rgb.reduce(k)
        x = np.asarray(rgb, dtype=np.float32)
        integ = []
        for row in _RGB2YCC[list(_CHANNELS)].astype(np.float32):
            c = x @ row  # centred chroma (Cb - 128 or Cr - 128)
            ii = np.zeros((c.shape[0] + 1, c.shape[1] + 1), np.float64)
            np.cumsum(np.cumsum(c, axis=0, dtype=np.float64), axis=1, out=ii[1:, 1:])
            integ.append(ii)
        # 1) fast path: the block size of an image that was not cropped (re-encoded, resized, filtered...),
        #    first at gain 1, then at every gain
        b0 = betas[0] / k
        z = self._folds(integ, b0, 0.0, 0.0, 1, (1.0,))  # 0) the grid still starts at the top-left pixel
        if z is None:
            return None
        found = self._try_sync(z[0, :, :, 0, :, 0])
        if found is not None:
            return found
        tried = {(1.0, 0, 0)}
        zs = self._folds(integ, b0, 0.0, 0.0, _A, (1.0,))
        if zs is None:
            return None
        stat = _coherence(zs)  # (1, A, A)
        for flat in np.argsort(stat, axis=None)[::-1][:_CANDIDATES]:
            _, py, px = np.unravel_index(flat, stat.shape)
            if (1.0, py, px) in tried:
                continue
            tried.add((1.0, py, px))
            found = self._try_sync(zs[0, :, :, py, :, px])
            if found is not None:
                return found
        # every gain of the fine grid: its best phases (phase coherence) ranked by the sync score; the candidates
        # are the best of gains more than _GAIN_APART apart. On flat saturated colours the lattice aliases: a
        # chroma level c marked at gain g and read at gain g' lands on lattice points again when (g / g' - 1) c /
        # step is a whole number, and such an alias (a large flat green background, say) can outscore the true
        # gain at every phase, so the best few (gain, phase) pairs can all be one alias's phases
        zs = self._folds(integ, b0, 0.0, 0.0, _A, _GAINS_FINE)
        scored = self._score_phases(zs, _GAINS_FINE)
        distinct: list[tuple[float, float, int, int]] = []
        for entry in scored:
            if len(distinct) == _GAIN_CANDIDATES:
                break
            if all(abs(entry[1] - other[1]) > _GAIN_APART for other in distinct):
                distinct.append(entry)
        for _, g, py, px in distinct:
            if (g, py, px) in tried:
                continue
            tried.add((g, py, px))
            found = self._try_sync(zs[_GAINS_FINE.index(g), :, :, py, :, px])
            if found is not None:
                return found
        # 2) search the block size on a coarse grid, rank (size, gain, phase) by sync score, refine the best
        pool = [(sc, b0, g, py, px) for sc, g, py, px in distinct[:_CANDIDATES]]
        zs = self._folds(integ, b0, 0.0, 0.0, _A, (1.0,))
        pool += [(self._sync_score(zs[0, :, :, py, :, px]), b0, 1.0, int(py), int(px))
                 for py, px in (np.unravel_index(f, stat.shape[1:]) for f in np.argsort(stat[0], axis=None)[::-1][:2])]
        pool += self._ranked(integ, [(b, _A, _PHASES_SCORED // 2) for b in _coarse(betas)], k)[:_REFINED]
        pool += self._fits(integ, w, h, left, top, k, betas)[:_FITS]
        if min(w, h) < 2 * _T * betas[0]:
            # below two tiles across, a tile class holds one or two blocks and phase coherence says little, and on
            # textured images the sync score only rises within a pixel of the true phase: the block sizes of a
            # plain crop get every whole-pixel phase ranked by the lattice energy, whose best are sync-scored
            crops = [(b, max(_A, int(np.ceil(b / k))), _PHASES_SCORED) for b in _crop_sizes(min(w, h))]
            pool += self._ranked(integ, crops, k, energy=True)[:_REFINED]
        pool.sort(key=lambda r: -r[0])
        # refine every pooled hypothesis (the sync score only stands out once the phase is within a px or so),
        # then shift-search the _REFINED best refined ones; one that stands out (_SURE) is tried at once
        refined, budget = [], _REFINED
        for _, b, gain, py, px in pool:
            got = self._refine(integ, b, gain, py * b / _A, px * b / _A)
            if got[1] is None:
                continue
            if got[0] >= _SURE:
                budget -= 1
                found = self._try_sync(got[1])
                if found is not None:
                    return found
                if budget == 0:
                    return None
            else:
                refined.append(got)
        refined.sort(key=lambda r: -r[0])
        for _, z in refined[:budget]:
            found = self._try_sync(z)
            if found is not None:
                return found
        return None

    def _ranked(self, integ: list[np.ndarray], sizes: list[tuple[float, int, int]], k: int,
                energy: bool = False) -> list[tuple[float, float, float, float, float]]:
        """For each (block size, phases per side a, phases scored) the best phase at gain 1 by sync score among
        those that rank best by phase coherence (or by lattice energy), best first, as pool entries (score,
        block size, gain, py, px) in the reduced window (phases in b / _A)."""
        ranked = []
        for beta, a, phases in sizes:
            zs = self._folds(integ, beta / k, 0.0, 0.0, a, (1.0,))
            if zs is not None:
                sc, g, py, px = self._score_phases(zs, (1.0,), phases, self._lattice_energy(zs) if energy else None)[0]
                ranked.append((sc, beta / k, g, py * _A / a, px * _A / a))
        ranked.sort(key=lambda r: -r[0])
        return ranked

    def _fits(self, integ: list[np.ndarray], w: int, h: int, left: int, top: int, k: int,
              betas: tuple[float, ...]) -> list[tuple[float, float, float, float, float]]:
        """Hypotheses of an image that was resized but not cropped, best sync score first: its grid still
        starts at the top-left pixel and its shorter side still holds n blocks, where n = side / block_size(side)
        of the original (16 to 48); n on a 1/4 grid, at gain 1. Scored at phase 0 only, so they are cheap, and
        they find the scale where the phase-coherence ranking of the size search is fooled (one tile across).
        Entries are (score, block size, gain, py, px) in the reduced window (phases in b / _A)."""
        # the sizes the hypotheses cover: their grid's extremes plus half a grid step (the extremes themselves can
        # miss an exact 2x resize of a 512 px image, whose n = 32 blocks of 32 px lie 0.4% above the last one)
        side, lo, hi = min(w, h), min(betas) / _STEP**0.5, max(betas) * _STEP**0.5
        found = []
        for n in np.arange(_T, _PER_SIDE + 0.01, 0.25):
            b = side / n
            if not lo <= b <= hi:
                continue
            oy, ox = (-top) % b / k, (-left) % b / k
            z = self._folds(integ, b / k, oy, ox, 1, (1.0,))
            if z is not None:
                found.append((b / k, oy, ox, z[0, :, :, 0, :, 0]))
        if not found:
            return []
        scores = self._sync_scores(np.stack([f[3] for f in found]))
        # phases as pool entries give them: in units of b / _A
        out = [(float(sc), b, 1.0, oy * _A / b, ox * _A / b) for sc, (b, oy, ox, _) in zip(scores, found, strict=True)]
        out.sort(key=lambda r: -r[0])
        return out

    def _refine(self, integ: list[np.ndarray], b: float, gain: float, oy: float,
                ox: float) -> tuple[float, np.ndarray | None]:
        """Refine phase, gain, block size then sub-sample phase (coordinate ascent of the sync score); return
        (sync score, folded phasors (nc, T, T))."""
        step = b / _A

        def fold(bb: float, y: float, x: float) -> tuple[float, np.ndarray | None]:
            z = self._folds(integ, bb, y, x, 1, (gain,))
            return (-1.0, None) if z is None else (self._sync_score(z[0, :, :, 0, :, 0]), z[0, :, :, 0, :, 0])

        best = fold(b, oy, ox)
        for dy, dx in ((-0.5, 0), (0.5, 0), (0, -0.5), (0, 0.5)):
            y, x = (oy + dy * step) % b, (ox + dx * step) % b
            got = fold(b, y, x)
            if got[0] > best[0]:
                best, oy, ox = got, y, x
        got = self._folds(integ, b, oy, ox, 1, _GAINS_FINE)
        if got is not None:
            scores = self._sync_scores(got[:, :, :, 0, :, 0])
            gi = int(np.argmax(scores))
            if scores[gi] > best[0]:
                best, gain = (float(scores[gi]), got[gi, :, :, 0, :, 0]), _GAINS_FINE[gi]
        for scale in (0.99, 1.01, 0.995, 1.005, 0.9975, 1.0025):
            # keep the window centre aligned while the block size changes
            cy = (integ[0].shape[0] - 1) / 2
            cx = (integ[0].shape[1] - 1) / 2
            nb = b * scale
            y = oy + (cy - oy) * (1 - scale) % nb
            x = ox + (cx - ox) * (1 - scale) % nb
            got = fold(nb, y, x)
            if got[0] > best[0]:
                best, b, oy, ox = got, nb, y, x
        for dy, dx in ((-0.5, 0), (0.5, 0), (-0.25, 0), (0.25, 0), (-0.125, 0), (0.125, 0),
                       (0, -0.5), (0, 0.5), (0, -0.25), (0, 0.25), (0, -0.125), (0, 0.125)):
            y, x = (oy + dy * step) % b, (ox + dx * step) % b
            got = fold(b, y, x)
            if got[0] > best[0]:
                best, oy, ox = got, y, x
        return best

    def _folds(self, integ: list[np.ndarray], b: float, oy: float, ox: float, a: int,
               gains: tuple[float, ...]) -> np.ndarray | None:
        """Phasor sums (gains, nc, T, a, T, a) of box means of b x b px at positions (oy + i*b/a, ox + j*b/a),
        folded per tile class (block index mod T) and phase (sample index mod a)."""
        H, W = integ[0].shape[0] - 1, integ[0].shape[1] - 1
        ky, kx = int((H - b - oy) / b) + 1, int((W - b - ox) / b) + 1  # whole blocks (every phase inside)
        if ky < 1 or kx < 1:
            return None
        ya = oy + np.arange(ky * a + a) * (b / a)
        xa = ox + np.arange(kx * a + a) * (b / a)
        iy = np.minimum(ya.astype(np.int64), H - 1)
        fy = np.minimum(ya - iy, 1.0)[:, None]
        ix = np.minimum(xa.astype(np.int64), W - 1)
        fx = np.minimum(xa - ix, 1.0)[None, :]
        kyp, kxp = -(-ky // _T) * _T, -(-kx // _T) * _T
        out = np.zeros((len(gains), len(integ), _T, a, _T, a), np.complex64)
        buf = np.zeros((kyp * a, kxp * a), np.complex64)
        inv_area = 1.0 / (b * b)
        # bilinear interpolation of the integral image at the sample grid, rows then columns, on the four corner
        # values it needs only (the same operations on the same numbers as interpolating whole rows, which costs
        # more than the rest of a single-phase fold at 1024 px)
        at = iy[:, None] * (W + 1) + ix[None, :]
        wy0, wy1, wx0 = 1 - fy, fy, 1 - fx
        for ci, ii in enumerate(integ):
            flat = ii.reshape(-1)
            j = ((flat[at] * wy0 + flat[at + (W + 1)] * wy1) * wx0
                 + (flat[at + 1] * wy0 + flat[at + (W + 2)] * wy1) * fx)
            m = (j[a:, a:] - j[:-a, a:] - j[a:, :-a] + j[:-a, :-a]) * inv_area  # centred block means
            for gi, g in enumerate(gains):
                idx = np.rint(m * (_LUT / (g * self._delta)) + 128.0 * _LUT / self._delta).astype(np.int64)
                idx &= _LUT - 1
                buf[: ky * a, : kx * a] = self._lut[idx]
                out[gi, ci] = buf.reshape(kyp // _T, _T, a, kxp // _T, _T, a).sum(axis=(0, 3))
        return out

    def _sync_score(self, z: np.ndarray) -> float:
        """Payload-free sync statistic of folded phasors z (nc, T, T): the best (over the cyclic tile shifts)
        repetition coherence, sum over coded bits of (sum of its slots' votes)**2 / sum of the votes**2 (about
        1 at a wrong hypothesis whatever the content, about the slots per bit at the right one).

        The vote of slot t under shift s is Im(z[t - s] conj(dither[t])): every bit's vote sum over all shifts is
        one circular correlation, done with 16 x 16 FFTs (the same numbers as _try_sync's, ~100x faster)."""
        return float(self._sync_scores(z[None])[0])

    def _sync_scores(self, zb: np.ndarray) -> np.ndarray:
        """_sync_score of each of zb (n, nc, T, T), batched."""
        zr = _reversed(zb)
        # scipy's pocketfft, not numpy's: the same transforms in single precision, about 3x faster on these
        # batches of 16 x 16 arrays (0.19 vs 0.59 ms for one hypothesis' 172 inverse FFTs), which dominate
        # decoding; real transforms, because the votes are real: half the inverse FFT work of complex ones
        fr, fi = _fft.rfft2(zr.real), _fft.rfft2(zr.imag)  # (n, nc, T, T//2+1)
        prod = fr[:, None, 0] * self._bit_rfft[None, :, 0, 0]
        prod += fi[:, None, 0] * self._bit_rfft[None, :, 1, 0]
        for c in range(1, fr.shape[1]):
            prod += fr[:, None, c] * self._bit_rfft[None, :, 0, c]
            prod += fi[:, None, c] * self._bit_rfft[None, :, 1, c]
        soft = _fft.irfft2(prod, s=(_T, _T))  # (n, coded, T, T): per shift
        cross, total = self._cross(zb, zr)
        energy = 0.5 * (total[:, None, None] - cross)  # sum of votes**2 per shift
        return ((soft * soft).sum(axis=1) / np.maximum(energy, 1e-12)).max(axis=(1, 2))

    def _cross(self, zb: np.ndarray, zr: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For zb (n, nc, T, T): (n, T, T) sum_t Re(z[t - s]^2 conj(d[t])^2) per cyclic shift s, and (n,) sum
        of |z|**2; sum of votes**2 under shift s is half their difference. zr: _reversed(zb) if already made."""
        zr = _reversed(zb) if zr is None else zr
        cross = _fft.ifft2((_fft.fft2(zr * zr) * self._dither2_fft).sum(axis=1)).real
        return cross, (np.abs(zb) ** 2).sum(axis=(1, 2, 3))

    def _lattice_energy(self, zs: np.ndarray) -> np.ndarray:
        """(gains, a, a) phase statistic of zs (gains, nc, T, a, T, a) for images about one tile across: the
        best (over the cyclic tile shifts) share of the phasor energy that lies on the lattice points of either
        bit, sum of votes**2 / sum of |z|**2 (about 1/2 off the sync, near 1 on it). It needs two small FFTs per
        phase where the sync score needs one per coded bit, so every whole-pixel phase can be ranked."""
        g, nc, _, a, _, _ = zs.shape
        zb = zs.transpose(0, 3, 5, 1, 2, 4).reshape(g * a * a, nc, _T, _T)
        cross, total = self._cross(zb)
        return (0.5 * (1 - cross.min(axis=(1, 2)) / np.maximum(total, 1e-12))).reshape(g, a, a)

    def _score_phases(self, zs: np.ndarray, gains: tuple[float, ...], phases: int = _PHASES_SCORED,
                      stat: np.ndarray | None = None) -> list[tuple[float, float, int, int]]:
        """(sync score, gain, py, px) of the `phases` best phases of every gain of zs (gains, nc, T, A, T, A)
        by `stat` (gains, A, A; default: phase coherence), best score first."""
        stat = _coherence(zs) if stat is None else stat
        keys = []
        for gi in range(len(gains)):
            best = [(int(py), int(px)) for py, px in
                    (np.unravel_index(f, stat.shape[1:]) for f in np.argsort(stat[gi], axis=None)[::-1][:phases])]
            if (0, 0) not in best:  # an image that was not cropped keeps phase 0: always scored
                best.append((0, 0))
            keys += [(gi, py, px) for py, px in best]
        scores = self._sync_scores(np.stack([zs[gi, :, :, py, :, px] for gi, py, px in keys]))
        out = [(float(sc), gains[gi], py, px) for sc, (gi, py, px) in zip(scores, keys, strict=True)]
        out.sort(key=lambda r: -r[0])
        return out

    def _try_sync(self, z: np.ndarray) -> WatermarkReading | None:
        """z: (nc, T, T) folded phasors at one (block size, gain, phase): search the cyclic tile shift."""
        nc = z.shape[0]
        zf = z.reshape(nc, _T * _T)
        shifted = zf[:, self._shift_index]  # (nc, S, T*T)
        votes = (shifted * self._dither_conj.reshape(nc, 1, _T * _T)).imag  # (nc, S, T*T)
        votes = votes.transpose(1, 0, 2).reshape(_T * _T, nc * _T * _T)
        soft = votes @ self._slot_onehot  # (S, coded)
        # rank shifts by repetition coherence (slots of one coded bit agree), then by Viterbi path metric
        pre = np.argsort(np.abs(soft).sum(axis=1))[::-1][:_VITERBI_RANKED]
        scores = _viterbi_scores(soft[pre])
        for s in pre[np.argsort(scores)[::-1][:_SHIFTS_CHECKED]]:
            info = _viterbi(soft[s].astype(np.float64), self._info_len)
            payload = int("".join(map(str, info)), 2) >> _CHECK_BITS
            if self._info_bits(payload) == info:
                expected = 2.0 * self._slot_bits(payload).reshape(nc * _T * _T) - 1
                conf = float(votes[s] @ expected) / max(float(np.abs(shifted[:, s]).sum()), 1e-9)
                return WatermarkReading(self.name, payload, min(max(conf, 0.0), 1.0))
        return None


def _masking(rgb: Image.Image, ay: _Axis, ax: _Axis, floor: float) -> np.ndarray:
    """(nby, nbx) fraction of the QIM move each block makes: floor on flat blocks, 1 on textured ones.

    Texture is the mean luma + chroma gradient of a 4x box-reduced copy (levels per 4 px), per block."""
    k = 4
    small = np.asarray(rgb.reduce(k), dtype=np.float32) @ np.abs(_RGB2YCC.T).astype(np.float32)  # |Y|,|Cb|,|Cr|
    planes = np.ascontiguousarray(small.transpose(2, 0, 1))  # (3, h, w): channel sums without a length-3 axis
    g = np.zeros(small.shape[:2], np.float32)
    d = np.abs(np.diff(planes, axis=2))
    g[:, 1:] += d[0] + d[1] + d[2]
    d = np.abs(np.diff(planes, axis=1))
    g[1:, :] += d[0] + d[1] + d[2]
    by = ay.block[np.minimum(np.arange(small.shape[0]) * k + k // 2, ay.block.size - 1)]
    bx = ax.block[np.minimum(np.arange(small.shape[1]) * k + k // 2, ax.block.size - 1)]
    nby, nbx = int(ay.block[-1]) + 1, int(ax.block[-1]) + 1
    flat = by[:, None] * nbx + bx[None, :]
    count = np.multiply.outer(np.bincount(by, minlength=nby), np.bincount(bx, minlength=nbx)).ravel()
    act = np.bincount(flat.ravel(), g.ravel(), nby * nbx) / np.maximum(count, 1)
    return (floor + (1 - floor) * np.minimum(1.0, act / _TEXTURE)).reshape(nby, nbx)


def _reversed(zb: np.ndarray) -> np.ndarray:
    """zb (n, nc, T, T) with both tile axes reversed cyclically: out[u] = z[-u] (correlations as FFT products)."""
    return np.roll(zb[:, :, ::-1, ::-1], 1, axis=(2, 3))


def _coherence(zs: np.ndarray) -> np.ndarray:
    """(gains, a, a) sync statistic of folded phasors zs (gains, nc, T, a, T, a): sum over classes of |class sum|
    after removing the phasor common to all classes of a channel. The dither makes the classes' phases
    independent at the right sync, so that mean is ~0 there; on a flat image every block has the same mean at
    any block size and phase, and without the subtraction every hypothesis would look coherent."""
    return np.abs(zs - zs.mean(axis=(2, 4), keepdims=True)).sum(axis=(1, 2, 4))


def _viterbi_scores(soft: np.ndarray) -> np.ndarray:
    """Final ML path metric (ending in state 0) of each row of soft (S, 2 * steps): a batched Viterbi
    forward pass, used to rank shift hypotheses."""
    n, steps = soft.shape[0], soft.shape[1] // 2
    ns = 1 << (_K - 1)
    out = _OUT.astype(np.float32)
    metric = soft[:, 0::2, None] * out[None, None, :, 0] + soft[:, 1::2, None] * out[None, None, :, 1]
    prev = np.arange(ns) >> 1
    pm = np.full((n, ns), -np.inf, np.float32)
    pm[:, 0] = 0.0
    for t in range(steps):
        a = pm[:, prev] + metric[:, t, :ns]
        np.maximum(a, pm[:, prev + ns // 2] + metric[:, t, ns:], out=a)
        pm = a
    return pm[:, 0]


@lru_cache(maxsize=64)
def _hypotheses(min_side: int) -> tuple[float, ...]:
    """Block sizes (px) to try on an image whose shorter side is min_side, most likely first.

    Covers marks made on an image resized by 0.5-2x and/or cropped to >= 80% of its shorter side."""
    found = []
    for s in np.geomspace(0.5, 2.0, 61):
        for c in (0.8, 0.85, 0.9, 0.95, 1.0):
            orig = min_side / (s * c)
            if orig >= 64:
                found.append(block_size(orig) * s)
    if not found:
        return ()
    lo, hi = min(found) / _STEP**0.5, max(found) * _STEP**0.5
    b0 = min(max(block_size(min_side), lo), hi)
    up = [b0 * _STEP**i for i in range(1, 200) if b0 * _STEP**i <= hi]
    down = [b0 / _STEP**i for i in range(1, 200) if b0 / _STEP**i >= max(lo, 1.5)]
    order = [b0]
    for i in range(max(len(up), len(down))):
        order += up[i : i + 1] + down[i : i + 1]
    return tuple(order)


@lru_cache(maxsize=64)
def _crop_sizes(min_side: int) -> tuple[float, ...]:
    """Block sizes of an image cropped (not resized) to keep >= 80% of its shorter side, on a 1% grid (the
    search's 3% grid misses them by too much when the image is about one tile across)."""
    sizes = sorted({round(block_size(min_side / c), 3) for c in np.linspace(0.8, 1.0, 81)})
    out = [sizes[0]]
    for b in sizes[1:]:
        if b > out[-1] * 1.01:
            out.append(b)
    if sizes[-1] != out[-1]:
        out.append(sizes[-1])
    return tuple(out)


def _coarse(betas: tuple[float, ...]) -> list[float]:
    """A _COARSE-spaced subset of the block-size hypotheses (without the first, the fast path)."""
    lo, hi = min(betas), max(betas)
    n = max(1, int(np.ceil(np.log(hi / lo) / np.log(_COARSE))))
    grid = list(np.geomspace(lo, hi, n + 1)) if hi > lo * 1.001 else []
    return [g for g in grid if abs(np.log(g / betas[0])) > np.log(_COARSE) / 2]
