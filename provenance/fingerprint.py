"""Perceptual fingerprints: 64-bit pHash and dHash (imagehash), each stored as 16 hex characters.

The pHash finds candidates (it is indexed in the registry); the dHash, a different hash of the same
luminance, confirms them. ``benchmarks/fingerprint_calibration.py`` measures both on edited copies and on
distinct images and chose the thresholds in ``provgen.core.config``.
"""

from __future__ import annotations

from PIL import Image

from provgen.provenance import _parallel

__all__ = ["phash", "dhash", "fingerprints", "hamming"]


def phash(image: Image.Image) -> str:
    """DCT perceptual hash of the image (imagehash's pHash, 8x8 = 64 bits) as 16 hex characters."""
    import imagehash  # imported lazily: it pulls in scipy

    return str(imagehash.phash(image.convert("RGB")))


def dhash(image: Image.Image) -> str:
    """Difference hash (imagehash's dHash, 8x8 = 64 bits: is each pixel brighter than its right neighbour on a
    9x8 reduction) as 16 hex characters."""
    import imagehash

    return str(imagehash.dhash(image.convert("RGB")))


def fingerprints(image: Image.Image, parallel: bool = True) -> tuple[str, str]:
    """``(phash(image), dhash(image))`` with one grayscale conversion instead of two (same values: imagehash
    converts to grayscale first either way). On large images the two run on two threads: each is mostly one
    Pillow resize (Lanczos, about 5 ms at 1024 x 1024), which releases the GIL. ``parallel=False`` keeps both
    on the calling thread (for a caller that already runs this on the shared pool)."""
    import imagehash

    gray = image.convert("L")
    ph, dh = _parallel.both(
        lambda: imagehash.phash(gray),
        lambda: imagehash.dhash(gray),
        parallel and gray.width * gray.height >= _parallel.MIN_PIXELS,
    )
    return str(ph), str(dh)


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
