"""Perceptual fingerprint: 64-bit pHash (imagehash), stored as 16 hex characters."""

from __future__ import annotations

from PIL import Image

__all__ = ["phash", "hamming"]


def phash(image: Image.Image) -> str:
    """DCT perceptual hash of the image (imagehash's pHash, 8x8 = 64 bits) as 16 hex characters."""
    import imagehash  # imported lazily: it pulls in scipy

    return str(imagehash.phash(image.convert("RGB")))


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
