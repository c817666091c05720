"""Verification for auditors: did we make this image, from what, and was it changed?

Evidence is gathered in this order: the C2PA manifest (and its label in the registry), the exact file
hash, the invisible watermark, the perceptual fingerprint. The verdict:

* ``verified``  - a valid manifest whose asset is in the registry (Trusted, or Valid with the registry's
  sha256 equal to the file's);
* ``recovered`` - no usable manifest, but the file hash, watermark or fingerprint resolves to a record;
* ``tampered``  - a manifest is present but invalid (pixels or metadata changed after signing);
* ``unknown``   - no evidence (also for files that are not readable images; ``error`` says why).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from provgen.core.config import Settings
from provgen.provenance.fingerprint import fingerprints, hamming
from provgen.provenance.imwatermark_compat import detect_stock_marks

if TYPE_CHECKING:
    from provgen.provenance.registry import Asset, Registry
    from provgen.provenance.registry.store import FingerprintMatch
    from provgen.provenance.watermark import WatermarkMethod

__all__ = ["VerifyReport", "verify_file", "verify_bytes", "VERDICTS"]

VERDICTS = ("verified", "recovered", "tampered", "unknown")


@dataclass
class VerifyReport:
    path: str
    verdict: str = "unknown"
    asset_id: str | None = None
    generation_id: str | None = None
    #: how the registry record was found: "manifest", "sha256", "watermark", "fingerprint" or None
    match: str | None = None
    sha256: str | None = None
    #: the file is byte-for-byte the one provgen wrote
    sha256_match: bool = False
    c2pa: dict[str, Any] = field(default_factory=lambda: {"state": "Missing", "codes": [], "label": None})
    watermark: dict[str, Any] = field(default_factory=lambda: {"found": False, "id": None})
    #: invisible-watermark messages that other generators stamp (e.g. Stable Diffusion XL's), found in the pixels:
    #: ``[{"name": "sdxl", "method": "dwtDct", "message": "b3ec907bb19e", "bit_accuracy": 0.98}]``
    stock_watermarks: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    #: what the registry says about the asset (model, scheduler, prompt, plugins, ...)
    record: dict[str, Any] | None = None
    error: str | None = None
    #: id of the registry's record of this check, when it was recorded
    verification_id: str | None = None
    #: with ``verify --reattach``: the copy written with the original manifest re-attached (path, sha256, label)
    reattached: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in ("verified", "recovered")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_file(path: Path, **kwargs: Any) -> VerifyReport:
    """Verify one file; see :func:`verify_bytes` for the keyword arguments."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return VerifyReport(path=str(path), error=f"cannot read file: {error.strerror or error}")
    return verify_bytes(data, path=str(path), **kwargs)


def verify_bytes(data: bytes, *, path: str, registry: Registry, methods: list[WatermarkMethod],
                 trust_anchors_pem: bytes, max_distance: int, max_phash: int | None = None,
                 max_dhash: int | None = None, marking_method: str | None = None) -> VerifyReport:
    """Verify the file ``data``. Fingerprint matches: pHash within ``max_phash`` and dHash within ``max_dhash``
    for records that have a dHash, pHash within ``max_distance`` for those that do not (defaults: the
    calibrated ``Settings`` values).

    Watermark methods are tried in order. One whose ``auto_detect`` is False (the imwatermark-compatible ones:
    too few check bits to be tried on every image) is tried only when it is ``marking_method``, the method new
    images are marked with (``settings.watermark_method``, ``PROVGEN_WATERMARK``)."""
    from provgen.provenance.c2pa_io import read_credentials

    report = VerifyReport(path=path, sha256=hashlib.sha256(data).hexdigest())
    image, mime, problem = _decode(data)
    credentials = read_credentials(data, mime, trust_anchors_pem=trust_anchors_pem)
    report.c2pa = {"state": credentials.state, "codes": list(credentials.codes), "label": credentials.label}
    if credentials.error:
        report.c2pa["error"] = credentials.error
    if image is None:
        # Unreadable pixels: a manifest that no longer matches still proves tampering.
        report.error = problem
        report.verdict = "tampered" if credentials.state == "Invalid" else "unknown"
        return report

    reading = None
    for method in methods:
        if not getattr(method, "auto_detect", True) and method.name != marking_method:
            continue
        reading = method.decode(image)
        if reading is not None:
            report.watermark = {"found": True, "id": f"{reading.payload:012x}", "method": reading.method,
                                "confidence": round(reading.confidence, 4)}
            break
    report.stock_watermarks = detect_stock_marks(image)
    fingerprint, second = fingerprints(image)
    report.fingerprint = {"phash": fingerprint, "dhash": second}
    defaults = Settings.__dataclass_fields__
    rule = (
        max_distance,
        max_phash if max_phash is not None else defaults["fingerprint_max_phash"].default,
        max_dhash if max_dhash is not None else defaults["fingerprint_max_dhash"].default,
    )
    asset, match, nearest = _find_record(registry, report, credentials.label, reading, fingerprint, second, rule)
    if asset is not None:
        report.asset_id, report.generation_id, report.match = asset.id, asset.generation_id, match
        report.sha256_match = asset.sha256 == report.sha256
        report.fingerprint["record_phash"] = asset.phash
        report.fingerprint["distance"] = hamming(fingerprint, asset.phash) if asset.phash else None
        if nearest is not None:  # found by fingerprint: the dHash that confirmed it (None: pHash alone)
            report.fingerprint["record_dhash"] = nearest.record_dhash
            report.fingerprint["dhash_distance"] = nearest.dhash_distance
        report.record = registry.asset_summary(asset)
    report.verdict = _verdict(credentials.state, match, report.sha256_match)
    return report


def _decode(data: bytes) -> tuple[Image.Image | None, str | None, str | None]:
    """(RGB image, mime type, problem): the image is None when the bytes are not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            mime = Image.MIME.get(probe.format or "")
            probe.load()
            return probe.convert("RGB"), mime, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return None, None, f"not a readable image ({type(error).__name__}: {error})"


def _find_record(registry: Registry, report: VerifyReport, label: str | None, reading: Any, fingerprint: str,
                 second: str, rule: tuple[int, int, int]) -> tuple[Asset | None, str | None, FingerprintMatch | None]:
    if label:
        asset = registry.find_by_manifest_label(label)
        if asset is not None:
            return asset, "manifest", None
    asset = registry.find_by_sha256(report.sha256 or "")
    if asset is not None:
        return asset, "sha256", None
    if reading is not None:
        asset = registry.find_by_watermark(reading.payload)
        if asset is not None:
            return asset, "watermark", None
    alone, max_phash, max_dhash = rule
    nearest = registry.match_fingerprint(
        fingerprint, second, max_phash=max_phash, max_dhash=max_dhash, max_phash_alone=alone
    )
    if nearest is not None:
        return nearest.asset, "fingerprint", nearest
    return None, None, None


def _verdict(state: str, match: str | None, sha256_match: bool) -> str:
    if state == "Invalid":
        return "tampered"
    if match == "manifest" and (state == "Trusted" or (state == "Valid" and sha256_match)):
        return "verified"
    if match is not None:
        return "recovered"
    return "unknown"
